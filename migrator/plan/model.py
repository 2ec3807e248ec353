"""The migration plan: one pydantic model, validated once at the edge, and `load_plan`.

Relative paths in a plan file resolve against the file's folder; a loaded `Plan` holds only
absolute paths, plain ints for sizes, and remembers the file it came from (`plan_path`).
Sections whose fields depend on a kind (keys, destination, datasets) are one model each: the
fields a kind requires are enforced, the other kinds' fields must be left out or null.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError

from migrator.errors import PlanError
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

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MEMORY_BUDGET",
    "MAX_CHUNK_SIZE",
    "MAX_SHARDS",
    "MIN_CHUNK_SIZE",
    "NAME_PATTERN",
    "DatasetPlan",
    "DestinationPlan",
    "KekPlan",
    "KeysPlan",
    "Plan",
    "SourcePlan",
    "load_plan",
]

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

_PATTERN_HINTS = {
    NAME_PATTERN: "must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or"
    " digit, because it becomes part of object keys",
    S3_BUCKET_PATTERN: "must be an S3 bucket name (3-63 of a-z, 0-9, '.', '-')",
    AZURE_CONTAINER_PATTERN: "must be an Azure container name (3-63 of a-z, 0-9, '-')",
    REGION_PATTERN: "must be a region name such as 'us-gov-west-1'",
    URL_PATTERN: "must be an http:// or https:// URL",
    AZURE_KEY_NAME_PATTERN: "must be a Key Vault key name (1-127 of A-Z, a-z, 0-9, '-')",
}


def _field_errors(title: str, problems: list[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """Errors about fields below the validating model; pydantic prefixes the model's own loc."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("plan_field", "{message}", {"message": message}),
                loc=loc,
                input=None,
            )
            for loc, message in problems
        ],
    )


# --- field types ------------------------------------------------------------------------


