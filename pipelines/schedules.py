"""Jobs and the incremental-sync schedule, per dataset, and the runs a sync fans out to.

Dagster runs one partitions definition per job, and every dataset has its own shard count, so
each dataset gets its own jobs. "Materialize all" on the asset graph launches one backfill that
spans every dataset, routers before shards, with `migration_complete` last.

A sync is never one run for a whole dataset. For a records dataset it starts as `routers` runs
of `route_<dataset>`, one per router partition, which list the source once and route its new
and changed files between them; when routing is complete, pipelines/sensors.py requests the
shard runs. An objects dataset has nothing to route: its sync starts as the shard runs. Shard
runs are `incremental_sync_<dataset>` over batches of `shards_per_run` contiguous shards, which
join the generation the sync opened; the last to finish commits it. Each request's run key
names the sync (the schedule's tick, or the change the sensor saw) and the batch, so a sync is
requested once; an interrupted one is resumed by the next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dagster import (
    AssetSelection,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.write.fanout import shard_batches
from pipelines.assets import SYNC_TAG, dataset_key, landed_key, python_name, routing_key
from pipelines.routing import ROUTER_PREFIX

if TYPE_CHECKING:  # what define_asset_job returns; Dagster exports no public name for it
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

DEFAULT_SYNC_CRON = "0 * * * *"
_FULL_MIGRATION = (
    "migrate shard partitions (backfill it for all shards) and check each shard's integrity."
)
_INCREMENTAL_SYNC = (
    "a sync's shard runs: each encodes what changed in its shards since the last generation."
)
_ROUTING = "a sync's routers: the source listed once, its new and changed files routed by key."


def dataset_job(
    spec: Plan, ds: DatasetPlan, job: str, mode: str, description: str
) -> UnresolvedAssetJobDefinition:
    """A job over the dataset's asset, named `job` and the dataset; `mode` tags its runs."""
    # With a landing, the job lands each shard it writes too (pipelines/landing.py).
    keys = [dataset_key(spec, ds)] + ([landed_key(spec, ds)] if ds.landing is not None else [])
    return define_asset_job(
        f"{job}_{python_name(ds.name)}",
        selection=AssetSelection.assets(*keys),
        tags={"migrator/mode": mode},
        description=f"{ds.name}: {description}",
    )


def full_migration_job(spec: Plan, ds: DatasetPlan) -> UnresolvedAssetJobDefinition:
    return dataset_job(spec, ds, "full_migration", "full", _FULL_MIGRATION)


def sync_job(spec: Plan, ds: DatasetPlan) -> UnresolvedAssetJobDefinition:
    return dataset_job(spec, ds, "incremental_sync", "sync", _INCREMENTAL_SYNC)


def routing_job(spec: Plan, ds: DatasetPlan) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        f"route_{python_name(ds.name)}",
        selection=AssetSelection.assets(routing_key(spec, ds)),
        tags={"migrator/mode": "route"},
        description=f"{ds.name}: {_ROUTING}",
    )


def shard_requests(
    spec: Plan,
    ds: DatasetPlan,
    sync: str,
    shards_per_run: int,
    *,
    key: str | None = None,
    dry_run: bool = False,
) -> list[RunRequest]:
    """A sync's shard runs, one per batch; run keys start with `key` (default: `sync`)."""
    run_config: dict[str, Any] = {}
    if dry_run:
        op = dataset_key(spec, ds).to_python_identifier()
        run_config = {"ops": {op: {"config": {"dry_run": True}}}}
    requests = []
    for lo, hi in shard_batches(ds.shards, shards_per_run):
        if lo == hi:
            where, partition, tags = f"shard-{lo}", str(lo), {}
        else:
            where, partition = f"shards-{lo}-{hi}", None
            tags = {
                "dagster/asset_partition_range_start": str(lo),
                "dagster/asset_partition_range_end": str(hi),
            }
        requests.append(
            RunRequest(
                run_key=f"{key or sync}/{where}",
                partition_key=partition,
                tags={SYNC_TAG: sync, **tags},
                run_config=run_config,
            )
        )
    return requests


def sync_requests(
    spec: Plan, ds: DatasetPlan, sync: str, routers: int, shards_per_run: int
) -> list[RunRequest]:
    """The runs that start a sync: a records dataset's routers (its shard runs follow once
    routing is complete), an objects dataset's shard runs."""
    if ds.kind is not DatasetKind.RECORDS:
        return shard_requests(spec, ds, sync, shards_per_run)
    return [
        RunRequest(
            run_key=f"{sync}/{ROUTER_PREFIX}{i}",
            partition_key=f"{ROUTER_PREFIX}{i}",
            tags={SYNC_TAG: sync},
        )
        for i in range(routers)
    ]


def sync_schedule(
    spec: Plan,
    ds: DatasetPlan,
    job: UnresolvedAssetJobDefinition,
    cron: str,
    routers: int,
    shards_per_run: int,
) -> ScheduleDefinition:
    """Every tick starts a sync (or finishes one left open: its runs join that generation)."""
    first = "routers" if ds.kind is DatasetKind.RECORDS else "shard runs"

    @schedule(
        cron_schedule=cron,
        job=job,
        name=f"incremental_sync_{python_name(ds.name)}_schedule",
        execution_timezone="UTC",
        description=f"{ds.name}: a sync at each tick, fanned out to its {first}.",
    )
    def sync_on_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
        tick = context.scheduled_execution_time
        when = tick.strftime("%Y-%m-%dT%H:%M") if tick is not None else "now"
        return sync_requests(spec, ds, f"{ds.name}@{when}", routers, shards_per_run)

    return sync_on_schedule
