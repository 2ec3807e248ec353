"""The overview sensor through Dagster's own test API: what its materialization of
`migration_overview` carries (moved, total, throughput, ETA, readable and as numbers), that it
reports only when a figure changed, and the failed shards it lists with their runbook steps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    SensorDefinition,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)

import migrator
from pipelines import build_definitions
from pipelines.checks import READBACK_CHECK
from pipelines.overview_failures import RUNBOOK, failure_kind
from tests.pipelines import write_demo_shaped_plan
from tests.pipelines.test_assets import run_partition
from tests.planfiles import flip_bit

OVERVIEW = AssetKey(["test", "migration_overview"])


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def overview_sensor(defs: Definitions) -> SensorDefinition:
    return defs.resolve_sensor_def("test_overview")


def tick(
    defs: Definitions, instance: DagsterInstance, cursor: str | None = None
) -> SensorResult | SkipReason:
    context = build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor)
    result = overview_sensor(defs)(context)
    assert isinstance(result, SensorResult | SkipReason), result
    return result


def reported(result: SensorResult | SkipReason) -> dict[str, Any]:
    assert isinstance(result, SensorResult), result
    (event,) = result.asset_events
    assert event.asset_key == OVERVIEW
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def test_the_overview_reports_moved_total_throughput_and_eta_as_the_bulk_goes(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path))  # the dry-run deployment
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    assert specs[OVERVIEW].group_name == "test"  # beside the plan's datasets
    sensor = overview_sensor(defs)
    assert sensor.default_status.value == "RUNNING"

    before = reported(tick(defs, instance))
    assert before["mode"] == "dry run (stand-ins)" and before["dry_run"] is True
    assert before["moved"] == "0 B of ?" and before["eta"] == "unknown"
    assert "stand-ins for" in before["destination"]

    for dataset, shard in (("user_profiles", 0), ("user_profiles", 1), ("videos", 0)):
        assert run_partition(defs, instance, dataset, shard).success
    first = tick(defs, instance)
    now = reported(first)
    assert 0 < now["moved_mib"] < now["total_mib"]
    assert 0 < now["percent_moved"] < 100
    assert now["throughput_mib_per_s"] > 0 and now["eta_minutes"] >= 0
    # What the page shows reads in byte units, not as raw integers.
    assert " KiB of " in now["moved"] and "%" in now["moved"]
    assert now["throughput"].endswith("/s (last 5 min)") and "KiB/s" in now["throughput"]
    assert now["eta"] not in ("unknown", "done")
    table = now["datasets"]
    assert "| user_profiles | bulk in progress | 2/4 complete |" in table
    assert "records" in table and "objects" in table and "routing's file table" in table
    assert now["failed"] == "No failed shards." and now["failed_shards"] == 0

    # Nothing changed since: no second materialization of the same figures.
    assert isinstance(first, SensorResult)
    again = tick(defs, instance, cursor=first.cursor)
    assert isinstance(again, SkipReason)

    for shard in (2, 3):
        assert run_partition(defs, instance, "user_profiles", shard).success
    later = reported(tick(defs, instance, cursor=first.cursor))
    assert later["user_profiles_moved_mib"] > now["user_profiles_moved_mib"]
    assert "| user_profiles | bulk committed | 4/4 complete |" in later["datasets"]


def test_failed_shards_are_listed_with_their_reason_and_runbook_step(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    assert run_partition(defs, instance, "videos", 0).success
    chunk = sorted((tmp_path / "dest/t/videos/g000001/s00000/o").rglob("*.mgc"))[0]
    flip_bit(chunk, -20)
    read_all = {"ops": {"test__videos_integrity": {"config": {"sample": 1.0}}}}
    assert not run_partition(defs, instance, "videos", 0, run_config=read_all).success
    part = tmp_path / "data" / "user_profiles" / "part-001.jsonl"
    part.write_bytes(part.read_bytes() + b'{"user_id": "u-broken", "name": \n')
    assert not run_partition(defs, instance, "user_profiles", 2).success

    shown = reported(tick(defs, instance))
    assert shown["mode"] == "production" and shown["dry_run"] is False
    assert shown["failed_shards"] == 2
    table = shown["failed"]
    bad, tampered = (
        line
        for line in table.splitlines()
        if line.startswith("| ") and "|---" not in line and not line.startswith("| dataset")
    )
    assert bad.startswith("| user_profiles | 2 | run | BadRecordError")
    assert "part-001.jsonl" in bad and RUNBOOK["bad input"] in bad
    assert tampered.startswith(f"| videos | 0 | {READBACK_CHECK} | TamperedError")
    assert "docs/REPAIR.md" in tampered and "migrator repair" in tampered


def test_a_failure_found_outside_dagster_is_listed_from_the_state_store(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    """`migrator verify` from a shell keeps its verdict in the state store: the overview lists
    the shard it failed, though no Dagster run saw it."""
    plan_file = write_demo_shaped_plan(tmp_path)
    defs = build_definitions(plan_file, "production")
    assert run_partition(defs, instance, "videos", 1).success
    chunk = sorted((tmp_path / "dest/t/videos/g000001/s00001/o").rglob("*.mgc"))[0]
    flip_bit(chunk, -20)
    assert not migrator.verify(migrator.load_plan(plan_file), ["videos"], [1]).ok

    shown = reported(tick(defs, instance))
    assert shown["failed_shards"] == 1
    (row,) = (line for line in shown["failed"].splitlines() if line.startswith("| videos"))
    assert row.startswith("| videos | 1 | integrity check | integrity check failed")
    assert chunk.name in row and "docs/REPAIR.md" in row


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("BadRecordError: a.jsonl:3: not JSON", "bad input"),
        ("PlanError: plan.yaml: shards must be positive", "bad input"),
        ("TamperedError: t/videos/g000001/s00000/o/x.mgc", "integrity"),
        ("StoreError: s3://b/k: throttled", "runtime"),
        ("dagster._core.errors.DagsterExecutionInterruptedError", "runtime"),
    ],
)
def test_each_kind_of_failure_has_its_runbook_step(reason: str, kind: str) -> None:
    assert failure_kind(reason) == kind
