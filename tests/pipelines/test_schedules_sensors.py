"""The incremental-sync schedule and the source-change sensor, evaluated with Dagster's contexts."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    RunRequest,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from migrator.plan.model import load_plan
from pipelines import build_definitions
from pipelines.schedules import source_digest
from tests.pipelines import write_demo_shaped_plan

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
ALL_VIDEO_SHARDS = {
    "dagster/asset_partition_range_start": "0",
    "dagster/asset_partition_range_end": "2",
}


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def test_schedule_requests_one_sync_run_over_every_shard_and_the_sync_writes_no_chunk_unchanged(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    schedule = defs.resolve_schedule_def("incremental_sync_videos_schedule")
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.job_name == "incremental_sync_videos"

    tick = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
    data = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick))

    (request,) = data.run_requests or []
    assert isinstance(request, RunRequest)
    assert request.run_key == "videos@2026-03-01T14:00"
    assert ALL_VIDEO_SHARDS.items() <= request.tags.items()

    # First the full migration (one run over the same range), then the scheduled sync run.
    full = defs.resolve_job_def("full_migration_videos").execute_in_process(
        instance=instance, tags=ALL_VIDEO_SHARDS
    )
    sync = defs.resolve_job_def(schedule.job_name).execute_in_process(
        instance=instance, tags=dict(request.tags)
    )
    assert full.success and sync.success
    # A range run reports each partition materialized, each with the run's totals.
    first, *_ = full.asset_materializations_for_node("test__videos")
    synced = sync.asset_materializations_for_node("test__videos")
    assert sorted(m.partition or "" for m in synced) == ["0", "1", "2"]
    again = synced[0]
    assert again.metadata["shards"].value == "0-2"
    written = first.metadata["chunks_written"].value
    assert isinstance(written, int) and written > 0
    # The source did not change: the sync is a new generation that writes no chunk.
    assert again.metadata["chunks_written"].value == 0
    assert again.metadata["generation"].value == 2
    assert again.metadata["generation_kind"].value == "sync"
    assert again.metadata["shards_changed"].value == 0
    assert all(c.passed for c in sync.get_asset_check_evaluations())


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


def test_sensor_requests_one_run_per_source_change_and_none_when_unchanged(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    sensor = defs.resolve_sensor_def("videos_source_changed")
    assert sensor.job_name == "incremental_sync_videos"

    def tick(cursor: str | None) -> tuple[list[RunRequest], str | None, str | None]:
        data = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))
        return list(data.run_requests or []), data.cursor, data.skip_message

    (first,), cursor, _ = tick(None)  # the first listing the sensor sees is a change
    assert first.run_key == cursor and cursor is not None and len(cursor) == 64
    assert ALL_VIDEO_SHARDS.items() <= first.tags.items()

    requests, same, skipped = tick(cursor)
    assert requests == [] and same == cursor and skipped == "videos: source unchanged"

    videos = tmp_path / "data" / "videos"
    (videos / "new clip.mp4").write_bytes(os.urandom(1000))
    (added,), cursor2, _ = tick(cursor)
    assert added.run_key == cursor2 and cursor2 not in (None, cursor)
    assert tick(cursor2)[0] == []

    # Same name and size, new content: the version (size and mtime) changes the digest.
    clip = videos / "new clip.mp4"
    stat = clip.stat()
    clip.write_bytes(os.urandom(1000))
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    (changed,), cursor3, _ = tick(cursor2)
    assert changed.run_key == cursor3 and cursor3 not in (cursor, cursor2)

    # The run key is the digest: the same listing asks for the same run, whatever the cursor.
    (replayed,), _, _ = tick(cursor2)
    videos_plan = load_plan(tmp_path / "plan.yaml").dataset("videos")
    assert replayed.run_key == changed.run_key == source_digest(videos_plan)


def test_sensor_skips_a_source_out_of_reach(instance: DagsterInstance) -> None:
    defs = build_definitions(MANIFESTS / "govcloud.yaml")
    sensor = defs.resolve_sensor_def("videos_source_changed")

    data = sensor.evaluate_tick(build_sensor_context(instance=instance))

    assert not data.run_requests and data.cursor is None
    assert data.skip_message is not None
    assert "cannot list the source of videos" in data.skip_message