def _size_input(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size such as '16MiB' or a number of bytes (got {value!r})")
    return parse_size(value)


def _chunk_size_in_range(value: int) -> int:
    if not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE:
        raise ValueError(
            f"must be between {format_size(MIN_CHUNK_SIZE)} and {format_size(MAX_CHUNK_SIZE)}"
            f" (got {format_size(value)})"
        )
    return value


SizeBytes = Annotated[
    int,
    BeforeValidator(_size_input),
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
ChunkSize = Annotated[SizeBytes, AfterValidator(_chunk_size_in_range)]


def _record_size_in_range(value: int) -> int:
    if not MIN_RECORD_SIZE <= value <= MAX_RECORD_SIZE:
        raise ValueError(
            f"must be between {format_size(MIN_RECORD_SIZE)} and {format_size(MAX_RECORD_SIZE)}"
            f" (got {format_size(value)})"
        )
    return value


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
KeyPrefix = Annotated[str, StringConstraints(strict=True), AfterValidator(_normalize_prefix)]
IncludePattern = Annotated[
    str, StringConstraints(strict=True, min_length=1), AfterValidator(_check_include_pattern)
]


# --- sections whose fields depend on a kind ---------------------------------------------


@dataclass(frozen=True)
class _Kind:
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def used(self) -> tuple[str, ...]:
        return self.required + self.optional


class _PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Set by sections with kinds: the field naming the kind, and what each kind uses.
    _kind_field: ClassVar[str | None] = None
    _kinds: ClassVar[dict[str, _Kind]] = {}

    @classmethod
    def _kind_only_fields(cls) -> list[str]:
        used = {name for kind in cls._kinds.values() for name in kind.used}
        return [name for name in cls.model_fields if name in used]

    @model_validator(mode="after")
    def _check_kind_fields(self) -> Self:
        if self._kind_field is None:
            return self
        kind = getattr(self, self._kind_field)
        uses = self._kinds[kind]
        when = f"when {self._kind_field} is {kind!r}"
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for name in self._kind_only_fields():
            value = getattr(self, name)
            if name in uses.required and value is None:
                problems.append(((name,), f"required {when}"))
            # model_fields_set: a default (csv_delimiter's ",") is not the author's doing.
            elif name not in uses.used and value is not None and name in self.model_fields_set:
                only = " or ".join(repr(k) for k, u in self._kinds.items() if name in u.used)
                problems.append(((name,), f"not used {when} (only when it is {only})"))
        problems += self._check_kind_values(kind)
        if problems:
            raise _field_errors(type(self).__name__, problems)
        return self

    def _check_kind_values(self, kind: str) -> list[tuple[tuple[str | int, ...], str]]:
        """Checks on field values that depend on the kind; none by default."""
        return []

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Adds the per-kind rules as if/then, so editors flag them too."""
        schema = handler.resolve_ref_schema(
            super().__get_pydantic_json_schema__(core_schema, handler)
        )
        if cls._kind_field is not None:
            schema["allOf"] = [
                {
                    "if": {
                        "properties": {cls._kind_field: {"const": kind}},
                        "required": [cls._kind_field],
                    },
                    "then": {
                        "required": list(uses.required),
                        "properties": {
                            name: {"type": "null"}
                            for name in cls._kind_only_fields()
                            if name not in uses.used
                        },
                    },
                }
                for kind, uses in cls._kinds.items()
            ]
        return schema


class KekPlan(_PlanModel):
    """Where a key-encryption key lives; other providers' fields stay out or null."""

    provider: Literal["local", "aws-kms", "azure-keyvault"] = Field(
        description="local (a KEK file, for demos and rehearsals) | aws-kms | azure-keyvault."
    )
    kek_file: PlanPath | None = Field(default=None, description="local: the KEK file.")
    key_id: KmsKeyId | None = Field(
        default=None, description="aws-kms: key ARN, alias ARN or 'alias/NAME'."
    )
    region: Region | None = Field(
        default=None, description="aws-kms: the key's region (null: from env)."
    )
    endpoint_url: Url | None = Field(
        default=None, description="aws-kms: e.g. a FIPS endpoint, or moto."
    )
    vault_url: Url | None = Field(default=None, description="azure-keyvault: the vault's URL.")
    key_name: VaultKeyName | None = Field(
        default=None, description="azure-keyvault: the key's name in the vault."
    )
    # The owner's signing key beside the KEK: it signs keyrings and audit ledgers.
    signing_key_file: PlanPath | None = Field(
        default=None,
        description="local: the signing key file (null: KEK_NAME.signing.key beside the KEK"
        " file, made on first use).",
    )
    signing_key_id: KmsKeyId | None = Field(
        default=None,
        description="aws-kms: the signing key, an asymmetric ECC_NIST_P256 SIGN_VERIFY key in"
        " the KEK's region (ARN, alias ARN or 'alias/NAME'); required to run, verify or restore.",
    )
    signing_key_name: VaultKeyName | None = Field(
        default=None,
        description="azure-keyvault: the signing key's name, an EC P-256 key in the same"
        " vault; required to run, verify or restore.",
    )

    _kind_field = "provider"
    _kinds = {
        "local": _Kind(required=("kek_file",), optional=("signing_key_file",)),
        "aws-kms": _Kind(
            required=("key_id",), optional=("region", "endpoint_url", "signing_key_id")
        ),
        "azure-keyvault": _Kind(required=("vault_url", "key_name"), optional=("signing_key_name",)),
    }

    def kek_identity(self) -> tuple[str | None, ...]:
        """What names this KEK, to tell two entries of a plan that name the same one apart."""
        return (self.provider, str(self.kek_file), self.key_id, self.vault_url, self.key_name)


class KeysPlan(KekPlan):
    """The KEK new data keys are wrapped under, and the earlier KEKs that may still unwrap."""

    previous: tuple[KekPlan, ...] = Field(
        default=(),
        description="Earlier KEKs (same fields): they only unwrap data keys wrapped before the"
        " KEK was changed, until `migrator keys rotate` re-wraps them under this one.",
    )

    @model_validator(mode="after")
    def _check_previous(self) -> Self:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen = {self.kek_identity(): "keys"}
        for index, kek in enumerate(self.previous):
            also = seen.setdefault(kek.kek_identity(), f"keys.previous[{index}]")
            if also != f"keys.previous[{index}]":
                problems.append(
                    (("previous", index), f"names the same KEK as {also}: list each KEK once")
                )
        if problems:
            raise _field_errors("KeysPlan", problems)
        return self


class RetentionPlan(_PlanModel):
    """S3 Object Lock on the commit points: generation records and ledger segments."""

    mode: Literal["governance", "compliance"] = Field(
        description="governance: a principal with s3:BypassGovernanceRetention may still delete"
        " a locked version; compliance: no one can until the retention lapses."
    )
    days: Annotated[int, Field(strict=True, ge=1, le=36_500)] = Field(
        description="Each generation record and ledger segment is locked this many days from"
        " when it is stored."
    )


class DestinationPlan(_PlanModel):
    """Where chunks go: a folder (demos, tests), S3 or Azure Blob; other kinds' fields null."""

    kind: Literal["local", "s3", "azure"] = Field(description="local | s3 | azure.")
    path: PlanPath | None = Field(default=None, description="local: the folder.")
    bucket: AnyStr | None = Field(default=None, description="s3: the bucket; azure: the container.")
    prefix: KeyPrefix = Field(default="", description="Key prefix; stored with a trailing '/'.")
    region: Region | None = Field(default=None, description="s3: e.g. us-gov-west-1.")
    endpoint_url: Url | None = Field(default=None, description="s3: e.g. a FIPS endpoint, or moto.")
    account_url: Url | None = Field(
        default=None, description="azure: e.g. https://ACCOUNT.blob.core.usgovcloudapi.net"
    )
    use_fips: bool | None = Field(
        default=None, description="s3: FIPS endpoints; null: on in us-gov-* regions."
    )
    sse_kms_key_id: KmsKeyId | None = Field(
        default=None, description="s3: also ask S3 for SSE-KMS with this key (optional)."
    )
    multipart_threshold: SizeBytes | None = Field(
        default=None, description="s3, azure: stored objects above this go up in parts."
    )
    upload_part_size: SizeBytes | None = Field(
        default=None, description="s3, azure: bytes a part (s3: at least 5MiB)."
    )
    connection_string_env: EnvVarName | None = Field(
        default=None, description="azure: environment variable holding a connection string."
    )
    account_key_env: EnvVarName | None = Field(
        default=None,
        description="azure: environment variable holding the account key; with neither,"
        " azure-identity's default credential for the account's cloud is used.",
    )
    retention: RetentionPlan | None = Field(
        default=None,
        description="s3: store generation records and ledger segments under Object Lock"
        " retention, so that no one can delete a committed generation's record; the bucket"
        " must have Object Lock enabled (checked before any byte moves).",
    )

    _kind_field = "kind"
    _kinds = {
        "local": _Kind(required=("path",)),
        "s3": _Kind(
            required=("bucket", "region"),
            optional=(
                "endpoint_url",
                "use_fips",
                "sse_kms_key_id",
                "multipart_threshold",
                "upload_part_size",
                "retention",
            ),
        ),
        "azure": _Kind(
            required=("bucket", "account_url"),
            optional=(
                "multipart_threshold",
                "upload_part_size",
                "connection_string_env",
                "account_key_env",
            ),
        ),
    }

    def _check_kind_values(self, kind: str) -> list[tuple[tuple[str | int, ...], str]]:
        pattern = {"s3": S3_BUCKET_PATTERN, "azure": AZURE_CONTAINER_PATTERN}.get(kind)
        if pattern and self.bucket is not None and not re.fullmatch(pattern, self.bucket):
            return [(("bucket",), f"{_PATTERN_HINTS[pattern]} (got {self.bucket!r})")]
        return []


class SourcePlan(_PlanModel):
    """Where a dataset is read from: exported files, or the old platform's bucket/container."""

    kind: Literal["local", "s3", "azure"] = Field(description="local | s3 | azure.")
    path: PlanPath | None = Field(default=None, description="local: the folder.")
    bucket: AnyStr | None = Field(default=None, description="s3: the bucket; azure: the container.")
    prefix: KeyPrefix = Field(default="", description="s3, azure: only keys under this prefix.")
    region: Region | None = Field(default=None, description="s3: the bucket's region.")
    endpoint_url: Url | None = Field(default=None, description="s3: a custom endpoint.")
    account_url: Url | None = Field(default=None, description="azure: the account's blob URL.")
    connection_string_env: EnvVarName | None = Field(
        default=None, description="azure: environment variable holding a connection string."
    )
    account_key_env: EnvVarName | None = Field(
        default=None, description="azure: environment variable holding the account key."
    )

    _kind_field = "kind"
    _kinds = {
        "local": _Kind(required=("path",)),
        "s3": _Kind(required=("bucket",), optional=("region", "endpoint_url")),
        "azure": _Kind(
            required=("bucket", "account_url"),
            optional=("connection_string_env", "account_key_env"),
        ),
    }


class DatasetPlan(_PlanModel):
    """One dataset: records (JSON lines or CSV rows, sharded by `key`) or objects (files)."""

    name: Name
    kind: Literal["records", "objects"] = Field(description="records | objects.")
    source: SourcePlan
    shards: int = Field(strict=True, ge=1, le=MAX_SHARDS, description="Number of shards.")
    format: Literal["jsonl", "csv"] | None = Field(
        default=None, description="records: jsonl | csv."
    )
    key: NonEmpty | None = Field(
        default=None, description="records: field (jsonl) or column (csv) holding the shard key."
    )
    csv_delimiter: str = Field(
        default=",", strict=True, description="records in csv: one character."
    )
    on_bad_record: Literal["fail", "quarantine"] = Field(
        default="fail",
        description="records: what to do with a record routing cannot use (malformed JSON, a"
        " missing or null key, not UTF-8, a ragged CSV row). fail: stop, naming its file, line"
        " and byte offset; quarantine: set it aside in the dataset's encrypted dead-letter area"
        " and go on.",
    )
    max_record_size: RecordSize | None = Field(
        default=None,
        description="records: the longest record accepted, in bytes without its line feed; a"
        " longer one stops routing, naming its file, line and byte offset. At most an eighth"
        " of memory_budget; null: 64MiB, or an eighth of memory_budget if that is less.",
    )
    part_size: ChunkSize | None = Field(
        default=None,
        description="objects: plaintext bytes per part; default: the plan's chunk_size.",
    )
    include: tuple[IncludePattern, ...] | None = Field(
        default=None,
        description="Glob patterns, relative to source.path, of files to read; null: all.",
    )
    expected_size: SizeBytes | None = Field(
        default=None,
        description="The source's size, for forecasts made where it cannot be listed.",
    )

    _kind_field = "kind"
    _kinds = {
        "records": _Kind(
            required=("format", "key"),
            optional=("csv_delimiter", "on_bad_record", "max_record_size"),
        ),
        "objects": _Kind(optional=("part_size",)),
    }

    def _check_kind_values(self, kind: str) -> list[tuple[tuple[str | int, ...], str]]:
        if kind != "records":
            return []
        if "csv_delimiter" in self.model_fields_set and self.format != "csv":
            return [(("csv_delimiter",), "only used when format is 'csv'")]
        if len(self.csv_delimiter) != 1 or self.csv_delimiter in '"\r\n':
            message = "must be one character other than a quote or newline"
            return [(("csv_delimiter",), f"{message} (got {self.csv_delimiter!r})")]
        return []


class ForecastPlan(_PlanModel):
    """Assumptions of the dry run's forecast; prices in USD (null: assumed list prices)."""

    bandwidth: RateBytes = Field(
        default=125_000_000, description="The link to the destination (default 1 Gbit/s)."
    )
    storage_usd_per_gb_month: float | None = Field(default=None, ge=0)
    put_usd_per_1000: float | None = Field(default=None, ge=0)
    get_usd_per_1000: float | None = Field(default=None, ge=0)


AWS_PARTITIONS = ("aws", "aws-us-gov", "aws-cn", "aws-iso", "aws-iso-b")
AZURE_CLOUDS = ("AzureCloud", "AzureUSGovernment", "AzureChinaCloud")


class ResidencyPlan(_PlanModel):
    """Where destination data and keys may live; checked before any byte moves."""

    aws_partitions: tuple[Literal[AWS_PARTITIONS], ...] = Field(  # type: ignore[valid-type]
        default=(), description="Allowed AWS partitions, e.g. [aws-us-gov]."
    )
    azure_clouds: tuple[Literal[AZURE_CLOUDS], ...] = Field(  # type: ignore[valid-type]
        default=(), description="Allowed Azure clouds, e.g. [AzureUSGovernment]."
    )
    unwrap_aws_partitions: tuple[Literal[AWS_PARTITIONS], ...] = Field(  # type: ignore[valid-type]
        default=(),
        description="Further partitions a keys.previous KEK may lie in: it only unwraps, e.g."
        " [aws] while keys move out of a commercial KMS.",
    )
    unwrap_azure_clouds: tuple[Literal[AZURE_CLOUDS], ...] = Field(  # type: ignore[valid-type]
        default=(), description="Further clouds a keys.previous KEK may lie in (it only unwraps)."
    )
    state_hosts: tuple[NonEmpty, ...] | None = Field(
        default=None,
        description="Hosts a PostgreSQL state store (state_url or MIGRATOR_STATE_URL) may be at,"
        " exactly; 'localhost' admits a local socket. null: not checked.",
    )
    allow_loopback: bool = Field(
        default=False,
        description="Also accept loopback endpoints (moto, Azurite) and a local destination"
        " folder: tests and rehearsals only, like --allow-loopback.",
    )
    allow_any: bool = Field(
        default=False,
        description="No residency policy, said explicitly: an s3 or azure destination, or cloud"
        " keys, are refused without a policy unless this is true.",
    )

    @model_validator(mode="after")
    def _allow_any_alone(self) -> Self:
        if self.allow_any:
            named = [name for name in self.model_fields_set if name != "allow_any"]
            if named:
                message = "allow_any: true sets no policy: leave out " + ", ".join(sorted(named))
                raise _field_errors("ResidencyPlan", [(("allow_any",), message)])
        return self


def _at_least_one(datasets: tuple[Any, ...]) -> tuple[Any, ...]:
    if not datasets:
        raise ValueError("must list at least one dataset")
    return datasets


def _version_not_bool(value: object) -> object:
    if isinstance(value, bool):  # YAML `yes` would otherwise pass as 1
        raise ValueError(f"must be 1 (got {value!r})")
    return value


# --- the plan ---------------------------------------------------------------------------


class Plan(_PlanModel):
    """A migration plan: where data comes from, where it goes, and under which keys."""

    version: Annotated[Literal[1], BeforeValidator(_version_not_bool)]
    name: Name
    state_dir: PlanPath = Field(description="Checkpoint store and local state.")
    state_url: StateUrl | None = Field(
        default=None,
        description="Shared state store for many workers, e.g. 'postgresql://migrator@db/migr'"
        " (no password: PGPASSWORD or PGPASSFILE); null: SQLite in state_dir."
        " MIGRATOR_STATE_URL overrides it.",
    )
    lease_seconds: int = Field(
        default=120,
        strict=True,
        ge=1,
        le=86400,
        description="A worker's claim on a shard lapses this long after its last renewal.",
    )
    compression_level: int = Field(default=3, strict=True, ge=1, le=22, description="zstd level.")
    chunk_size: ChunkSize = Field(
        default=DEFAULT_CHUNK_SIZE, description="Plaintext target per chunk, 64KiB to 1GiB."
    )
    memory_budget: SizeBytes = Field(
        default=DEFAULT_MEMORY_BUDGET,
        description="In-flight plaintext and ciphertext the engine may hold; at least"
        " twice chunk_size and every part_size.",
    )
    workers: PositiveInt | None = Field(default=None, description="Encoding processes; null: CPUs.")
    upload_concurrency: PositiveInt = Field(default=8, description="Uploads in flight at once.")
    bandwidth_limit: RateBytes | None = Field(
        default=None, description="Upload rate cap for the whole process, e.g. '200MiB/s'."
    )
    residency: ResidencyPlan | None = Field(
        default=None,
        description="Allowed clouds for the destination and keys. Required when the"
        " destination is s3 or azure or a KEK is in a cloud ({allow_any: true} to go without).",
    )
    fips: Literal["auto", "required"] = Field(
        default="auto",
        description="required: every endpoint a FIPS 140 endpoint, and the crypto backend"
        " (OpenSSL) in FIPS mode, or nothing runs. auto: FIPS endpoints in us-gov-* regions.",
    )
    sync_cron: Annotated[str, StringConstraints(strict=True, pattern=CRON_PATTERN)] | None = Field(
        default=None,
        description="When incremental syncs run (cron, UTC), e.g. '0 * * * *'; null: hourly.",
    )
    forecast: ForecastPlan = Field(
        default_factory=ForecastPlan, description="Assumptions of the dry run's forecast."
    )
    keys: KeysPlan
    destination: DestinationPlan
    datasets: Annotated[tuple[DatasetPlan, ...], AfterValidator(_at_least_one)]

    _plan_path: Path | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(context, dict) and context.get("plan_path") is not None:
            self._plan_path = Path(context["plan_path"])

    @property
    def plan_path(self) -> Path | None:
        """The plan file this plan was loaded from (absolute); None if built in code."""
        return self._plan_path

    def max_record_size(self, dataset: DatasetPlan) -> int:
        """The longest record routing accepts for a records dataset (FORMAT.md §1.3)."""
        share = self.memory_budget // RECORD_COPIES
        return dataset.max_record_size or max(MIN_RECORD_SIZE, min(DEFAULT_MAX_RECORD_SIZE, share))

    def dataset(self, name: str) -> DatasetPlan:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(f"plan {self.name!r} has no dataset {name!r}")

    @model_validator(mode="before")
    @classmethod
    def _default_part_size_to_chunk_size(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("datasets"), list | tuple):
            return data
        try:
            raw = data.get("chunk_size", DEFAULT_CHUNK_SIZE)
            chunk_size = _chunk_size_in_range(_size_input(raw))
        except ValueError:
            return data  # reported on chunk_size itself
        datasets = list(data["datasets"])  # a copy: the caller's data stays as it was
        for index, item in enumerate(datasets):
            is_objects = isinstance(item, dict) and item.get("kind") == "objects"
            if is_objects and item.get("part_size") is None:
                datasets[index] = {**item, "part_size": chunk_size}
        return {**data, "datasets": datasets}

    @model_validator(mode="after")
    def _check_across_fields(self) -> Self:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first_index: dict[str, int] = {}
        for index, dataset in enumerate(self.datasets):
            if dataset.name in first_index:
                also = f"datasets[{first_index[dataset.name]}].name"
                message = f"duplicate dataset name {dataset.name!r} (also {also})"
                problems.append((("datasets", index, "name"), message))
            first_index.setdefault(dataset.name, index)
        largest, largest_field = self.chunk_size, "chunk_size"
        for index, dataset in enumerate(self.datasets):
            if dataset.part_size is not None and dataset.part_size > largest:
                largest, largest_field = dataset.part_size, f"datasets[{index}].part_size"
        if self.memory_budget < 2 * largest:
            message = (
                f"must be at least twice {largest_field} ({format_size(2 * largest)}), because"
                " a chunk in flight holds its plaintext and its ciphertext at once"
                f" (got {format_size(self.memory_budget)})"
            )
            problems.append((("memory_budget",), message))
        for index, dataset in enumerate(self.datasets):
            size = dataset.max_record_size
            if size is not None and size * RECORD_COPIES > self.memory_budget:
                message = (
                    f"must be at most an eighth of memory_budget"
                    f" ({format_size(self.memory_budget // RECORD_COPIES)}), because routing"
                    f" holds a record several times over (got {format_size(size)})"
                )
                problems.append((("datasets", index, "max_record_size"), message))
        if problems:
            raise _field_errors("Plan", problems)
        return self


# --- loading ----------------------------------------------------------------------------


class _PlanLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate and non-string keys, which PyYAML would accept."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            problem = None
            if not isinstance(key, str):
                problem = f"mapping keys must be strings (got {key!r})"
            elif key in seen:
                problem = f"duplicate key {key!r}"
            if problem:
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_plan(path: str | Path, *, check_sources: bool = True) -> Plan:
    """Read, validate and resolve a plan file; writes nothing. Every failure is a PlanError."""
    shown = str(path)
    plan_file = Path(os.path.abspath(path))
    try:
        text = plan_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(shown, None, f"not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise PlanError(shown, None, f"cannot read plan: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_PlanLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PlanError(shown, None, _yaml_problem(exc)) from exc
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise PlanError(shown, None, f"the top level must be a mapping of fields (got {got})")
    try:
        plan = Plan.model_validate(
            data, context={"plan_dir": plan_file.parent, "plan_path": plan_file}
        )
    except ValidationError as exc:
        raise _plan_error(shown, [_describe_error(error) for error in exc.errors()]) from exc
    if check_sources:
        problems = []
        for index, dataset in enumerate(plan.datasets):
            source = dataset.source.path
            if source is None:  # a bucket or container: checked when the run lists it
                continue
            if not source.is_dir():
                what = "is not a directory" if source.exists() else "does not exist"
                problems.append((f"datasets[{index}].source.path", f"{source} {what}"))
        if problems:
            raise _plan_error(shown, problems)
    return plan


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "unreadable"
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"invalid YAML: {exc}"


def _plan_error(shown: str, problems: list[tuple[str, str]]) -> PlanError:
    """One PlanError for all problems: the first in the fields, each on its own line."""
    (field, message), rest = problems[0], problems[1:]
    lines = [message] + [f"{shown}: {f}: {m}" if f else f"{shown}: {m}" for f, m in rest]
    return PlanError(shown, field or None, "\n".join(lines))


# --- turning pydantic errors into "field.path[1]: message" --------------------------------


def _model_holding(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class whose field the last part of `loc` names, if any."""
    current: Any = Plan
    owner: type[BaseModel] | None = None
    for part in loc:
        while get_origin(current) in (Annotated, Union, types.UnionType):
            args = [arg for arg in get_args(current) if arg is not type(None)]
            current = args[0] if get_origin(current) is Annotated or len(args) == 1 else None
        owner = None
        if isinstance(current, type) and issubclass(current, BaseModel):
            owner = current
            field = current.model_fields.get(str(part))
            current = field.annotation if field else None
        elif isinstance(part, int) and get_origin(current) in (tuple, list):
            current = get_args(current)[0]
        else:
            current = None
    return owner


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_MESSAGES = {
    "string_too_short": "must not be empty",
    "string_type": "expected a string",
    "path_type": "expected a path",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "model_type": "expected a mapping of fields",
    "model_attributes_type": "expected a mapping of fields",
    "dict_type": "expected a mapping of fields",
}


def _describe_error(error: Any) -> tuple[str, str]:
    """(dotted field, message) for one pydantic error, in the words a plan author needs."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    loc = tuple(error["loc"])
    field = _dotted(loc)
    if kind == "plan_field":
        return field, str(ctx["message"])
    if kind == "missing":
        return field, "required"
    if kind == "extra_forbidden":
        owner = _model_holding(loc)
        close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields) if owner else [])
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return field, f"unknown field {loc[-1]!r}{hint}"
    if kind in ("value_error", "assertion_error"):
        return field, str(ctx.get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        hint = _PATTERN_HINTS.get(pattern, f"must match {pattern}")
        return field, f"{hint} (got {_shown(value)})"
    if kind == "greater_than_equal":
        message = f"must be at least {ctx.get('ge')}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx.get('le')}"
    elif kind == "literal_error":
        message = f"must be {ctx.get('expected')}"
    else:
        message = _MESSAGES.get(kind, error["msg"])
    return field, f"{message} (got {_shown(value)})"
