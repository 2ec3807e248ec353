"""A records dataset's routing as an asset of its own, upstream of its shards.

Partitioned by router: `routers` static partitions ("router-0", ...), each a run that takes part
in routing the working generation (migrator.write.fanout.route). Why static routers and not a
partition per routing task or file: tasks are made anew for each generation from the files
that changed, so "task 3" names different files every hour and a dynamic partition per task or
file would pile up by the million with a history that means nothing; and why not "tasks whose
index mod K is b": routers claim tasks under leases as they go, so a slow or dead router's tasks
are taken by the others instead of holding the generation up. A router's materialization says
what it routed (files, bytes, rate) in which generation, and whether routing is complete; the
dataset's shard asset depends on every router partition, and its runs start once routing is
complete (pipelines/sensors.py).
"""

import time

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
)

from migrator.plan.model import DatasetPlan, Plan
from migrator.write import fanout
from pipelines.assets import (
    SHARD_RETRY_POLICY,
    LoggedProgress,
    MigrationConfig,
    config_from,
    python_name,
    routing_key,
)
from pipelines.resources import PlanResource, TargetResource

DEFAULT_ROUTERS = 4
ROUTER_PREFIX = "router-"


def router_partitions(routers: int) -> StaticPartitionsDefinition:
    if routers < 1:
        raise ValueError(f"routers must be at least 1, not {routers}")
    return StaticPartitionsDefinition([f"{ROUTER_PREFIX}{i}" for i in range(routers)])


def routing_asset(
    spec: Plan,
    ds: DatasetPlan,
    routers: int,
    config_type: type[MigrationConfig] = MigrationConfig,
) -> AssetsDefinition:
    @asset(
        key=routing_key(spec, ds),
        partitions_def=router_partitions(routers),
        retry_policy=SHARD_RETRY_POLICY,
        group_name=python_name(spec.name),
        kinds={str(ds.kind), str(ds.source.kind)},
        description=f"Routing of {ds.name}: the source listed once per generation, its new and"
        f" changed files routed by key into {ds.shards} shards by {routers} routers (one"
        " partition each) that claim routing tasks as they go.",
    )
    @config_from(config_type)
    def route_files(
        context: AssetExecutionContext,
        config: MigrationConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> MaterializeResult[None]:
        chosen = dry_run_target if config.dry_run else target
        started = time.monotonic()
        with chosen.open(plan.load()) as io:
            record = context.instance.get_run_record_by_id(context.run_id)
            requested = record.create_timestamp.timestamp() if record is not None else None
            report = fanout.route(
                io.connection,
                ds.name,
                progress=LoggedProgress(context.log),
                requested_at=requested,
            )
            destination, dry_run = io.destination, io.dry_run
        seconds = time.monotonic() - started
        return MaterializeResult(
            metadata={
                "generation": report.generation,
                "routing_complete": report.complete,
                "tasks": report.tasks,
                "files": report.files,
                "files_to_route": report.files_to_route,
                "bytes_routed": report.bytes_routed,
                "mb_per_s": round(report.bytes_routed / max(seconds, 1e-9) / 1e6, 2),
                "seconds": round(seconds, 3),
                "destination": destination,
                "dry_run": dry_run,
            }
        )

    return route_files
