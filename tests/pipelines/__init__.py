"""Tests of the Dagster definitions, on a demo-shaped plan with small data in tmp_path."""

from __future__ import annotations

from pathlib import Path

from tests.planfiles import write_objects, write_plan, write_profiles

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
