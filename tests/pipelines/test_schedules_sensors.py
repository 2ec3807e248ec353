"""The sync schedule and the sensors, evaluated with Dagster's contexts, and the runs they ask for
executed in process: a sync fans out to routers, then shard runs."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

import migrator
from migrator.plan.model import load_plan
from pipelines import build_definitions
from pipelines.sensors import source_digest
from tests.pipelines import change_profiles, source_records, write_demo_shaped_plan
from tests.planfiles import restored_records

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def execute(
    defs: Definitions, job: str, request: RunRequest, instance: DagsterInstance
) -> ExecuteInProcessResult:
    """A requested run, as the daemon would launch it (in process here)."""
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=dict(request.tags),
        run_config=request.run_config or None,
    )
    assert result.success, f"{job} {request.run_key} failed"
    return result


def tick_of(defs: Definitions, tick: datetime) -> ScheduleEvaluationContext:
    return build_schedule_context(
        scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    )


def sensor_tick(
    defs: Definitions, instance: DagsterInstance, cursor: str | None
) -> SensorEvaluationContext:
    return build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=defs.resources,
        repository_def=defs.get_repository_def(),
    )


def numbers(result: ExecuteInProcessResult, node: str) -> dict[str, Any]:
    """The node's materialization metadata (a range run records its totals on each partition)."""
    event, *_ = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in event.metadata.items()}


def sync_by_schedule(
    defs: Definitions, instance: DagsterInstance, tick: datetime
) -> list[ExecuteInProcessResult]:
    """One scheduled sync of user_profiles: the routers it asks for, then the shard runs the
    routed sensor asks for; returns the routers' results."""
    schedule = defs.resolve_schedule_def("incremental_sync_user_profiles_schedule")
    requests = schedule.evaluate_tick(tick_of(defs, tick))
    routers = [
        execute(defs, "route_user_profiles", r, instance) for r in requests.run_requests or []
    ]
    sensor = defs.resolve_sensor_def("user_profiles_routed")
    shard_requests: dict[str, RunRequest] = {}
    for result in routers:
        context = build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        )
        answer = sensor(context)  # type: ignore[operator]
        assert isinstance(answer, SensorResult)
        for request in answer.run_requests or []:
            assert request.run_key is not None
            shard_requests[request.run_key] = request  # the daemon drops a repeated run key
    for request in shard_requests.values():
        execute(defs, "incremental_sync_user_profiles", request, instance)
    return routers


