"""Tests of the Dagster definitions, on a demo-shaped plan with small data in tmp_path."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.planfiles import split_records, write_objects, write_plan, write_profiles

# The demo plan's two datasets, with few shards and small chunks so each shard holds several.
DEMO_SHAPED_DATASETS = """\
  - {name: user_profiles, kind: records, format: jsonl,
     source: {kind: local, path: data/user_profiles}, key: user_id, shards: 4}
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 3,
     part_size: 64KiB}
"""
PROFILES = 2000
VIDEO_SIZES = [200_000, 150_000, 90_000, 70_000, 20_000, 1, 0]


def write_demo_shaped_plan(root: Path) -> Path:
    """root/plan.yaml (plan "test"), its KEK, and its sources under root/data."""
    write_profiles(root / "data" / "user_profiles", PROFILES, files=3)
    write_objects(root / "data" / "videos", VIDEO_SIZES)
    return write_plan(root, datasets=DEMO_SHAPED_DATASETS)


def source_records(folder: Path) -> Counter[bytes]:
    """Multiset of the JSONL records in every file below folder: what a restore must give."""
    seen: Counter[bytes] = Counter()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        seen.update(split_records(path.read_bytes(), csv_quotes=False))
    return seen


def change_profiles(folder: Path) -> None:
    """A sync's worth of change: in part-001, one record edited, one removed and one added;
    and a new file."""
    part = folder / "part-001.jsonl"
    lines = part.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"bio":"', b'"bio":"edited ')
    del lines[1]
    lines.append(b'{"user_id":"u-new-1","name":"Neu"}\n')
    part.write_bytes(b"".join(lines))
    (folder / "part-100.jsonl").write_bytes(b'{"user_id":"u-new-2","name":"Nou"}\n')
