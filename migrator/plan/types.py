"""The plan's field types: annotated types that validate and resolve one value each.

Sizes and rates are plain ints once loaded; paths are absolute, resolved against the plan
file's folder; names and URLs are checked against the patterns PATTERN_HINTS explains.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
)

from migrator.sizes import (
    RATE_PATTERN,
    SIZE_PATTERN,
    GiB,
    KiB,
    MiB,
    format_size,
    parse_rate,
    parse_size,
)

# Plan and dataset names become object key segments: keep them to a portable alphabet.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
S3_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
AZURE_CONTAINER_PATTERN = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"
URL_PATTERN = r"^https?://[^\s/]+(/\S*)?$"
CRON_PATTERN = r"^\S+( \S+){4}$"  # five fields; Dagster validates the rest
AZURE_KEY_NAME_PATTERN = r"^[0-9A-Za-z-]{1,127}$"

DEFAULT_CHUNK_SIZE = 16 * MiB
DEFAULT_MEMORY_BUDGET = 512 * MiB
MIN_CHUNK_SIZE = 64 * KiB
MAX_CHUNK_SIZE = 1 * GiB
MIN_RECORD_SIZE = 1 * KiB
MAX_RECORD_SIZE = 1 * GiB  # with MAX_CHUNK_SIZE: the 2 GiB most a chunk may hold (FORMAT.md §1.3)
DEFAULT_MAX_RECORD_SIZE = 64 * MiB
# Routing one record holds it a few times over at once (read, cut, parsed, buffered, and in a
# routing process): a record may take at most this share of memory_budget.
RECORD_COPIES = 8
MAX_SHARDS = 65536

PATTERN_HINTS = {
    NAME_PATTERN: "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or"
    " digit, because it becomes part of object keys",
    S3_BUCKET_PATTERN: "must be an S3 bucket name (3-63 of a-z, 0-9, '.', '-')",
    AZURE_CONTAINER_PATTERN: "must be an Azure container name (3-63 of a-z, 0-9, '-')",
    REGION_PATTERN: "must be a region name such as 'us-gov-west-1'",
    URL_PATTERN: "must be an http:// or https:// URL",
    AZURE_KEY_NAME_PATTERN: "must be a Key Vault key name (1-127 of A-Z, a-z, 0-9, '-')",
}


# --- field types ------------------------------------------------------------------------


def size_input(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size such as '16MiB' or a number of bytes (got {value!r})")
    return parse_size(value)


def size_within(value: int, low: int, high: int) -> int:
    """`value`, if between `low` and `high` bytes; the message speaks in sizes, as plans do."""
    if not low <= value <= high:
        raise ValueError(
            f"must be between {format_size(low)} and {format_size(high)} (got {format_size(value)})"
        )
    return value


def chunk_size_in_range(value: int) -> int:
    return size_within(value, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)


SizeBytes = Annotated[
    int,
    BeforeValidator(size_input),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "Bytes, or a number with a unit: B, KB/MB/GB/TB (decimal),"
            " KiB/MiB/GiB/TiB (binary), e.g. '16MiB'.",
        }
    ),
]
ChunkSize = Annotated[SizeBytes, AfterValidator(chunk_size_in_range)]


def _record_size_in_range(value: int) -> int:
    return size_within(value, MIN_RECORD_SIZE, MAX_RECORD_SIZE)


RecordSize = Annotated[SizeBytes, AfterValidator(_record_size_in_range)]


def _rate_input(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a rate such as '200MiB/s' (got {value!r})")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"must be above zero (got {value})")
        return value
    return parse_rate(value)


RateBytes = Annotated[
    int,
    BeforeValidator(_rate_input),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": RATE_PATTERN},
            ],
            "description": "Bytes a second, or a size a second such as '200MiB/s'.",
        }
    ),
]


def _nonempty_path(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


def _resolve_against_plan(value: Path, info: ValidationInfo) -> Path:
    """Relative paths resolve against the plan file's folder (the working folder if none)."""
    context = info.context if isinstance(info.context, dict) else {}
    base = Path(context.get("plan_dir") or Path.cwd())
    return Path(os.path.normpath(base / value.expanduser()))


def _normalize_prefix(value: str) -> str:
    if value.startswith("/") or "\\" in value:
        raise ValueError(
            f"must be a '/'-separated key prefix without a leading '/' (got {value!r})"
        )
    segments = value.rstrip("/").split("/") if value else []
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError(f"must not contain empty, '.' or '..' segments (got {value!r})")
    return "/".join(segments) + "/" if segments else ""


def _no_password_in_url(value: str) -> str:
    """A state URL may name a user, never a password: that comes from PGPASSWORD or a
    password file, or the whole URL from MIGRATOR_STATE_URL."""
    netloc = value.split("://", 1)[1].split("/", 1)[0]
    if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
        raise ValueError(
            "must not hold a password: set PGPASSWORD or PGPASSFILE, or put the whole URL in"
            " the MIGRATOR_STATE_URL environment variable"
        )
    return value


def _check_include_pattern(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"must be relative to source.path, without '..' (got {value!r})")
    return value


PlanPath = Annotated[Path, BeforeValidator(_nonempty_path), AfterValidator(_resolve_against_plan)]
Name = Annotated[str, StringConstraints(strict=True, pattern=NAME_PATTERN)]
Url = Annotated[str, StringConstraints(strict=True, pattern=URL_PATTERN)]
Region = Annotated[str, StringConstraints(strict=True, pattern=REGION_PATTERN)]
KmsKeyId = Annotated[str, StringConstraints(strict=True, pattern=r"^\S+$")]
# Secrets never sit in a plan: it names the environment variable that holds them.
EnvVarName = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
VaultKeyName = Annotated[str, StringConstraints(strict=True, pattern=AZURE_KEY_NAME_PATTERN)]
NonEmpty = Annotated[str, StringConstraints(strict=True, min_length=1)]
AnyStr = Annotated[str, StringConstraints(strict=True)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
StateUrl = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^(sqlite|postgresql(\+psycopg2)?)://\S*$"),
    AfterValidator(lambda v: _no_password_in_url(v)),
]
Cron = Annotated[str, StringConstraints(strict=True, pattern=CRON_PATTERN)]
KeyPrefix = Annotated[str, StringConstraints(strict=True), AfterValidator(_normalize_prefix)]
IncludePattern = Annotated[
    str, StringConstraints(strict=True, min_length=1), AfterValidator(_check_include_pattern)
]
