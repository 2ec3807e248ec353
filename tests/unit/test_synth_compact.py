"""Compact (~400-byte) synthetic profiles; the default profiles stay byte for byte as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from migrator.demo.synth import generate_records_file, user_id_for

# sha256 of the default profiles for (64 KiB, seed 7, first_index 5), as written before compact
# profiles existed: tests and the demo depend on these exact bytes.
DEFAULT_DIGEST = "59667d3f2cce411c21a0e0bc523ee139113d2aca0e22cace956ce07b5aa018f7"


def test_default_profiles_are_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    generate_records_file(path, 64 * 1024, 7, first_index=5)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DEFAULT_DIGEST
    explicit = tmp_path / "explicit.jsonl"
    generate_records_file(explicit, 64 * 1024, 7, first_index=5, compact=False)
    assert explicit.read_bytes() == path.read_bytes()


def test_compact_profiles_average_about_400_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    count = generate_records_file(path, 1024 * 1024, 7, compact=True)
    average = path.stat().st_size / count
    assert 360 <= average <= 440
    lines = path.read_bytes().splitlines()
    assert len(lines) == count
    first = orjson.loads(lines[0])
    assert first["user_id"] == user_id_for(0, 7)
    assert "devices" not in first
    assert len(str(first["bio"]).split()) <= 24


def test_compact_profiles_are_deterministic_with_unique_ids(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    count_a = generate_records_file(a, 256 * 1024, 3, compact=True)
    generate_records_file(b, 256 * 1024, 3, compact=True)
    count_c = generate_records_file(c, 256 * 1024, 3, first_index=count_a, compact=True)
    assert a.read_bytes() == b.read_bytes()
    ids = [orjson.loads(line)["user_id"] for p in (a, c) for line in p.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)) == count_a + count_c


def test_compact_differs_from_default(tmp_path: Path) -> None:
    full, compact = tmp_path / "full.jsonl", tmp_path / "compact.jsonl"
    full_count = generate_records_file(full, 256 * 1024, 7)
    compact_count = generate_records_file(compact, 256 * 1024, 7, compact=True)
    assert compact_count > 2 * full_count
