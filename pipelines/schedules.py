"""Jobs, the incremental-sync schedule and the source-change sensor, per dataset.

Dagster runs one partitions definition per job, and every dataset has its own shard count, so
each dataset gets its own jobs. "Materialize all" on the asset graph launches one backfill that
spans every dataset, with `migration_complete` last.

Incremental sync is one run over every shard partition: after the bulk generation is
committed, each run is a new generation that writes only what changed (new and changed records
and objects, tombstones for removed ones) into the shards it touched, and commits a generation
record. An interrupted sync is resumed by the next run.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from dagster import (
    AssetSelection,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from migrator import MigratorError, list_source
from migrator.plan.model import DatasetPlan, Plan
from pipelines.assets import dataset_key, python_name

if TYPE_CHECKING:  # what define_asset_job returns; Dagster exports no public name for it
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

DEFAULT_SYNC_CRON = "0 * * * *"
SENSOR_INTERVAL_SECONDS = 300  # each tick lists the whole source: keep it rare
_FULL_MIGRATION = (
    "migrate shard partitions (backfill it for all shards) and check each shard's integrity."
)
_INCREMENTAL_SYNC = (
    "one incremental sync over every shard partition: a new generation of what changed"
    " since the last one."
)


def all_shards(ds: DatasetPlan) -> dict[str, str]:
    """Tags of one run over every shard partition (Dagster's partition-range run)."""
    return {
        "dagster/asset_partition_range_start": "0",
        "dagster/asset_partition_range_end": str(ds.shards - 1),
    }


def dataset_job(
    spec: Plan, ds: DatasetPlan, job: str, mode: str, description: str
) -> UnresolvedAssetJobDefinition:
    """A job over the dataset's asset, named `job` and the dataset; `mode` tags its runs."""
    return define_asset_job(
        f"{job}_{python_name(ds.name)}",
        selection=AssetSelection.assets(dataset_key(spec, ds)),
        tags={"migrator/mode": mode},
        description=f"{ds.name}: {description}",
    )


def full_migration_job(spec: Plan, ds: DatasetPlan) -> UnresolvedAssetJobDefinition:
    return dataset_job(spec, ds, "full_migration", "full", _FULL_MIGRATION)


def sync_job(spec: Plan, ds: DatasetPlan) -> UnresolvedAssetJobDefinition:
    return dataset_job(spec, ds, "incremental_sync", "sync", _INCREMENTAL_SYNC)


def sync_schedule(
    ds: DatasetPlan, job: UnresolvedAssetJobDefinition, cron: str
) -> ScheduleDefinition:
    @schedule(
        cron_schedule=cron,
        job=job,
        name=f"incremental_sync_{python_name(ds.name)}_schedule",
        execution_timezone="UTC",
        description=f"{ds.name}: one sync run over every shard at each tick.",
    )
    def sync_every_shard(context: ScheduleEvaluationContext) -> RunRequest:
        tick = context.scheduled_execution_time
        when = tick.strftime("%Y-%m-%dT%H:%M") if tick is not None else "now"
        return RunRequest(run_key=f"{ds.name}@{when}", tags=all_shards(ds))

    return sync_every_shard


def source_digest(ds: DatasetPlan) -> str:
    """sha256 of the source's listing: every object's name, size and version, in name order."""
    digest = hashlib.sha256()
    for obj in list_source(ds):
        digest.update(f"{obj.name}\0{obj.size}\0{obj.version}\n".encode())
    return digest.hexdigest()


def source_sensor(ds: DatasetPlan, job: UnresolvedAssetJobDefinition) -> SensorDefinition:
    @sensor(
        job=job,
        name=f"{python_name(ds.name)}_source_changed",
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        description=f"{ds.name}: a sync run whenever the source's listing changes.",
    )
    def on_source_change(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        try:
            digest = source_digest(ds)
        except MigratorError as exc:
            return SkipReason(f"cannot list the source of {ds.name}: {exc}")
        if digest == context.cursor:
            return SkipReason(f"{ds.name}: source unchanged")
        # The digest is the run key: the same listing never asks for a second run.
        request = RunRequest(run_key=digest, tags=all_shards(ds))
        return SensorResult(run_requests=[request], cursor=digest)

    return on_source_change
