"""One asset per dataset of the plan, partitioned by shard (never one partition per chunk).

A partition's materialization is `migrator.run(..., {dataset}, {shard})`: chunks go from the
source straight to the destination; the asset records URIs and numbers, never bytes.
Backfills run one shard per run by default (no BackfillPolicy: each run carries its partition
tag), so each partition's numbers and check verdicts are its own. `shards_per_run` > 1 makes
fewer, bigger runs (`BackfillPolicy.multi_run`, and the syncs' shard batches); those report
their totals on each partition, and Dagster 1.13 keeps their check verdicts per run.

A records dataset's shards depend on every router partition of its routing asset
(pipelines/routing.py): a backfill that selects both runs the routers first. A shard run
started before routing is complete takes part in routing itself (MigrationRun.run), so the
order saves time and is never needed for a correct result.
"""

import time

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Backoff,
    Config,
    DagsterLogManager,
    Jitter,
    MaterializeResult,
    RetryPolicy,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

import migrator
from migrator import ProgressSink
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.sizes import format_size
from pipelines.resources import PlanResource, TargetResource

# Store, key service and state errors are often passing (throttling, a lost connection);
# the backoff spreads retries of many shards out. Bad plans and integrity errors never retry.
SHARD_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


class MigrationConfig(Config):
    dry_run: bool = Field(
        default=False, description="Write to the stand-ins, not the plan's clouds"
    )


def python_name(name: str) -> str:
    """Plan and dataset names may hold '-'; Dagster's group, job and op names may not."""
    return name.replace("-", "_")


def dataset_key(plan: Plan, ds: DatasetPlan) -> AssetKey:
    return AssetKey([plan.name, ds.name])


def landed_key(plan: Plan, ds: DatasetPlan) -> AssetKey:
    """A dataset's landed copy (pipelines/landing.py)."""
    return AssetKey([plan.name, f"{ds.name}_landed"])


def routing_key(plan: Plan, ds: DatasetPlan) -> AssetKey:
    """A records dataset's routing asset (pipelines/routing.py)."""
    return AssetKey([plan.name, f"{ds.name}_routing"])


def shard_partitions(ds: DatasetPlan) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition([str(shard) for shard in range(ds.shards)])


def pool_name(plan: Plan) -> str:
    """One pool per destination: its limit bounds how many shards write there at once."""
    return f"migrator-dest-{plan.name}"


class LoggedProgress(ProgressSink):
    """The engine's progress in the run's log: each phase, then a line every 15 seconds."""

    def __init__(self, log: DagsterLogManager) -> None:
        self.log, self.what = log, ""
        self.total = self.done = 0
        self.started = self.last = 0.0

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        self.what, self.total, self.done = f"{dataset}: {phase}", total_bytes, 0
        self.started = self.last = time.monotonic()
        self.log.info(f"{self.what} {format_size(total_bytes)}")

    def advance(self, nbytes: int) -> None:
        self.done, now = self.done + nbytes, time.monotonic()
        if now - self.last >= 15.0:
            rate, self.last = self.done / (now - self.started) / 1e6, now
            self.log.info(
                f"{self.what} {format_size(self.done)} of {format_size(self.total)}"
                f" ({rate:.1f} MB/s)"
            )


def dataset_asset(spec: Plan, ds: DatasetPlan, shards_per_run: int) -> AssetsDefinition:
    routed = ds.kind is DatasetKind.RECORDS
    every_router = AllPartitionMapping()

    @asset(
        key=dataset_key(spec, ds),
        deps=[AssetDep(routing_key(spec, ds), partition_mapping=every_router)] if routed else [],
        partitions_def=shard_partitions(ds),
        backfill_policy=None
        if shards_per_run == 1
        else BackfillPolicy.multi_run(max_partitions_per_run=shards_per_run),
        retry_policy=SHARD_RETRY_POLICY,
        pool=pool_name(spec),
        group_name=python_name(spec.name),
        kinds={str(ds.kind), str(spec.destination.kind)},
        description=f"{ds.kind} from a {ds.source.kind} source, routed into {ds.shards} shards"
        " (one partition each), encrypted chunk by chunk into the destination.",
    )
    def migrate_shards(
        context: AssetExecutionContext,
        config: MigrationConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> MaterializeResult[None]:
        shards = sorted(int(key) for key in context.partition_keys)
        chosen = dry_run_target if config.dry_run else target
        with chosen.open(plan.load()) as io:
            progress = LoggedProgress(context.log)
            run = migrator.run(io.connection, {ds.name}, shards, progress=progress)
            report = run.datasets[0]
            where = migrator.progress(io.connection)
            uris = [io.object_uri(where.manifest_key(ds.name, shard)) for shard in shards]
            destination, dry_run = io.destination, io.dry_run
        rows = {"dagster/row_count": report.records} if ds.kind is DatasetKind.RECORDS else {}
        manifests = {"manifest_uri": uris[0]} if len(uris) == 1 else {"manifest_uris": uris}
        return MaterializeResult(
            metadata={
                **rows,
                "shards": f"{shards[0]}-{shards[-1]}" if len(shards) > 1 else str(shards[0]),
                "records": report.records,
                "bytes_in": report.bytes_in,
                "bytes_stored": report.bytes_stored,
                "compression_ratio": round(report.compression_ratio, 3),
                "mb_per_s": round(report.bytes_in / max(report.seconds, 1e-9) / 1e6, 2),
                "seconds": round(report.seconds, 3),
                "chunks_written": report.chunks_written,
                "chunks_skipped": report.chunks_skipped,
                "generation": report.generation,
                "generation_kind": report.generation_kind,
                "generation_committed": report.committed,
                "shards_changed": report.shards_changed,
                "removed": report.removed,
                **manifests,
                "destination": destination,
                "dry_run": dry_run,
            }
        )

    return migrate_shards
