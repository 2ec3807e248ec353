"""A shard run that meets a malformed source record fails once, with the record's file, line
and byte offset in its headline: no retry could read other bytes, and each would read the source
again. A store that fails may recover, so those failures still go to the retry policy."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, AssetPartitionStatus, DagsterEventType, instance_for_test, materialize

from migrator.errors import BadRecordError, RecordTooLargeError, StoreError
from pipelines import build_definitions
from tests.pipelines import write_demo_shaped_plan
from tests.pipelines.test_assets import asset_at, migrate_everything, run_partition


def test_a_bad_record_fails_its_shard_once_naming_file_line_and_offset(tmp_path: Path) -> None:
    plan = write_demo_shaped_plan(tmp_path)
    part = tmp_path / "data" / "user_profiles" / "part-001.jsonl"
    good = part.read_bytes()
    part.write_bytes(good + b'{"user_id": "u-broken", "name": \n')  # cut short: not JSON
    defs = build_definitions(plan, "production")
    with instance_for_test() as instance:
        result = materialize(
            [asset_at(defs, "user_profiles")],
            partition_key="0",
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
        )
    assert not result.success
    events = result.all_events
    retries = [e for e in events if e.event_type is DagsterEventType.STEP_UP_FOR_RETRY]
    failures = [e for e in events if e.event_type is DagsterEventType.STEP_FAILURE]
    assert retries == [] and len(failures) == 1
    failure = failures[0].step_failure_data
    described = failure.user_failure_data
    headline = (described.description or "") if described is not None else ""
    assert "BadRecordError" in headline and "part-001.jsonl" in headline, headline
    assert f"byte {len(good)}" in headline, headline


def test_only_failures_that_may_pass_are_retryable() -> None:
    assert StoreError("s3://b/k: throttled").retryable
    assert not BadRecordError("a.jsonl", 3, "not JSON", 120).retryable
    assert not RecordTooLargeError("a.jsonl", 3, 120, 10**9, 64, True).retryable


SYNC_RUN = {"migrator/mode": "sync"}  # a sync's shard run, as the schedule's job tags it


def test_a_sync_that_meets_a_bad_record_leaves_every_finished_shard_materialized(
    tmp_path: Path,
) -> None:
    """The bulk is done; a sync's shard run then meets a malformed record: it fails once, and
    every shard the bulk finished stays materialized (their data is intact), none shows failed
    but the one whose run failed."""
    plan = write_demo_shaped_plan(tmp_path)
    defs = build_definitions(plan, "production")
    key = AssetKey(["test", "user_profiles"])
    partitions = [str(s) for s in range(4)]
    with instance_for_test() as instance:
        migrate_everything(defs, instance)
        part = tmp_path / "data" / "user_profiles" / "part-002.jsonl"
        part.write_bytes(part.read_bytes() + b'{"user_id": "u-broken", "name": \n')
        result = run_partition(defs, instance, "user_profiles", 1, tags=SYNC_RUN)
        assert not result.success
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retries == []
        asset = asset_at(defs, "user_profiles")
        assert asset.partitions_def is not None
        status = instance.get_status_by_partition(key, partitions, asset.partitions_def)
        assert status is not None
        failed = [p for p, s in status.items() if s == AssetPartitionStatus.FAILED]
        assert failed == ["1"]
        assert sorted(instance.get_materialized_partitions(key)) == partitions
