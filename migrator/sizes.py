"""Byte sizes and rates as people write them in plans: "16MiB", "1.5 GiB", "200MiB/s"."""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = [
    "RATE_PATTERN",
    "SIZE_PATTERN",
    "GiB",
    "KiB",
    "MiB",
    "TiB",
    "format_size",
    "parse_rate",
    "parse_size",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}
_UNIT_NAMES = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
_FORMAT_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

# Written with explicit classes (no flags) so the same pattern works in the JSON schema.
_SIZE_BODY = r"[0-9]+(\.[0-9]+)?\s*([kKmMgGtT][iI]?[bB]|[bB])?"
SIZE_PATTERN = rf"^\s*{_SIZE_BODY}\s*$"
RATE_PATTERN = rf"^\s*{_SIZE_BODY}\s*/\s*[sS]\s*$"

_SIZE_RE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[a-zA-Z]*)")
_RATE_SUFFIX_RE = re.compile(r"\s*/\s*s\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes in `value`: an int, or a number with an optional unit ("16MiB", "1.5 GB", "512").

    KB/MB/GB/TB are decimal, KiB/MiB/GiB/TiB binary; units are case-insensitive. A fraction
    of a byte is rounded down. Raises ValueError for negatives and anything unparsable.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            f"expected a size such as '16MiB' or a whole number of bytes (got {value!r})"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must not be negative (got {value})")
        return value
    text = value.strip()
    negative = text.startswith("-")
    match = _SIZE_RE.fullmatch(text[1:].lstrip() if negative else text)
    if match is None or match["unit"].lower() not in _UNITS:
        raise ValueError(
            f"not a size: {value!r} (expected a number and an optional unit: {_UNIT_NAMES})"
        )
    if negative:
        raise ValueError(f"a size must not be negative (got {value!r})")
    return int(Decimal(match["number"]) * _UNITS[match["unit"].lower()])


def format_size(n: int) -> str:
    """`n` bytes in binary units with one decimal: 16777216 -> "16.0 MiB", 512 -> "512 B"."""
    if n < 0:
        raise ValueError(f"a size must not be negative (got {n})")
    if n < KiB:
        return f"{n} B"
    value, step = n / 1024, 0
    # Move up while rounding would print "1024.0" of this unit.
    while round(value, 1) >= 1024 and step < len(_FORMAT_UNITS) - 1:
        value, step = value / 1024, step + 1
    return f"{value:.1f} {_FORMAT_UNITS[step]}"


def parse_rate(value: int | str) -> int:
    """Bytes per second in `value`: an int, or a size followed by "/s" ("200MiB/s").

    Raises ValueError for negatives, zero (a rate of nothing cannot be planned with) and junk.
    """
    if isinstance(value, str):
        suffix = _RATE_SUFFIX_RE.search(value)
        if suffix is None:
            raise ValueError(f"not a rate: {value!r} (expected a size per second, e.g. '200MiB/s')")
        rate = parse_size(value[: suffix.start()])
    else:
        rate = parse_size(value)
    if rate == 0:
        raise ValueError(f"a rate must be more than 0 bytes per second (got {value!r})")
    return rate
