"""Shard by shard (one Dagster partition, one worker's share), in parallel processes too, the
destination ends as one whole run would leave it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from migrator.plan.model import load_plan
from migrator.wiring import open_key_provider, open_state, open_store
from migrator.write.run import MigrationRun
from tests.planfiles import (
    METADATA,
    PROFILES,
    VIDEOS,
    run_cli,
    write_metadata_csv,
    write_objects,
    write_plan,
    write_profiles,
)

SHARD_RUN = """
import sys
from pathlib import Path
import pytest

from migrator.write.run import MigrationRun
from migrator.plan.model import load_plan
from migrator.wiring import open_key_provider, open_state, open_store
plan = load_plan(sys.argv[1])
with open_state(plan) as state:
    MigrationRun(plan, open_store(plan), open_key_provider(plan), state).run(
        {sys.argv[2]}, {int(s) for s in sys.argv[3].split(",")}
    )
"""


def make(tmp_path: Path) -> Path:
    write_profiles(tmp_path / "data/profiles", 3000)
    write_metadata_csv(tmp_path / "data/metadata", 1000)
    write_objects(tmp_path / "data/videos", [200_000, 0, 70_000, 5_000, 130_000])
    return write_plan(tmp_path, datasets=PROFILES + METADATA + VIDEOS)


def test_shard_by_shard_equals_a_whole_run(tmp_path: Path) -> None:
    plan = load_plan(make(tmp_path))
    with open_state(plan) as state:
        run = MigrationRun(plan, open_store(plan), open_key_provider(plan), state)
        first = run.run({"profiles"}, {2})
        assert first.datasets[0].chunks_written > 0
        assert run_cli("verify", "plan.yaml", cwd=tmp_path).returncode == 1  # 1 of 10 shards
        for ds in plan.datasets:
            for shard in range(ds.shards):
                run.run({ds.name}, {shard})
        again = run.run()
    assert again.chunks_written == 0
    result = run_cli("verify", "plan.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout


def test_parallel_processes_share_routing_and_finish_every_shard(tmp_path: Path) -> None:
    plan_file = make(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARD_RUN, str(plan_file), "profiles", shards],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        for shards in ("0,1", "2", "3")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    result = run_cli("verify", "plan.yaml", "--dataset", "profiles", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    status = run_cli("status", "plan.yaml", "--json", cwd=tmp_path)
    assert '"shards_complete": 4' in status.stdout


def test_a_changed_object_goes_to_a_sync_generation(tmp_path: Path) -> None:
    """A changed source object belongs to a later sync; the bulk generation stays as sealed."""
    plan = load_plan(make(tmp_path))
    with open_state(plan) as state:
        run = MigrationRun(plan, open_store(plan), open_key_provider(plan), state)
        run.run({"videos"})
        video = next((tmp_path / "data/videos").rglob("*.mp4"))
        video.write_bytes(b"changed" * 1000)
        again = run.run({"videos"}, {0, 1, 2})
    (ds,) = again.datasets
    assert (ds.generation, ds.generation_kind, ds.chunks_written) == (2, "sync", 1)
    # the old version is superseded: a replacement, not a removal
    assert ds.shards_changed == 1 and (ds.replaced, ds.removed) == (1, 0)
    result = run_cli("verify", "plan.yaml", "--dataset", "videos", cwd=tmp_path)
    assert result.returncode == 0, result.stdout


def test_a_worker_that_does_not_see_the_routers_spools_stops_instead_of_emptying_shards(
    tmp_path: Path,
) -> None:
    """A shard run whose state_dir lacks the spools routing wrote (not a shared volume) must
    not take the shard for empty: it stops, naming the spool, and loses nothing."""
    from migrator.errors import StateError

    plan = load_plan(make(tmp_path))
    with open_state(plan) as state:
        run = MigrationRun(plan, open_store(plan), open_key_provider(plan), state)
        run.run({"profiles"}, {0})  # routes every shard, works shard 0
        routed = next((tmp_path / "state" / "routed" / "profiles").rglob("*.records"))
        routed.unlink()  # what a worker on another node, with its own state_dir, would see
        with pytest.raises(StateError, match=r"\.records: routed output is missing; every worker"):
            run.run({"profiles"}, {1})
    result = run_cli("status", "plan.yaml", "--json", cwd=tmp_path)
    assert '"shards_complete": 1' in result.stdout  # shard 1 was not completed as empty
