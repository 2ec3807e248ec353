"""Syncs, the gate and compaction through the CLI against S3 on moto's server (127.0.0.1)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.e2e.test_sync_generations import CSV_HEADER, DATASETS, LiveSource, Snapshot
from tests.integration.test_s3_end_to_end import ENV
from tests.planfiles import files_below, restored_records, run_cli, s3_destination, write_plan

pytestmark = pytest.mark.integration


def restore_all(root: Path, out: str, generation: int | None = None) -> Snapshot:
    extra = [] if generation is None else ["--generation", str(generation)]
    for name in ("profiles", "metadata", "videos"):
        done = run_cli(
            "restore", "plan.yaml", "--dataset", name, "--out", f"{out}/{name}", *extra,
            cwd=root, env=ENV,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return Snapshot(
        restored_records(root / out / "profiles"),
        restored_records(root / out / "metadata", csv_header=CSV_HEADER),
        files_below(root / out / "videos"),
    )


def test_five_syncs_into_s3_restore_as_captured_then_gate_and_compact(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    live = LiveSource(tmp_path, random.Random(41))
    live.seed(profiles=500, rows=300, videos=10)
    live.write()
    write_plan(tmp_path, datasets=DATASETS, destination=s3_destination(endpoint, bucket))
    captured = {}
    for gen in range(1, 7):
        if gen > 1:
            live.mutate()
            live.write()
        captured[gen] = live.snapshot()
        done = run_cli("run", "plan.yaml", cwd=tmp_path, env=ENV)
        assert done.returncode == 0, done.stderr
        assert f"{gen} {'bulk' if gen == 1 else 'sync'}" in done.stdout
        got = restore_all(tmp_path, f"out{gen}")
        assert got == captured[gen], f"restore after generation {gen}"

    checked = run_cli("verify", "plan.yaml", "--sample", "0.2", cwd=tmp_path, env=ENV)
    assert checked.returncode == 0, checked.stdout  # the gate requires each head checked
    gate = run_cli("cutover", "plan.yaml", "--json", cwd=tmp_path, env=ENV)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    doc = json.loads(gate.stdout)
    assert doc["ready"] and doc["freeze_estimate"]["seconds"] is not None

    live.profiles.pop(sorted(live.profiles)[0])
    live.write()
    closed = run_cli("cutover", "plan.yaml", "--json", cwd=tmp_path, env=ENV)
    assert closed.returncode == 1
    assert [d["name"] for d in json.loads(closed.stdout)["datasets"] if not d["ready"]] == [
        "profiles"
    ]

    assert restore_all(tmp_path, "older", 3) == captured[3]
    compacted = run_cli("compact", "plan.yaml", cwd=tmp_path, env=ENV)
    assert compacted.returncode == 0, compacted.stderr
    assert compacted.stdout.count("compacted ") == 3
    assert restore_all(tmp_path, "after") == captured[6]
    checked = run_cli("verify", "plan.yaml", cwd=tmp_path, env=ENV)
    assert checked.returncode == 0, checked.stdout
    # Generations before the compaction are gone with their records.
    gone = run_cli(
        "restore", "plan.yaml", "--dataset", "profiles", "--out", "x", "--generation", "3",
        cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert gone.returncode == 2 and "no committed generation" in gone.stderr
