"""The landed assets, through Dagster's own test API: each dataset's landed copy, partitioned by
shard behind a blocking check that reads the digest from the landing itself; the dataset jobs
land what they write; the cutover gate waits for landing. Datasets land into folders."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetChecksDefinition,
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

from migrator.plan.model import Plan, load_plan
from migrator.sharding import shard_of
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.wiring import open_landing_store
from pipelines import build_definitions
from pipelines.landing import LANDED_CHECK
from tests.pipelines import change_profiles, source_records, write_demo_shaped_plan
from tests.pipelines.test_assets import asset_at, metadata, run_partition
from tests.pipelines.test_cutover_readiness import gate, mismatched, verdict
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
# No database answers here: a dry run must land the table's records somewhere else.
UNSET_URL = "TEST_LANDING_URL_NEVER_SET"
TABLE_DATASETS = LANDED_DATASETS.replace(
    "{bucket: {kind: local, path: landed/user_profiles}}",
    f"{{table: {{url_env: {UNSET_URL}, name: user_profiles}}}}",
)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def write_landed_plan(root: Path, datasets: str = LANDED_DATASETS) -> Path:
    """root/plan.yaml (plan "test"): both datasets land into folders under root/landed."""
    write_profiles(root / "data" / "user_profiles", PROFILES, files=2)
    write_objects(root / "data" / "videos", VIDEO_SIZES)
    return write_plan(root, datasets=datasets)


def landed_checks(defs: Definitions, dataset: str) -> AssetChecksDefinition:
    name = f"test__{dataset}_landed_proof"
    found = [c for c in defs.asset_checks or [] if isinstance(c, AssetChecksDefinition)]
    return next(c for c in found if c.node_def.name == name)


def land_partition(
    defs: Definitions, instance: DagsterInstance, dataset: str, shard: int
) -> ExecuteInProcessResult:
    """One shard partition of a landed asset with its check, as the UI launches it."""
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


SYNC = {"migrator/mode": "sync"}  # shard runs of the sync job: after the bulk, each syncs


def migrate(defs: Definitions, instance: DagsterInstance, *, dry_run: bool = False) -> None:
    """Every dataset partition (a bulk, or a sync), behind its integrity checks."""
    for dataset, shards in SHARDS.items():
        config = {"ops": {f"test__{dataset}": {"config": {"dry_run": dry_run}}}}
        for shard in range(shards):
            result = run_partition(defs, instance, dataset, shard, run_config=config, tags=SYNC)
            assert result.success, f"{dataset}[{shard}] failed"


def land(defs: Definitions, instance: DagsterInstance) -> list[dict[str, Any]]:
    """Every landed partition, each behind its passing check; their metadata."""
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


def landed_files(store: ObjectStore) -> dict[str, bytes]:
    return {o.key: store.get(o.key) for o in store.list()}


def landing_store(plan: Plan, dataset: str) -> ObjectStore:
    landing = plan.dataset(dataset).landing
    assert landing is not None and landing.bucket is not None
    return open_landing_store(plan, landing.bucket)


def source_objects(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def records_in(files: dict[str, bytes]) -> Counter[bytes]:
    seen: Counter[bytes] = Counter()
    for data in files.values():
        seen.update(split_records(data, csv_quotes=False))
    return seen


def assert_landed_equals_source(root: Path, plan: Plan) -> None:
    assert landed_files(landing_store(plan, "videos")) == source_objects(root / "data/videos")
    landed = records_in(landed_files(landing_store(plan, "user_profiles")))
    assert landed == source_records(root / "data" / "user_profiles")


def test_every_shard_lands_with_its_numbers_and_its_check_passes(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    plan_file = write_landed_plan(tmp_path)
    defs = build_definitions(plan_file, "production")
    migrate(defs, instance)

    numbers = land(defs, instance)

    for n in numbers:
        assert (n["generation"], n["generations_applied"], n["dry_run"]) == (1, 1, False)
    profiles = [n for n in numbers if n["dataset"] == "user_profiles"]
    videos = [n for n in numbers if n["dataset"] == "videos"]
    assert [n["shards"] for n in profiles] == ["0", "1"]
    assert [n["shards"] for n in videos] == ["0", "1", "2"]
    assert sum(n["records"] for n in profiles) == PROFILES
    assert sum(n["objects"] for n in videos) == len(VIDEO_SIZES)
    assert sum(n["bytes"] for n in videos) == sum(VIDEO_SIZES)
    assert all(n["objects"] == 0 for n in profiles) and all(n["records"] == 0 for n in videos)
    assert_landed_equals_source(tmp_path, load_plan(plan_file))

    again = land(defs, instance)  # landed already: a rerun applies nothing, and still passes
    assert all(n["generations_applied"] == 0 for n in again)


def test_the_dataset_jobs_land_what_they_write(tmp_path: Path, instance: DagsterInstance) -> None:
    defs = build_definitions(write_landed_plan(tmp_path), "production")
    for job in ("full_migration_videos", "incremental_sync_videos"):
        assert defs.resolve_job_def(job).asset_layer.selected_asset_keys == {
            AssetKey(["test", "videos"]),
            AssetKey(["test", "videos_landed"]),
        }

    result = defs.resolve_job_def("full_migration_videos").execute_in_process(
        instance=instance, partition_key="1", raise_on_error=False
    )

    assert result.success
    assert metadata(result, "test__videos")["shard"] == 1
    landed = metadata(result, "test__videos_landed")
    assert (landed["shards"], landed["generation"]) == ("1", 1)
    assert landed["objects"] == sum(
        1 for name in source_objects(tmp_path / "data/videos") if shard_of(name.encode(), 3) == 1
    )
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks[LANDED_CHECK].passed and checks[LANDED_CHECK].partition == "1"


def test_landed_batches_follow_the_dataset_asset(tmp_path: Path) -> None:
    # One backfill policy for a job over both: else Dagster falls back to a run per shard.
    defs = build_definitions(write_landed_plan(tmp_path), "production", shards_per_run=2)
    batched = BackfillPolicy.multi_run(max_partitions_per_run=2)
    assert asset_at(defs, "videos").backfill_policy == batched
    assert asset_at(defs, "videos_landed").backfill_policy == batched


def test_a_landed_object_changed_behind_landings_back_fails_its_shards_check_and_the_gate(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    plan_file = write_landed_plan(tmp_path)
    defs = build_definitions(plan_file, "production")
    migrate(defs, instance)
    land(defs, instance)
    plan = load_plan(plan_file)
    name = sorted(source_objects(tmp_path / "data/videos"))[1]
    landing_store(plan, "videos").put(name, b"x")  # no migrator metadata: someone else's write
    bad_shard = shard_of(name.encode(), SHARDS["videos"])

    result = land_partition(defs, instance, "videos", bad_shard)

    check = landed_verdict(result)
    assert not check.passed and check.partition == str(bad_shard)
    assert check.metadata["mismatched"].value == 1
    shown: list[str] = check.metadata["lagging_or_changed"].value  # type: ignore[assignment]
    (why,) = shown
    assert why.startswith(f"shard {bad_shard} ") and repr(name) in why
    assert not result.success  # the blocking check fails its step
    for shard in set(range(SHARDS["videos"])) - {bad_shard}:
        assert landed_verdict(land_partition(defs, instance, "videos", shard)).passed

    closed = verdict(gate(defs, instance))
    assert not closed.passed
    (problem,) = mismatched(closed)
    assert (problem["dataset"], problem["shard"]) == ("videos", bad_shard)
    assert repr(name) in problem["landing_problem"] and repr(name) in problem["problem"]
    assert problem["source_digest"] == problem["destination_digest"]  # the archive is right


def test_the_gate_is_closed_while_a_sync_is_not_landed_and_opens_once_it_is(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    plan_file = write_landed_plan(tmp_path)
    defs = build_definitions(plan_file, "production")
    migrate(defs, instance)
    land(defs, instance)
    assert verdict(gate(defs, instance)).passed
    change_profiles(tmp_path / "data" / "user_profiles")
    for i in range(4):
        (tmp_path / "data" / "videos" / f"new {i}.mp4").write_bytes(os.urandom(500 + i))

    migrate(defs, instance)  # the sync, without landing it

    lagging = verdict(gate(defs, instance))
    assert not lagging.passed
    problems = mismatched(lagging)
    assert {p["dataset"] for p in problems} == set(SHARDS)
    for p in problems:  # the archive caught up with the source; the landing did not
        assert p["source_digest"] == p["destination_digest"]
        assert p["problem"] == p["landing_problem"]
        assert p["problem"].startswith("landing lags or differs")

    numbers = land(defs, instance)

    assert {n["generation"] for n in numbers} == {2}
    assert verdict(gate(defs, instance)).passed
    assert_landed_equals_source(tmp_path, load_plan(plan_file))

    # A sync by the dataset jobs lands as it goes: the gate opens at its end.
    (tmp_path / "data" / "videos" / "new 0.mp4").unlink()
    for shard in range(SHARDS["videos"]):
        run = defs.resolve_job_def("incremental_sync_videos").execute_in_process(
            instance=instance, partition_key=str(shard), raise_on_error=False
        )
        assert run.success and run.asset_materializations_for_node("test__videos_landed")
    assert verdict(gate(defs, instance)).passed
    assert_landed_equals_source(tmp_path, load_plan(plan_file))


def test_a_dry_run_lands_into_the_stand_ins_folder_never_the_plans_landing(
    tmp_path: Path, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UNSET_URL, raising=False)
    plan_file = write_landed_plan(tmp_path, TABLE_DATASETS)
    defs = build_definitions(plan_file, "production")
    migrate(defs, instance, dry_run=True)

    # The landed runs are given no config: they follow where their shards were written.
    numbers = land(defs, instance)

    assert all(n["dry_run"] is True for n in numbers)
    assert not (tmp_path / "landed").exists()
    stand_in = tmp_path / "state" / "dagster-dry-run" / "landed"
    videos = landed_files(LocalStore(stand_in / "videos"))
    assert videos == source_objects(tmp_path / "data/videos")
    # The table (its database out of reach) stands in as one records file per shard.
    profiles = landed_files(LocalStore(stand_in / "user_profiles"))
    assert len(profiles) == SHARDS["user_profiles"]
    assert records_in(profiles) == source_records(tmp_path / "data" / "user_profiles")


def test_a_plan_without_landing_has_no_landed_assets(tmp_path: Path) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")

    keys = {key.path[-1] for key in defs.resolve_all_asset_keys()}

    assert keys == {
        "user_profiles_routing",
        "user_profiles",
        "videos",
        "migration_complete",
        "cutover_readiness",
        "migration_overview",
    }
    assert not any("landed" in c.node_def.name for c in defs.asset_checks or [])
    for job in ("full_migration_videos", "incremental_sync_user_profiles"):
        selected = defs.resolve_job_def(job).asset_layer.selected_asset_keys
        assert {key.path[-1] for key in selected} == {job.split("_", 2)[-1]}
    cutover = defs.resolve_asset_graph().get(AssetKey(["test", "cutover_readiness"]))
    assert {key.path[-1] for key in cutover.parent_keys} == {"user_profiles", "videos"}