def test_a_scheduled_sync_of_records_routes_in_router_runs_then_encodes_in_shard_runs(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    plan_path = write_demo_shaped_plan(tmp_path)
    defs = build_definitions(plan_path, "production", routers=2, shards_per_run=3)
    schedule = defs.resolve_schedule_def("incremental_sync_user_profiles_schedule")
    assert schedule.job_name == "route_user_profiles"
    tick = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
    data = schedule.evaluate_tick(tick_of(defs, tick))
    assert [(r.run_key, r.partition_key) for r in data.run_requests or []] == [
        ("user_profiles@2026-03-01T14:00/router-0", "router-0"),
        ("user_profiles@2026-03-01T14:00/router-1", "router-1"),
    ]

    first = sync_by_schedule(defs, instance, tick)

    bulk = [numbers(r, "test__user_profiles_routing") for r in first]
    assert [b["generation"] for b in bulk] == [1, 1]
    assert all(b["routing_complete"] for b in bulk)  # each router waits for the others' tasks
    assert sum(b["bytes_routed"] for b in bulk) == sum(
        p.stat().st_size for p in (tmp_path / "data/user_profiles").iterdir()
    )  # every source byte routed once, whichever router took it
    plan = load_plan(plan_path)
    (gen1,) = migrator.progress(plan).committed("user_profiles")
    assert gen1.generation == 1

    change_profiles(tmp_path / "data" / "user_profiles")
    second = sync_by_schedule(defs, instance, datetime(2026, 3, 1, 15, 0, tzinfo=UTC))

    synced = [numbers(r, "test__user_profiles_routing") for r in second]
    assert [s["generation"] for s in synced] == [2, 2]
    assert {s["files_to_route"] for s in synced} == {2}  # the changed file and the new one
    assert [g.generation for g in migrator.progress(plan).committed("user_profiles")] == [1, 2]
    out = tmp_path / "out"
    migrator.restore(plan, "user_profiles", out)
    assert restored_records(out) == source_records(tmp_path / "data" / "user_profiles")


def test_a_scheduled_sync_of_objects_is_one_run_per_shard_batch(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production", shards_per_run=2)
    schedule = defs.resolve_schedule_def("incremental_sync_videos_schedule")
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.job_name == "incremental_sync_videos"
    tick = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)

    def requested() -> list[RunRequest]:
        data = schedule.evaluate_tick(tick_of(defs, tick))
        return list(data.run_requests or [])

    batches = requested()
    assert [(r.run_key, r.partition_key) for r in batches] == [
        ("videos@2026-03-01T14:00/shards-0-1", None),
        ("videos@2026-03-01T14:00/shard-2", "2"),
    ]
    assert batches[0].tags["dagster/asset_partition_range_end"] == "1"
    bulk = [execute(defs, "incremental_sync_videos", r, instance) for r in batches]
    sync = [execute(defs, "incremental_sync_videos", r, instance) for r in requested()]

    written = [numbers(r, "test__videos")["chunks_written"] for r in bulk]
    assert all(w > 0 for w in written)
    again = [numbers(r, "test__videos") for r in sync]
    # The source did not change: the sync is a new generation that writes no chunk.
    assert [(n["generation"], n["chunks_written"]) for n in again] == [(2, 0), (2, 0)]
    states = [n["generation_state"].split(":")[0] for n in again]
    assert states == ["open", "committed"]  # the last one commits
    assert all(c.passed for r in sync for c in r.get_asset_check_evaluations())


def test_the_sync_cron_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.definitions

    plan = write_demo_shaped_plan(tmp_path)
    try:
        with monkeypatch.context() as env:
            env.setenv("MIGRATOR_PLAN", str(plan))
            env.setenv("MIGRATOR_SYNC_CRON", "*/15 * * * *")
            defs = importlib.reload(pipelines.definitions).defs
            crons = {s.name: s.cron_schedule for s in defs.schedules}  # type: ignore[union-attr]
    finally:
        importlib.reload(pipelines.definitions)  # back to the environment's own definitions
    assert crons == {
        "incremental_sync_user_profiles_schedule": "*/15 * * * *",
        "incremental_sync_videos_schedule": "*/15 * * * *",
    }


def test_sensor_requests_one_sync_per_source_change_and_none_when_unchanged(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    sensor = defs.resolve_sensor_def("videos_source_changed")
    assert sensor.job_name == "incremental_sync_videos"

    def tick(cursor: str | None) -> tuple[list[RunRequest], str | None, str | None]:
        data = sensor.evaluate_tick(sensor_tick(defs, instance, cursor))
        return list(data.run_requests or []), data.cursor, data.skip_message

    first, cursor, _ = tick(None)  # the first listing the sensor sees is a change
    assert cursor is not None and len(cursor) == 64
    assert [r.run_key for r in first] == [f"{cursor}/shard-{s}" for s in range(3)]

    requests, same, skipped = tick(cursor)
    assert requests == [] and same == cursor and skipped == "videos: source unchanged"

    videos = tmp_path / "data" / "videos"
    (videos / "new clip.mp4").write_bytes(os.urandom(1000))
    added, cursor2, _ = tick(cursor)
    assert cursor2 not in (None, cursor) and added[0].run_key == f"{cursor2}/shard-0"
    assert tick(cursor2)[0] == []

    # Same name and size, new content: the version (size and mtime) changes the digest.
    clip = videos / "new clip.mp4"
    stat = clip.stat()
    clip.write_bytes(os.urandom(1000))
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed, cursor3, _ = tick(cursor2)
    assert cursor3 not in (cursor, cursor2)

    # The run keys come from the digest: the same listing asks for the same runs, whatever
    # the cursor.
    replayed, _, _ = tick(cursor2)
    videos_plan = load_plan(tmp_path / "plan.yaml").dataset("videos")
    assert [r.run_key for r in replayed] == [r.run_key for r in changed]
    assert cursor3 == source_digest(videos_plan)


def test_sensor_of_records_asks_for_routers_and_waits_while_a_generation_is_written(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production", routers=3)
    sensor = defs.resolve_sensor_def("user_profiles_source_changed")
    assert sensor.job_name == "route_user_profiles"

    def tick(cursor: str | None) -> tuple[list[RunRequest], str | None, str | None]:
        data = sensor.evaluate_tick(sensor_tick(defs, instance, cursor))
        return list(data.run_requests or []), data.cursor, data.skip_message

    routers, cursor, _ = tick(None)
    assert cursor is not None
    assert [(r.run_key, r.partition_key) for r in routers] == [
        (f"{cursor}/router-{i}", f"router-{i}") for i in range(3)
    ]
    # One router ran: the bulk generation is open until its shards are written.
    execute(defs, "route_user_profiles", routers[0], instance)
    change_profiles(tmp_path / "data" / "user_profiles")

    requests, kept, skipped = tick(cursor)

    assert requests == [] and kept == cursor  # it stays: the change is asked for later
    assert skipped is not None and "generation 1 is being written" in skipped


def test_sensor_skips_a_source_out_of_reach(instance: DagsterInstance) -> None:
    defs = build_definitions(MANIFESTS / "govcloud.yaml")
    sensor = defs.resolve_sensor_def("videos_source_changed")

    data = sensor.evaluate_tick(sensor_tick(defs, instance, None))

    assert not data.run_requests and data.cursor is None
    assert data.skip_message is not None
    assert "cannot read the listing of the source of videos" in data.skip_message
