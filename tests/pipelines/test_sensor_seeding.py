"""A source sensor turned on after the migration has run starts from the listing it sees: its
first tick launches nothing when nothing changed, and the next change asks for one sync."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import RunRequest, build_sensor_context, instance_for_test

import migrator
from migrator.plan.model import load_plan
from pipelines import build_definitions
from tests.pipelines import write_demo_shaped_plan


def test_the_first_tick_after_a_sync_launches_nothing_then_a_change_launches_one(
    tmp_path: Path,
) -> None:
    plan_file = write_demo_shaped_plan(tmp_path)
    migrator.run(load_plan(plan_file), {"videos"})  # the bulk copy, before the sensor is on
    defs = build_definitions(plan_file, "production")
    sensor = defs.resolve_sensor_def("videos_source_changed")
    with instance_for_test() as instance:

        def tick(cursor: str | None) -> tuple[list[RunRequest], str | None, str | None]:
            context = build_sensor_context(
                instance=instance,
                cursor=cursor,
                resources=defs.resources,
                repository_def=defs.get_repository_def(),
            )
            data = sensor.evaluate_tick(context)
            return list(data.run_requests or []), data.cursor, data.skip_message

        first, cursor, skipped = tick(None)
        assert first == [] and cursor is not None  # seeded: nothing launched
        assert skipped is not None and "watching from now (generation 1 committed" in skipped
        assert tick(cursor)[0] == []
        (tmp_path / "data" / "videos" / "new clip.mp4").write_bytes(os.urandom(1000))
        changed, moved, _ = tick(cursor)
        assert moved not in (None, cursor)
        assert changed and all(str(r.run_key).startswith(f"{moved}/shard-") for r in changed)
