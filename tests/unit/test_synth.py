"""Synthetic demo data: shape, sizes, uniqueness, edge cases and byte-for-byte determinism."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import orjson
import pytest
import zstandard

from migrator.demo.synth import (
    METADATA_HEADER,
    DemoData,
    generate_demo_data,
    generate_objects,
    generate_records_file,
)

SIZE = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return generate_demo_data(tmp_path_factory.mktemp("demo"), SIZE, seed=11)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in _files(folder))


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in _files(root)
    }


def _profiles(demo: DemoData) -> list[dict[str, object]]:
    lines = b"".join(p.read_bytes() for p in _files(demo.profiles_dir)).splitlines()
    return [orjson.loads(line) for line in lines]


def _metadata_rows(demo: DemoData) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in _files(demo.metadata_dir):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            assert tuple(next(reader)) == METADATA_HEADER
            rows.extend(dict(zip(METADATA_HEADER, row, strict=True)) for row in reader)
    return rows


def test_sizes_and_counts_are_about_as_requested(demo: DemoData) -> None:
    assert demo.total_bytes == _folder_bytes(demo.root)
    assert 0.9 * SIZE <= demo.total_bytes <= 1.15 * SIZE
    assert _folder_bytes(demo.profiles_dir) == pytest.approx(0.25 * SIZE, rel=0.05)
    assert _folder_bytes(demo.metadata_dir) == pytest.approx(0.15 * SIZE, rel=0.05)
    assert _folder_bytes(demo.videos_dir) == pytest.approx(0.60 * SIZE, rel=0.1)
    assert len(_files(demo.profiles_dir)) == 4
    assert len(_files(demo.metadata_dir)) == 4
    assert demo.profile_count == len(_profiles(demo))
    assert demo.metadata_count == len(_metadata_rows(demo))
    assert demo.video_count == len(_files(demo.videos_dir))


def test_profiles_parse_with_unique_ids_and_unicode(demo: DemoData) -> None:
    profiles = _profiles(demo)
    ids = [p["user_id"] for p in profiles]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, str) and i[0] == "u" and len(i) == 13 and i[1:].isdigit() for i in ids)
    lines = b"".join(p.read_bytes() for p in _files(demo.profiles_dir)).splitlines()
    sizes = [len(line) for line in lines]
    assert min(sizes) >= 600 and max(sizes) <= 1536
    names = "".join(str(p["display_name"]) for p in profiles)
    assert not names.isascii()
    assert {"é", "ü"} & set(names) and any("\u4e00" <= c <= "\u9fff" for c in names)
    first = profiles[0]
    for field in ("handle", "email", "created_at", "country", "locale", "bio", "preferences"):
        assert field in first
    assert isinstance(first["devices"], list) and first["devices"]


def test_profiles_compress_like_real_text(demo: DemoData) -> None:
    data = b"".join(p.read_bytes() for p in _files(demo.profiles_dir))
    ratio = len(data) / len(zstandard.ZstdCompressor(level=3).compress(data))
    assert 3.0 <= ratio <= 6.0


def test_metadata_csv_is_well_formed(demo: DemoData) -> None:
    rows = _metadata_rows(demo)
    ids = [r["video_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    titles = [r["title"] for r in rows]
    assert any("," in t and '"' in t for t in titles)
    assert any("\n" in t for t in titles)
    raw = b"".join(p.read_bytes() for p in _files(demo.metadata_dir))
    assert b'""' in raw  # embedded quotes are escaped by doubling
    user_ids = {p["user_id"] for p in _profiles(demo)}
    assert all(r["owner_user_id"] in user_ids for r in rows)
    assert all(int(r["bytes"]) >= 0 and float(r["duration_s"]) > 0 for r in rows)


def test_every_video_has_one_metadata_row(demo: DemoData) -> None:
    rows = _metadata_rows(demo)
    keyed = {r["object_key"]: r for r in rows if r["object_key"]}
    on_disk = {p.relative_to(demo.videos_dir).as_posix(): p for p in _files(demo.videos_dir)}
    assert set(keyed) == set(on_disk)
    for key, row in keyed.items():
        assert int(row["bytes"]) == on_disk[key].stat().st_size
        assert key.split("/")[-1].startswith(row["video_id"])


def test_video_layout_content_and_edge_cases(demo: DemoData) -> None:
    videos = _files(demo.videos_dir)
    for path in videos:
        parts = path.relative_to(demo.videos_dir).parts
        assert len(parts) == 3 and all(len(p) == 2 for p in parts[:2])
        assert parts[-1].endswith(".mp4")
    sizes = [p.stat().st_size for p in videos]
    assert sizes.count(0) == 1
    odd = [p for p in videos if " " in p.name and not p.name.isascii()]
    assert len(odd) == 1
    big = max(videos, key=lambda p: p.stat().st_size)
    head = big.read_bytes()[:64]
    assert head[4:8] == b"ftyp" and head[36:40] == b"mdat"
    body = big.read_bytes()
    assert len(zstandard.ZstdCompressor(level=3).compress(body)) > 0.99 * len(body)


def test_same_seed_same_bytes_other_seed_differs(demo: DemoData, tmp_path: Path) -> None:
    again = generate_demo_data(tmp_path / "again", SIZE, seed=11)
    other = generate_demo_data(tmp_path / "other", SIZE, seed=12)
    reference = _digest_tree(demo.root)
    assert _digest_tree(again.root) == reference
    assert again.profile_count == demo.profile_count
    assert again.metadata_count == demo.metadata_count
    other_digests = _digest_tree(other.root)
    assert other_digests != reference
    for name in ("user_profiles/profiles-0000.jsonl", "video_metadata/videos-0000.csv"):
        assert other_digests[name] != reference[name]


def test_records_file_building_block(tmp_path: Path) -> None:
    count = generate_records_file(tmp_path / "a.jsonl", 300_000, seed=3)
    more = generate_records_file(tmp_path / "b.jsonl", 300_000, seed=3, first_index=count)
    data = (tmp_path / "a.jsonl").read_bytes()
    assert 300_000 <= len(data) < 300_000 + 2 * 1024 * 1024
    ids = [
        orjson.loads(line)["user_id"]
        for name in ("a.jsonl", "b.jsonl")
        for line in (tmp_path / name).read_bytes().splitlines()
    ]
    assert len(ids) == count + more == len(set(ids))


def test_objects_building_block(tmp_path: Path) -> None:
    objects = generate_objects(tmp_path, 3_000_000, seed=5, min_size=10_000, max_size=400_000)
    assert sum(o.size for o in objects) == 3_000_000
    assert all(o.size <= 600_000 for o in objects)
    assert len({o.video_id for o in objects}) == len(objects)
    for o in objects:
        assert (tmp_path / o.key).stat().st_size == o.size
    with pytest.raises(ValueError):
        generate_objects(tmp_path, 1, seed=5, min_size=10, max_size=5)
