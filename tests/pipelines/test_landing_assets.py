"""The landed assets: each dataset's landed copy, partitioned by shard, behind a blocking check
that reads its digest from the landing target; the dataset jobs land what they write; the
cutover gate waits for landing. Through Dagster's own test API, landing into folders."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetChecksDefinition,
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

from migrator.plan.model import Plan, load_plan
from migrator.sharding import shard_of
from migrator.wiring import open_landing_store
from pipelines import build_definitions
from pipelines.landing import LANDED_CHECK
from tests.pipelines import source_records, write_demo_shaped_plan
from tests.pipelines.test_assets import asset_at, metadata, run_partition
from tests.pipelines.test_cutover_readiness import gate, verdict
from tests.planfiles import split_records, write_objects, write_plan, write_profiles

SHARDS = {"user_profiles": 2, "videos": 3}
PROFILES = 300
VIDEO_SIZES = [150_000, 70_000, 20_000, 1000, 1, 0]
LANDED_DATASETS = """\
  - {name: user_profiles, kind: records, format: jsonl,
     source: {kind: local, path: data/user_profiles}, key: user_id, shards: 2,
     landing: {bucket: {kind: local, path: landed/user_profiles}}}
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 3,
     part_size: 64KiB, landing: {bucket: {kind: local, path: landed/videos}}}
"""


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def write_landed_plan(root: Path) -> Path:
    """root/plan.yaml (plan "test"): both datasets land into folders under root/landed."""
    write_profiles(root / "data" / "user_profiles", PROFILES, files=2)
    write_objects(root / "data" / "videos", VIDEO_SIZES)
    return write_plan(root, datasets=LANDED_DATASETS)


def landed_checks(defs: Definitions, dataset: str) -> AssetChecksDefinition:
    return next(c for c in defs.asset_checks if c.node_def.name == f"test__{dataset}_landed_proof")


def land_partition(
    defs: Definitions, instance: DagsterInstance, dataset: str, shard: int
) -> ExecuteInProcessResult:
    """One shard partition of a dataset's landed asset with its check, as the UI launches it."""
    return materialize(
        [asset_at(defs, f"{dataset}_landed"), landed_checks(defs, dataset)],
        partition_key=str(shard),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def landed_verdict(result: ExecuteInProcessResult) -> AssetCheckEvaluation:
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == LANDED_CHECK and check.blocking
    return check


def landed_files(plan: Plan, dataset: str) -> dict[str, bytes]:
    landing = plan.dataset(dataset).landing
    assert landing is not None and landing.bucket is not None
    store = open_landing_store(plan, landing.bucket)
    return {o.key: store.get(o.key) for o in store.list()}


def migrate_and_land(defs: Definitions, instance: DagsterInstance) -> list[dict[str, Any]]:
    """Every dataset partition, then every landed partition; the landed runs' metadata."""
    for dataset, shards in SHARDS.items():
        for shard in range(shards):
            assert run_partition(defs, instance, dataset, shard).success
    numbers = []
    for dataset, shards in SHARDS.items():
        for shard in range(shards):
            result = land_partition(defs, instance, dataset, shard)
            assert result.success, f"{dataset}_landed[{shard}] failed"
            check = landed_verdict(result)
            assert check.passed and check.partition == str(shard)
            assert check.metadata["mismatched"].value == 0
            numbers.append({"dataset": dataset, **metadata(result, f"test__{dataset}_landed")})
    return numbers


def test_every_shard_lands_with_its_numbers_and_its_check_passes(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    plan_file = write_landed_plan(tmp_path)
    defs = build_definitions(plan_file, "production")

    numbers = migrate_and_land(defs, instance)

    for n in numbers:
        assert n["generation"] == 1 and n["generations_applied"] == 1
        assert n["dry_run"] is False
    profiles = [n for n in numbers if n["dataset"] == "user_profiles"]
    videos = [n for n in numbers if n["dataset"] == "videos"]
    assert [n["shards"] for n in profiles] == ["0", "1"]
    assert [n["shards"] for n in videos] == ["0", "1", "2"]
    assert sum(n["records"] for n in profiles) == PROFILES
    assert sum(n["objects"] for n in videos) == len(VIDEO_SIZES)
    assert sum(n["bytes"] for n in videos) == sum(VIDEO_SIZES)
    plan = load_plan(plan_file)
    sources = tmp_path / "data"
    videos_source = {
        p.relative_to(sources / "videos").as_posix(): p.read_bytes()
        for p in (sources / "videos").rglob("*")
        if p.is_file()
    }
    assert landed_files(plan, "videos") == videos_source
    landed_records: Counter[bytes] = Counter()
    for data in landed_files(plan, "user_profiles").values():
        landed_records.update(split_records(data, csv_quotes=False))
    assert landed_records == source_records(sources / "user_profiles")


def test_the_dataset_jobs_land_what_they_write(tmp_path: Path, instance: DagsterInstance) -> None:
    defs = build_definitions(write_landed_plan(tmp_path), "production")
    for name in ("full_migration_videos", "incremental_sync_videos"):
        job = defs.resolve_job_def(name)
        assert job.asset_layer.selected_asset_keys == {
            AssetKey(["test", "videos"]),
            AssetKey(["test", "videos_landed"]),
        }

    result = defs.resolve_job_def("full_migration_videos").execute_in_process(
        instance=instance, partition_key="1", raise_on_error=False
    )

    assert result.success
    assert metadata(result, "test__videos")["shards"] == "1"
    assert metadata(result, "test__videos_landed")["shards"] == "1"
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks[LANDED_CHECK]


def test_a_landed_object_changed_behind_landings_back_fails_its_shards_check(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    plan_file = write_landed_plan(tmp_path)
    defs = build_definitions(plan_file, "production")
    migrate_and_land(defs, instance)
    plan = load_plan(plan_file)
    name = sorted(landed_files(plan, "videos"))[1]
    landing = plan.dataset("videos").landing
    assert landing is not None and landing.bucket is not None
    open_landing_store(plan, landing.bucket).put(name, b"x")
    bad_shard = shard_of(name.encode(), SHARDS["videos"])

    result = land_partition(defs, instance, "videos", bad_shard)

    check = landed_verdict(result)
    assert not check.passed
    print(check.metadata)
    print(result.success)


def test_a_plan_without_landing_has_no_landed_assets(tmp_path: Path) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")

    keys = {key.path[-1] for key in defs.resolve_all_asset_keys()}

    assert not any(k.endswith("_landed") for k in keys)
    assert all(LANDED_CHECK != c.name for c in defs.resolve_asset_graph().asset_check_keys)
