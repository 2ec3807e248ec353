"""cutover_readiness: the cutover gate as an asset, through Dagster's own test API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

from migrator.records.keys import JsonKeyReader
from migrator.sharding import shard_of
from pipelines import build_definitions
from pipelines.cutover import CUTOVER_CHECK
from tests.pipelines import write_demo_shaped_plan
from tests.pipelines.test_assets import SHARDS, asset_at, metadata, migrate_everything

NODE = "test__cutover_readiness"


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def gate(defs: Definitions, instance: DagsterInstance) -> ExecuteInProcessResult:
    return materialize(
        [asset_at(defs, "cutover_readiness")],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def verdict(result: ExecuteInProcessResult) -> AssetCheckEvaluation:
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == CUTOVER_CHECK and not check.blocking
    return check


def mismatched(check: AssetCheckEvaluation) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = check.metadata["mismatched"].value  # type: ignore[assignment]
    return shown


def alter_one_profile(root: Path) -> bytes:
    """Rewrite one JSONL file with one record's bio changed; returns that record's key."""
    path = root / "data" / "user_profiles" / "part-000.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    doc = orjson.loads(lines[1])
    doc["bio"] += " changed"
    lines[1] = orjson.dumps(doc) + b"\n"
    path.write_bytes(b"".join(lines))
    return JsonKeyReader("user_id").key(lines[1], str(path), 2)


def test_the_gate_passes_once_migrated_and_fails_its_check_on_a_changed_record(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    migrate_everything(defs, instance)  # every shard, each behind its blocking checks

    ready = gate(defs, instance)

    assert ready.success
    assert verdict(ready).passed
    numbers = metadata(ready, NODE)
    assert numbers["ready"] is True and numbers["dry_run"] is False
    assert numbers["datasets_ready"] == 2 and numbers["shards_mismatched"] == 0
    assert numbers["destination"].startswith("local:")
    assert "freeze_estimate_seconds" not in numbers  # no sync timed yet; the method says so
    assert "no sync timed yet" in numbers["freeze_estimate_method"]
    summary = {d["name"]: d for d in numbers["datasets"]}
    assert set(summary) == set(SHARDS)
    for d in summary.values():
        assert d["ready"] and d["generation"] == 1 and d["problem"] is None
        assert (d["pending_upserts"], d["pending_deletes"], d["pending_bytes"]) == (0, 0, 0)

    key = alter_one_profile(tmp_path)
    changed = gate(defs, instance)

    # The verdict is recorded, not raised: the run succeeds; the check says "not ready".
    (event,) = changed.asset_materializations_for_node(NODE)
    numbers = {name: value.value for name, value in event.metadata.items()}
    assert numbers["ready"] is False
    assert numbers["datasets_ready"] == 1 and numbers["shards_mismatched"] == 1
    summary = {d["name"]: d for d in numbers["datasets"]}
    assert not summary["user_profiles"]["ready"] and summary["videos"]["ready"]
    assert summary["user_profiles"]["pending_upserts"] == 1
    check = verdict(changed)
    assert not check.passed
    assert check.metadata["problem_count"].value == 1
    (bad,) = mismatched(check)
    assert bad["dataset"] == "user_profiles"
    assert bad["shard"] == shard_of(key, SHARDS["user_profiles"])
    assert bad["source_digest"] != bad["destination_digest"]
    assert changed.success  # "not ready yet" is an answer, not a crashed run
    table = check.metadata["not_ready"].value
    assert f"| user_profiles | {bad['shard']} | the source's digest differs" in str(table)
    totals = str(numbers["gate"])
    assert "| user_profiles | **no** | 1 of 4 | 1 | 0 |" in totals, totals
    assert "source changed since the last sync" in totals
    assert "Estimated write freeze" in totals


def test_the_gate_says_why_before_anything_is_migrated(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")

    result = gate(defs, instance)

    numbers = metadata(result, NODE)
    assert numbers["ready"] is False and numbers["datasets_ready"] == 0
    check = verdict(result)
    assert not check.passed
    problems = mismatched(check)
    assert {p["dataset"] for p in problems} == set(SHARDS)
    assert all("no committed generation" in p["problem"] for p in problems)


def test_the_gate_is_downstream_of_every_dataset_and_its_check_never_fails_the_run(
    tmp_path: Path,
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    key = AssetKey(["test", "cutover_readiness"])

    node = defs.resolve_asset_graph().get(key)

    assert node.parent_keys == {AssetKey(["test", name]) for name in SHARDS}
    assert node.partitions_def is None  # one verdict over every shard
    (spec,) = asset_at(defs, "cutover_readiness").check_specs
    assert spec.key.asset_key == key and spec.name == CUTOVER_CHECK and not spec.blocking
