"""A source sensor's first tick, evaluated with Dagster's sensor context on a real instance: after
a bulk copy or a sync, nothing is launched when the source lists as that generation read it, and
a sync is asked for when anything changed before the sensor was turned on (a new, changed or
removed file, of an objects or a records dataset), as it is for any later change."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

import migrator
import pipelines.sensors
from migrator.plan.model import load_plan
from migrator.sources.events import EventBatch, SourceEvent
from pipelines import build_definitions
from tests.pipelines import change_profiles, write_demo_shaped_plan

Tick = tuple[list[RunRequest], str | None, str | None]  # requests, cursor, skip message
DATASETS = ["videos", "user_profiles"]


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def ticker(defs: Definitions, dataset: str, instance: DagsterInstance) -> Callable[..., Tick]:
    sensor = defs.resolve_sensor_def(f"{dataset}_source_changed")

    def tick(cursor: str | None) -> Tick:
        context = build_sensor_context(
            instance=instance,
            cursor=cursor,
            resources=defs.resources,
            repository_def=defs.get_repository_def(),
        )
        data = sensor.evaluate_tick(context)
        return list(data.run_requests or []), data.cursor, data.skip_message

    return tick


def a_sync(requests: list[RunRequest], cursor: str | None, dataset: str) -> bool:
    """The runs that start a sync of the dataset, named after the listing the tick saw."""
    first = "router-" if dataset == "user_profiles" else "shard-"
    return (
        bool(requests)
        and cursor is not None
        and all(str(r.run_key).startswith(f"{cursor}/{first}") for r in requests)
    )


def touch(path: Path, data: bytes) -> None:
    """New content, its modification time moved on (the version a local listing sees)."""
    stat = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def change(root: Path, dataset: str, kind: str) -> None:
    folder = root / "data" / dataset
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > 0)
    if kind == "new":
        name = "part-100.jsonl" if dataset == "user_profiles" else "new clip.mp4"
        body = b'{"user_id":"u-new","name":"Neu"}\n' if dataset == "user_profiles" else b"clip"
        (folder / name).write_bytes(body)
    elif kind == "changed":  # same size: only the version tells
        data = files[0].read_bytes()
        edited = data.replace(b'"lang":"en"', b'"lang":"fr"', 1)
        touch(files[0], edited if dataset == "user_profiles" else os.urandom(len(data)))
    else:
        files[-1].unlink()


@pytest.mark.parametrize("dataset", DATASETS)
def test_after_a_bulk_and_a_sync_with_no_change_the_first_tick_launches_nothing(
    tmp_path: Path, instance: DagsterInstance, dataset: str
) -> None:
    plan_file = write_demo_shaped_plan(tmp_path)
    migrator.run(load_plan(plan_file), {dataset})  # the bulk, before the sensor is on
    tick = ticker(build_definitions(plan_file, "production"), dataset, instance)

    first, cursor, skipped = tick(None)
    assert first == [] and cursor is not None
    assert skipped == f"{dataset}: source unchanged since generation 1"
    assert tick(cursor) == ([], cursor, f"{dataset}: source unchanged")

    change(tmp_path, dataset, "new")  # a later change: asked for, as always
    later, moved, _ = tick(cursor)
    assert moved != cursor and a_sync(later, moved, dataset)

    migrator.run(load_plan(plan_file), {dataset})  # that sync, committed as generation 2
    again, seeded, skipped = ticker(build_definitions(plan_file, "production"), dataset, instance)(
        None
    )
    assert again == [] and seeded == moved  # the listing the sync read
    assert skipped == f"{dataset}: source unchanged since generation 2"


@pytest.mark.parametrize("kind", ["new", "changed", "removed"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_a_change_made_before_the_sensor_was_on_asks_for_the_sync_at_its_first_tick(
    tmp_path: Path, instance: DagsterInstance, dataset: str, kind: str
) -> None:
    plan_file = write_demo_shaped_plan(tmp_path)
    migrator.run(load_plan(plan_file), {dataset})
    change(tmp_path, dataset, kind)
    tick = ticker(build_definitions(plan_file, "production"), dataset, instance)

    requests, cursor, _ = tick(None)

    assert a_sync(requests, cursor, dataset)
    assert tick(cursor)[0] == []  # and once only


def test_a_records_change_as_a_sync_finds_it_is_asked_for(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    plan_file = write_demo_shaped_plan(tmp_path)
    migrator.run(load_plan(plan_file), {"user_profiles"})
    change_profiles(tmp_path / "data" / "user_profiles")  # edited, removed, added records

    requests, cursor, _ = ticker(
        build_definitions(plan_file, "production"), "user_profiles", instance
    )(None)

    assert a_sync(requests, cursor, "user_profiles")


def test_before_any_generation_the_first_tick_asks_for_the_first_sync_and_makes_no_state(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    plan_file = write_demo_shaped_plan(tmp_path)
    tick = ticker(build_definitions(plan_file, "production"), "videos", instance)

    requests, cursor, _ = tick(None)

    assert a_sync(requests, cursor, "videos")  # the bulk copy, fanned out as a sync
    assert not (tmp_path / "state").exists()  # a sensor never makes a state store


def test_a_dry_run_deployment_compares_with_its_own_generation(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path))  # dry run: the stand-ins
    schedule = defs.resolve_schedule_def("incremental_sync_videos_schedule")
    tick_time = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
    context = build_schedule_context(
        scheduled_execution_time=tick_time, repository_def=defs.get_repository_def()
    )
    job = defs.resolve_job_def("incremental_sync_videos")
    for request in schedule.evaluate_tick(context).run_requests or []:  # the bulk, dry run
        result = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=dict(request.tags)
        )
        assert result.success
    tick = ticker(defs, "videos", instance)

    requests, cursor, skipped = tick(None)
    assert requests == [] and skipped == "videos: source unchanged since generation 1"

    change(tmp_path, "videos", "removed")
    assert a_sync(*tick(cursor)[:2], "videos")


class EmptyQueue:
    """An event queue with nothing in it (the events sensor's first tick lists nothing)."""

    def __init__(self, *_: object) -> None:
        self.batch = EventBatch()

    def receive(self) -> EventBatch:
        return self.batch

    def acknowledge(self, batch: EventBatch) -> None:
        pass


def test_an_events_sensor_needs_no_seeding(
    tmp_path: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_file = write_demo_shaped_plan(tmp_path)
    migrator.run(load_plan(plan_file), {"videos"})
    change(tmp_path, "videos", "new")  # a change the queue has not told: events are the signal

    def never(*_: object) -> None:
        raise AssertionError("an events sensor lists the source")

    monkeypatch.setattr(pipelines.sensors, "EventQueue", EmptyQueue)
    monkeypatch.setattr(pipelines.sensors, "list_source", never)
    defs = build_definitions(plan_file, "production", events={"videos": "http://127.0.0.1/q"})
    tick = ticker(defs, "videos", instance)

    assert tick(None) == ([], None, "videos: no change events")

    told = EventBatch([SourceEvent("new clip.mp4", "ObjectCreated:Put", "01")], ["r"])
    monkeypatch.setattr(EmptyQueue, "receive", lambda self: told)
    requests, cursor, _ = tick(None)
    assert cursor == told.key() and a_sync(requests, cursor, "videos")


@pytest.mark.integration
def test_the_comparison_reads_a_postgresql_state_store(
    tmp_path: Path, instance: DagsterInstance, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATOR_STATE_URL", postgres_url)
    plan_file = write_demo_shaped_plan(tmp_path)
    migrator.run(load_plan(plan_file), {"videos"})
    change(tmp_path, "videos", "new")
    migrator.run(load_plan(plan_file), {"videos"})  # generation 2 changed one shard of three
    tick = ticker(build_definitions(plan_file, "production"), "videos", instance)

    requests, cursor, skipped = tick(None)
    assert requests == [] and skipped == "videos: source unchanged since generation 2"
    assert not (tmp_path / "state" / "state.sqlite").exists()  # all of it in PostgreSQL

    change(tmp_path, "videos", "changed")
    assert a_sync(*tick(cursor)[:2], "videos")
