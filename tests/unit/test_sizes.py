from __future__ import annotations

import pytest

from migrator.sizes import GiB, KiB, MiB, TiB, format_size, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (4096, 4096),
        ("512", 512),
        ("10B", 10),
        ("1KB", 1000),
        ("2MB", 2_000_000),
        ("3GB", 3 * 10**9),
        ("1TB", 10**12),
        ("1KiB", KiB),
        ("16MiB", 16 * MiB),
        ("2GiB", 2 * GiB),
        ("1TiB", TiB),
        ("16mib", 16 * MiB),
        ("16MIB", 16 * MiB),
        ("16 MiB", 16 * MiB),
        ("  64KiB ", 64 * KiB),
        ("1.5GiB", 3 * GiB // 2),
        ("0.5 kb", 500),
        ("1.1B", 1),  # fractions of a byte round down
    ],
)
def test_parse_size_accepts(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "MiB", "lots", "16 XiB", "16M", "16 Mi", "1e6", "1,5GiB", "16MiB/s", "--1", "1.5.2KB"],
)
def test_parse_size_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("value", [-1, "-1", "-16MiB", " -0.5 GiB"])
def test_parse_size_rejects_negatives(value: int | str) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_size(value)


@pytest.mark.parametrize("value", [True, 1.5, None, b"16MiB"])
def test_parse_size_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (16 * MiB, "16.0 MiB"),
        (MiB - 1, "1.0 MiB"),  # not "1024.0 KiB"
        (512 * MiB, "512.0 MiB"),
        (3 * GiB // 2, "1.5 GiB"),
        (2 * TiB, "2.0 TiB"),
        (1024 * TiB, "1.0 PiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


def test_format_size_rejects_negatives() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_size(-1)


@pytest.mark.parametrize("n", [0, 1000, KiB, 64 * KiB, 16 * MiB, 3 * GiB // 2, 5 * TiB])
def test_format_size_output_parses_back(n: int) -> None:
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200MiB/s", 200 * MiB),
        ("200 MiB/s", 200 * MiB),
        ("1.5 GB / s", 1_500_000_000),
        ("10mb/S", 10_000_000),
        ("100/s", 100),
        (4096, 4096),
    ],
)
def test_parse_rate(text: int | str, expected: int) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["200MiB", "fast", "MiB/s", "/s", "200MiB/h"])
def test_parse_rate_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        parse_rate(text)


@pytest.mark.parametrize(("value", "match"), [("-1MiB/s", "negative"), ("0/s", "more than 0")])
def test_parse_rate_rejects_negative_and_zero(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_rate(value)
