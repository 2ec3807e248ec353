"""Each partition of a sync run carries its own shard's numbers and check verdicts, also when
one run writes a batch of shards (MIGRATOR_SHARDS_PER_RUN > 1): the shard the change fell in
reports it, the others report nothing written; the run's totals are named as the run's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, RunRequest

import migrator
from migrator.sharding import shard_of
from pipelines import build_definitions
from pipelines.checks import MANIFEST_CHECK, READBACK_CHECK
from tests.pipelines import write_demo_shaped_plan
from tests.pipelines.test_assets import instance, migrate_everything, run_partition  # noqa: F401
from tests.pipelines.test_schedules_sensors import execute, tick_of

JOB = "incremental_sync_videos"
NODE = "test__videos"


def by_partition(result: Any) -> dict[int, dict[str, Any]]:
    events = result.asset_materializations_for_node(NODE)
    return {int(e.partition): {k: v.value for k, v in e.metadata.items()} for e in events}


def test_each_partition_of_a_batched_sync_reports_its_own_shard(
    tmp_path: Path,
    instance: DagsterInstance,  # noqa: F811
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production", shards_per_run=2)
    schedule = defs.resolve_schedule_def("incremental_sync_videos_schedule")

    def sync(hour: int) -> dict[int, dict[str, Any]]:
        tick = tick_of(defs, datetime(2026, 3, 1, hour, 0, tzinfo=UTC))
        requests: list[RunRequest] = list(schedule.evaluate_tick(tick).run_requests or [])
        out: dict[int, dict[str, Any]] = {}
        for request in requests:
            result = execute(defs, JOB, request, instance)
            out |= by_partition(result)
            # Each shard of the batch keeps its own check verdicts, not "skipped".
            checked = {
                (c.partition, c.check_name)
                for c in result.get_asset_check_evaluations()
                if c.partition is not None and c.passed
            }
            assert checked == {
                (str(s), name)
                for s in by_partition(result)
                for name in (MANIFEST_CHECK, READBACK_CHECK)
            }
        return out

    bulk = sync(14)
    assert sorted(bulk) == [0, 1, 2]
    videos = sorted(p for p in (tmp_path / "data" / "videos").rglob("*") if p.is_file())
    names = [p.relative_to(tmp_path / "data" / "videos").as_posix() for p in videos]
    per_shard = {s: sum(shard_of(n.encode(), 3) == s for n in names) for s in range(3)}
    assert {s: n["objects"] for s, n in bulk.items()} == per_shard
    assert len({n["bytes_in"] for n in bulk.values()}) == 3  # not one run's total thrice

    # One video edited: only its shard's partition says it wrote something.
    changed = videos[0]
    changed.write_bytes(b"edited" * 1000)
    shard = shard_of(names[0].encode(), 3)
    synced = sync(15)
    assert sorted(synced) == [0, 1, 2]
    for s, n in synced.items():
        assert n["shard"] == s and n["generation"] == 2
        if s == shard:
            assert (n["objects"], n["bytes_in"], n["chunks"]) == (1, 6000, 1)
        else:
            assert (n["objects"], n["bytes_in"], n["chunks"]) == (0, 0, 0)
            assert n["shard_status"] in ("complete", "unchanged")
    mine = synced[shard]
    assert (mine["run_replaced"], mine["run_removed"]) == (1, 0)  # an edit is not a removal


def test_a_lone_shard_rerun_after_the_bulk_opens_no_generation(
    tmp_path: Path,
    instance: DagsterInstance,  # noqa: F811
) -> None:
    """Re-running one partition outside a sync reports the shard and checks it: it would
    otherwise open a sync generation that stays open (and closes the gate) until every other
    shard ran."""
    plan_file = write_demo_shaped_plan(tmp_path)
    defs = build_definitions(plan_file, "production")
    migrate_everything(defs, instance)
    (tmp_path / "data" / "videos" / "new.bin").write_bytes(b"x" * 5000)  # a change: still none

    again = run_partition(defs, instance, "videos", 1)

    assert again.success
    (event,) = again.asset_materializations_for_node(NODE)
    shown = {k: v.value for k, v in event.metadata.items()}
    assert (shown["generation"], shown["generation_kind"]) == (1, "refresh")
    assert shown["shard"] == 1 and shown["objects"] > 0  # the shard as generation 1 wrote it
    assert all(c.passed for c in again.get_asset_check_evaluations())
    state = migrator.progress(migrator.load_plan(plan_file))
    assert [g.generation for g in state.committed("videos")] == [1]
    assert state.dataset("videos").generations[-1].committed  # type: ignore[union-attr]
