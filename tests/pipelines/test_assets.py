"""Shard assets, integrity checks and migration_complete, through Dagster's own test API."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetsDefinition,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    instance_for_test,
    materialize,
)

from migrator.demo.azurite import Azurite
from migrator.demo.motoserver import MotoServer, s3_client
from migrator.repository.names import manifest_key
from pipelines import build_definitions
from pipelines.assets import SHARD_RETRY_POLICY, python_name
from pipelines.checks import MANIFEST_CHECK, READBACK_CHECK
from pipelines.definitions import resources_for
from pipelines.resources import CloudTarget, StandInTarget
from pipelines.routing import DEFAULT_ROUTERS
from tests.pipelines import DEMO_SHAPED_DATASETS, PROFILES, VIDEO_SIZES, write_demo_shaped_plan
from tests.planfiles import azure_destination, flip_bit, s3_destination, write_plan

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SHARDS = {"user_profiles": 4, "videos": 3}


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def asset_at(defs: Definitions, *path: str) -> AssetsDefinition:
    """The asset whose key ends with path."""
    found = [a for a in defs.assets if isinstance(a, AssetsDefinition)]
    return next(a for a in found if a.key.path[-len(path) :] == list(path))


def run_partition(
    defs: Definitions,
    instance: DagsterInstance,
    dataset: str,
    shard: int,
    *,
    also: Sequence[AssetsDefinition] = (),
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """One shard partition of a dataset with its checks (and `also`), as the UI launches it
    (tags {"migrator/mode": "sync"}: as a sync's shard run, which may open a generation)."""
    asset = asset_at(defs, dataset)
    checks = next(c for c in defs.asset_checks if c.node_def.name == f"test__{dataset}_integrity")
    return materialize(
        [asset, checks, *also],
        partition_key=str(shard),
        instance=instance,
        resources=defs.resources,
        run_config=run_config,
        tags=tags,
        raise_on_error=False,
    )


def metadata(result: ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in event.metadata.items()}


def migrate_everything(defs: Definitions, instance: DagsterInstance) -> list[dict[str, Any]]:
    """Every partition of every dataset; returns each run's materialization metadata."""
    numbers = []
    for dataset, shards in SHARDS.items():
        for shard in range(shards):
            result = run_partition(defs, instance, dataset, shard)
            assert result.success, f"{dataset}[{shard}] failed"
            checks: list[AssetCheckEvaluation] = result.get_asset_check_evaluations()
            assert sorted((c.check_name, c.passed, c.partition) for c in checks) == [
                (MANIFEST_CHECK, True, str(shard)),
                (READBACK_CHECK, True, str(shard)),
            ]
            numbers.append({"dataset": dataset, **metadata(result, f"test__{dataset}")})
    return numbers


def test_every_partition_migrates_with_numbers_and_checks_pass(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    complete = asset_at(defs, "migration_complete")
    early = materialize(
        [complete], instance=instance, resources=defs.resources, raise_on_error=False
    )
    assert not early.success  # nothing migrated yet: not complete, and says so
    failure = next(e for e in early.all_events if e.event_type_value == "STEP_FAILURE")
    assert "shards complete: user_profiles: 0 of 4; videos: 0 of 3" in str(
        failure.event_specific_data
    )

    numbers = migrate_everything(defs, instance)

    profiles = [n for n in numbers if n["dataset"] == "user_profiles"]
    videos = [n for n in numbers if n["dataset"] == "videos"]
    assert sum(n["records"] for n in profiles) == PROFILES
    assert sum(n["dagster/row_count"] for n in profiles) == PROFILES
    assert sum(n["bytes_in"] for n in videos) == sum(VIDEO_SIZES)
    for n in numbers:
        assert n["chunks_written"] >= 1 and n["chunks_skipped"] == 0
        assert n["bytes_stored"] > 0 and n["compression_ratio"] > 0 and n["mb_per_s"] > 0
        assert n["dry_run"] is False
        # The URI names the sealed manifest at the destination: a local one is a file.
        assert n["manifest_uri"].startswith(n["destination"])
        assert Path(n["manifest_uri"].removeprefix("local:")).is_file()
    assert profiles[0]["compression_ratio"] > 1.5  # JSON compresses; random video bytes do not

    done = materialize([complete], instance=instance, resources=defs.resources)
    summary = metadata(done, "test__migration_complete")
    assert summary["shards"] == sum(SHARDS.values())
    assert summary["records"] == PROFILES
    assert summary["bytes_moved"] > sum(VIDEO_SIZES) and "KiB" in summary["moved"]
    assert "| videos | objects | 1 | - |" in summary["per_dataset"]


def test_corrupt_chunk_fails_readback_check_and_blocks_migration_complete(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    migrate_everything(defs, instance)
    shard = 0
    chunks = sorted((tmp_path / "dest/t/videos/g000001/s00000/o").rglob("*.mgc"))
    flip_bit(chunks[0], -20)  # inside the ciphertext
    bad_key = chunks[0].relative_to(tmp_path / "dest/t").as_posix()

    # A lone re-run of the shard opens no generation, so the damage stays; read all back.
    result = run_partition(
        defs,
        instance,
        "videos",
        shard,
        also=[asset_at(defs, "migration_complete")],
        run_config={"ops": {"test__videos_integrity": {"config": {"sample": 1.0}}}},
    )

    assert not result.success
    verdicts = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert verdicts[MANIFEST_CHECK].passed  # the manifest is intact and lists every chunk
    readback = verdicts[READBACK_CHECK]
    assert not readback.passed and readback.blocking
    (problem,) = readback.metadata["problems"].value  # type: ignore[attr-defined]
    assert problem["object_key"] == bad_key and problem["error"] == "TamperedError"
    # Blocked, not failed: migration_complete never started in this run.
    assert result.asset_materializations_for_node("test__migration_complete") == []
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "test__migration_complete" not in started


def test_dry_run_config_writes_to_the_stand_in_and_checks_follow_it(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    dry = {"ops": {"test__videos": {"config": {"dry_run": True}}}}

    result = run_partition(defs, instance, "videos", 1, run_config=dry)

    assert result.success
    numbers = metadata(result, "test__videos")
    assert numbers["dry_run"] is True
    stand_in = tmp_path / "state" / "dagster-dry-run" / "dest"
    assert Path(numbers["manifest_uri"].removeprefix("local:")).is_file()
    assert (stand_in / manifest_key("videos", 1, 1)).is_file()
    assert not (tmp_path / "dest").exists()  # the plan's destination was never touched
    assert all(c.passed for c in result.get_asset_check_evaluations())


# The plan's own endpoint answers nothing: only the stand-in can have taken the data.
UNREACHABLE = "http://127.0.0.1:9"


@pytest.mark.integration
def test_a_dry_run_of_an_s3_plan_writes_to_moto(
    tmp_path: Path,
    instance: DagsterInstance,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_demo_shaped_plan(tmp_path)
    destination = s3_destination(UNREACHABLE, "plan-bucket")
    plan = write_plan(tmp_path, datasets=DEMO_SHAPED_DATASETS, destination=destination)
    monkeypatch.setenv("MIGRATOR_DRY_RUN_S3_ENDPOINT", moto_server.endpoint_url)
    defs = build_definitions(plan, "dry-run")

    result = run_partition(defs, instance, "videos", 2)

    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    numbers = metadata(result, "test__videos")
    assert numbers["dry_run"] is True and numbers["destination"] == "s3://plan-bucket/t/"
    s3 = s3_client(moto_server.endpoint_url)
    s3.head_object(Bucket="plan-bucket", Key=f"t/{manifest_key('videos', 1, 2)}")


@pytest.mark.integration
def test_a_dry_run_of_an_azure_plan_writes_to_azurite(
    tmp_path: Path, instance: DagsterInstance, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import ContainerClient

    write_demo_shaped_plan(tmp_path)
    destination = azure_destination(f"{UNREACHABLE}/account", "plan-container")
    plan = write_plan(tmp_path, datasets=DEMO_SHAPED_DATASETS, destination=destination)
    monkeypatch.setenv("MIGRATOR_DRY_RUN_AZURE_CONNECTION_STRING", azurite.connection_string)
    defs = build_definitions(plan, "dry-run")

    result = run_partition(defs, instance, "videos", 2)

    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    assert metadata(result, "test__videos")["destination"].startswith("azure://")
    container = ContainerClient.from_connection_string(azurite.connection_string, "plan-container")
    assert container.get_blob_client(f"t/{manifest_key('videos', 1, 2)}").exists()


def test_a_dry_run_deployment_has_no_way_to_the_real_clouds(tmp_path: Path) -> None:
    plan = str(write_demo_shaped_plan(tmp_path))
    dry = resources_for("dry-run", plan)
    assert isinstance(dry["target"], StandInTarget)
    assert isinstance(dry["dry_run_target"], StandInTarget)
    assert isinstance(resources_for("production", plan)["target"], CloudTarget)
    with pytest.raises(ValueError, match="MIGRATOR_DEPLOYMENT"):
        resources_for("prod", plan)


def test_a_residency_refusal_fails_at_once_without_retries(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    write_demo_shaped_plan(tmp_path)
    datasets = (
        "  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 3}"
    )
    # A local folder is no cloud of the allowed partition: refused before any byte moves.
    plan = write_plan(
        tmp_path, datasets=datasets, extra="residency: {aws_partitions: [aws-us-gov]}"
    )
    defs = build_definitions(plan, "production")

    result = run_partition(defs, instance, "videos", 0)

    assert not result.success
    kinds = [e.event_type_value for e in result.all_events]
    assert "STEP_FAILURE" in kinds and "STEP_UP_FOR_RETRY" not in kinds
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "ResidencyError" in str(failure.event_specific_data)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("plan_file", sorted(MANIFESTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_plan_in_manifests_loads_as_assets(plan_file: Path) -> None:
    from migrator.plan.model import DatasetKind, load_plan

    plan = load_plan(plan_file, check_sources=False)
    defs = build_definitions(plan_file)
    for ds in plan.datasets:
        asset = asset_at(defs, plan.name, ds.name)
        assert asset.partitions_def is not None
        assert asset.partitions_def.get_partition_keys() == [str(s) for s in range(ds.shards)]
        assert asset.op.retry_policy == SHARD_RETRY_POLICY
        assert asset.backfill_policy is None  # a run per shard, tagged with its partition
        batched = asset_at(build_definitions(plan_file, shards_per_run=8), plan.name, ds.name)
        assert batched.backfill_policy == BackfillPolicy.multi_run(max_partitions_per_run=8)
        assert asset.op.pool == f"migrator-dest-{plan.name}"
        assert defs.resolve_job_def(f"full_migration_{ds.name}") is not None
        assert defs.resolve_job_def(f"incremental_sync_{ds.name}") is not None
        if ds.kind is DatasetKind.RECORDS:  # routed first, by router partitions
            routing = asset_at(defs, plan.name, f"{ds.name}_routing")
            assert routing.partitions_def is not None
            assert routing.partitions_def.get_partition_keys() == [
                f"router-{i}" for i in range(DEFAULT_ROUTERS)
            ]
            assert defs.resolve_job_def(f"route_{python_name(ds.name)}") is not None
            (dep,) = asset.specs_by_key[asset.key].deps
            assert dep.asset_key == routing.key


def test_the_default_definitions_are_the_demo_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.definitions

    monkeypatch.delenv("MIGRATOR_PLAN", raising=False)
    monkeypatch.delenv("MIGRATOR_DEPLOYMENT", raising=False)
    defs = importlib.reload(pipelines.definitions).defs

    keys = {tuple(key.path) for key in defs.resolve_all_asset_keys()}
    assert keys == {
        ("demo", "user_profiles_routing"),
        ("demo", "user_profiles"),
        ("demo", "videos"),
        ("demo", "migration_complete"),
        ("demo", "cutover_readiness"),
        ("demo", "migration_overview"),
    }
    # A dry-run deployment (the default) says so in every launchpad: dry_run is true there.
    for asset in (a for a in defs.assets if isinstance(a, AssetsDefinition)):
        assert asset.op.config_schema.as_field().default_value == {"dry_run": True}, asset.key
    production = build_definitions(MANIFESTS / "demo.yaml", "production")
    videos = asset_at(production, "videos").op.config_schema.as_field()
    assert videos.default_value == {"dry_run": False}
