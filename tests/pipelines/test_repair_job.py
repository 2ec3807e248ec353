"""The `repair_<dataset>` job: a chunk damaged at the destination is re-sent from the source and
the shard reads back clean, the gate passes again; a chunk whose source changed fails the run
once, its headline naming the chunk and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DagsterEventType, instance_for_test

import migrator
from pipelines import build_definitions
from tests.pipelines import write_demo_shaped_plan

DEST = Path("dest/t")


def migrated(tmp_path: Path) -> Path:
    plan_file = write_demo_shaped_plan(tmp_path)
    with migrator.connect(migrator.load_plan(plan_file)) as conn:
        assert migrator.run(conn).datasets
    return plan_file


def flip(path: Path, at: int = 300) -> None:
    data = bytearray(path.read_bytes())
    data[min(at, len(data) - 20)] ^= 0x10
    path.write_bytes(bytes(data))


def run_job(plan_file: Path, name: str, config: dict[str, Any]) -> Any:
    defs = build_definitions(plan_file, "production")
    job = defs.get_job_def(f"repair_{name}")
    with instance_for_test() as instance:
        return job.execute_in_process(
            run_config={"ops": {f"repair_{name}_op": {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )


def test_the_repair_job_restores_a_damaged_chunk_and_the_gate_passes(tmp_path: Path) -> None:
    plan_file = migrated(tmp_path)
    chunk = tmp_path / DEST / "user_profiles/g000001/s00002/r/00000000.mgc"
    flip(chunk)
    plan = migrator.load_plan(plan_file)
    with migrator.connect(plan) as conn:
        report = migrator.verify(conn, ["user_profiles"], sample=1.0)
        assert {p.shard for p in report.problems} == {2}
        assert str(chunk.relative_to(tmp_path / DEST)) in {p.object_key for p in report.problems}

    checked = run_job(plan_file, "user_profiles", {"shards": [2], "check_only": True})
    assert checked.success
    assert migrator.verify(plan, ["user_profiles"], [2], sample=1.0).problems  # nothing stored

    result = run_job(plan_file, "user_profiles", {"shards": [2]})
    assert result.success
    assert migrator.verify(plan, sample=1.0).ok
    with migrator.connect(plan) as conn:
        assert migrator.cutover(conn).ready


def test_a_chunk_whose_source_changed_fails_the_job_once_naming_it(tmp_path: Path) -> None:
    plan_file = migrated(tmp_path)
    part = next(p for p in sorted((tmp_path / DEST / "videos").rglob("*.mgc")) if "/o/" in str(p))
    flip(part, at=200)
    for video in (tmp_path / "data/videos").rglob("*"):
        if video.is_file():
            video.write_bytes(video.read_bytes() + b"edited")
    # The check that finds it: the job's default is the shards whose latest check failed.
    assert not migrator.verify(migrator.load_plan(plan_file), ["videos"], sample=1.0).ok
    before = {p: p.read_bytes() for p in (tmp_path / DEST).rglob("*") if p.is_file()}

    result = run_job(plan_file, "videos", {})
    assert not result.success
    failures = [e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE]
    retries = [e for e in result.all_events if e.event_type is DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(failures) == 1 and retries == []
    data = failures[0].step_failure_data.user_failure_data
    headline = (data.description or "") if data is not None else ""
    assert str(part.relative_to(tmp_path / DEST)) in headline, headline
    assert "changed since generation 1" in headline, headline
    after = {p: p.read_bytes() for p in (tmp_path / DEST).rglob("*") if p.is_file()}
    assert after == before  # the shard is left as it was
