"""A deleted state store rebuilt from the destination: syncs, the gate and verify go on."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from tests.e2e.test_sync_generations import CSV_HEADER, DATASETS, LiveSource
from tests.planfiles import files_below, restored_records, run_cli, write_plan


def test_a_deleted_state_store_is_rebuilt_from_the_destination(tmp_path: Path) -> None:
    live = LiveSource(tmp_path, random.Random(61))
    live.seed(profiles=400, rows=300, videos=9)
    live.write()
    write_plan(tmp_path, datasets=DATASETS)
    for _ in range(3):
        assert run_cli("run", "plan.yaml", cwd=tmp_path).returncode == 0
        live.mutate()
        live.write()
    assert run_cli("compact", "plan.yaml", "--dataset", "videos", cwd=tmp_path).returncode == 0
    before = json.loads(run_cli("status", "plan.yaml", "--json", cwd=tmp_path).stdout)

    shutil.rmtree(tmp_path / "state")
    rebuilt = run_cli("state", "rebuild", "plan.yaml", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt profiles: generations 1..3, 4 shards" in rebuilt.stdout
    assert "rebuilt videos: generations 4..4, 3 shards" in rebuilt.stdout  # after compaction
    again = run_cli("state", "rebuild", "plan.yaml", cwd=tmp_path)
    assert again.returncode == 2 and "move it aside" in again.stderr

    after = json.loads(run_cli("status", "plan.yaml", "--json", cwd=tmp_path).stdout)
    for old, new in zip(before["datasets"], after["datasets"], strict=True):
        assert new["generation"] == old["generation"]
        assert new["records"] == old["records"] or new["name"] == "videos"
    checked = run_cli("verify", "plan.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout

    # The source changed since the last sync: the gate sees the lag, from rebuilt inventories.
    gate = json.loads(run_cli("cutover", "plan.yaml", "--json", cwd=tmp_path).stdout)
    assert not gate["ready"]
    assert all(d["pending_upserts"] is not None for d in gate["datasets"])
    # The next sync writes only the change, and the gate opens.
    synced = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert run_cli("verify", "plan.yaml", cwd=tmp_path).returncode == 0
    assert run_cli("cutover", "plan.yaml", cwd=tmp_path).returncode == 0
    one_more = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert "0 chunks written" in one_more.stdout
    for name in ("profiles", "metadata", "videos"):
        done = run_cli(
            "restore", "plan.yaml", "--dataset", name, "--out", f"o/{name}", cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
    snapshot = live.snapshot()
    assert restored_records(tmp_path / "o/profiles") == snapshot.profiles
    assert restored_records(tmp_path / "o/metadata", csv_header=CSV_HEADER) == snapshot.metadata
    assert files_below(tmp_path / "o/videos") == snapshot.videos
