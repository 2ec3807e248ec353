"""`migrator run --bwlimit`: the run keeps to the rate, says so, and rejects a bad rate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.planfiles import files_below, run_cli, write_objects, write_plan

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
RATE = 2 * MiB
DATASETS = """\
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 2,
     part_size: 1MiB}
"""


def make_site(root: Path) -> dict[str, bytes]:
    objects = write_objects(root / "data" / "videos", [2 * MiB, 2 * MiB, 2 * MiB - 1000])
    # The plan's own limit is far higher: the command line's must win.
    write_plan(root, datasets=DATASETS, memory_budget="4MiB", extra="bandwidth_limit: 1GiB/s")
    return objects


def test_run_keeps_to_the_bandwidth_limit(tmp_path: Path) -> None:
    objects = make_site(tmp_path)
    # Incompressible data: about as many bytes are stored as read.
    expected_seconds = sum(len(data) for data in objects.values()) / RATE

    started = time.monotonic()
    done = run_cli("run", "plan.yaml", "--bwlimit", "2MiB/s", cwd=tmp_path)
    elapsed = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    assert "bandwidth limit 2.0 MiB/s" in done.stdout, done.stdout
    assert elapsed >= 0.5 * expected_seconds, f"{elapsed:.2f} s for ~{expected_seconds:.1f} s"

    restored = run_cli(
        "restore", "plan.yaml", "--dataset", "videos", "--out", "restored", cwd=tmp_path
    )
    assert restored.returncode == 0, restored.stderr
    assert files_below(tmp_path / "restored") == objects


def test_a_bad_bwlimit_is_a_usage_error(tmp_path: Path) -> None:
    make_site(tmp_path)
    done = run_cli("run", "plan.yaml", "--bwlimit", "nonsense", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--bwlimit" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()  # rejected before anything ran
