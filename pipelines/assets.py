"""One asset per dataset of the plan, partitioned by shard (never one partition per chunk).

A partition's materialization is `migrator.run(..., {dataset}, {shard})`: chunks go from the
source straight to the destination; the asset records URIs and numbers, never bytes.
Backfills run one shard per run by default (no BackfillPolicy: each run carries its partition
tag). `shards_per_run` > 1 makes fewer, bigger runs (`BackfillPolicy.multi_run`, and the syncs'
shard batches); either way each partition carries its own shard's numbers (read from the state
store, `context.add_asset_metadata(..., partition_key=)`) and its own check verdicts
(pipelines/checks.py), and the run's totals are named as the run's (`run_*`).

A records dataset's shards depend on every router partition of its routing asset
(pipelines/routing.py): a backfill that selects both runs the routers first. A shard run
started before routing is complete takes part in routing itself (MigrationRun.run), so the
order saves time and is never needed for a correct result.
"""

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

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
from migrator import DatasetReport, ProgressSink
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.read.shard_numbers import ShardNumbers, shard_numbers
from migrator.sizes import format_size
from migrator.state.db import StateDB
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


class DryRunDeploymentConfig(MigrationConfig):
    """What the launchpad shows in a dry-run deployment: there every run writes to the
    stand-ins (definitions.resources_for), so the form says so instead of `dry_run: false`."""

    dry_run: bool = Field(
        default=True,
        description="A dry-run deployment (MIGRATOR_DEPLOYMENT): every run writes to the"
        " stand-ins, whatever this says",
    )


def deployment_config(deployment: str) -> type[MigrationConfig]:
    return MigrationConfig if deployment == "production" else DryRunDeploymentConfig


Fn = TypeVar("Fn", bound=Callable[..., Any])


def config_from(config_type: type[MigrationConfig]) -> Callable[[Fn], Fn]:
    """Under @asset: the run config the body's `config` parameter takes is `config_type`
    (Dagster reads it from the annotation; the body sees a MigrationConfig either way)."""

    def annotate(fn: Fn) -> Fn:
        fn.__annotations__["config"] = config_type
        return fn

    return annotate


SYNC_TAG = "migrator/sync"  # the sync a run belongs to: its schedule tick or source change
MODE_TAG = "migrator/mode"  # the job's kind: full, sync, route, verify, ...
LONE_RUN = (
    "a shard run outside a sync opens no generation (it would stay open until every other"
    " shard ran): it reports the shard and its checks run; to sync, use sync_now, the schedule"
    " or a backfill"
)


def starts_sync(tags: Mapping[str, str]) -> bool:
    """Whether a run may open a new generation: one a schedule or sensor requested, one of the
    sync job, or a backfill's (over the partitions an operator chose)."""
    return SYNC_TAG in tags or "dagster/backfill" in tags or tags.get(MODE_TAG) == "sync"


def idle_generation(state: StateDB | None, dataset: str) -> int | None:
    """The latest generation when it is committed and none is open (a run would open one)."""
    latest = state.latest_generation(dataset) if state is not None else None
    return latest.generation if latest is not None and latest.committed else None


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


def shard_metadata(ds: DatasetPlan, own: ShardNumbers, manifest_uri: str) -> dict[str, Any]:
    """A partition's own numbers: numeric for the plots, and the sizes as people read them."""
    records = ds.kind is DatasetKind.RECORDS
    moved: dict[str, Any] = {"records": own.records} if records else {"objects": own.objects}
    if records:
        moved |= {"live_records": own.live_records, "removed_or_replaced": own.tombstones}
    return {
        **({"dagster/row_count": own.live_records} if records else {}),
        "shard": own.shard,
        "shard_status": own.status,
        **moved,
        "bytes_in": own.bytes_in,
        "bytes_stored": own.bytes_stored,
        "size": f"{format_size(own.bytes_in)} read, {format_size(own.bytes_stored)} stored",
        "chunks": own.chunks,
        **(
            {"live_records": own.live_records, "removed_or_replaced": own.tombstones}
            if records
            else {}
        ),
        "manifest_uri": manifest_uri,
    }


def run_metadata(
    report: DatasetReport, shards: list[int], destination: str, dry_run: bool
) -> dict[str, Any]:
    """What the run as a whole did: the same on every partition it wrote, so named as the run's."""
    one = len(shards) == 1
    state = (
        "committed: restore and the cutover gate see it"
        if report.committed
        else f"open: committed when the last of generation {report.generation}'s shards is done"
    )
    return {
        "run_shards": str(shards[0]) if one else f"{shards[0]}-{shards[-1]} ({len(shards)})",
        "generation": report.generation,
        "generation_kind": report.generation_kind,
        "generation_state": state,
        "run_records_written": report.records,
        "run_bytes_in": report.bytes_in,
        "run_replaced": report.replaced,
        "run_removed": report.removed,
        "run_seconds": round(report.seconds, 3),
        "run_rate": f"{format_size(report.bytes_in)} in {report.seconds:.1f} s"
        f" ({report.bytes_in / max(report.seconds, 1e-9) / 1e6:.1f} MB/s)",
        "mb_per_s": round(report.bytes_in / max(report.seconds, 1e-9) / 1e6, 2),
        "compression_ratio": round(report.compression_ratio, 3),
        "chunks_written": report.chunks_written,
        "chunks_skipped": report.chunks_skipped,
        "destination": destination,
        "dry_run": dry_run,
        "mode": "dry run (stand-ins)" if dry_run else "production",
    }


def dataset_asset(
    spec: Plan,
    ds: DatasetPlan,
    shards_per_run: int,
    config_type: type[MigrationConfig] = MigrationConfig,
) -> AssetsDefinition:
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
    @config_from(config_type)
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
            state = io.connection.state
            idle = idle_generation(state, ds.name) if not starts_sync(context.run.tags) else None
            if idle is not None:  # a lone shard run outside a sync: report, open nothing
                context.log.info(f"{ds.name}: generation {idle} is committed; {LONE_RUN}")
                report = DatasetReport(ds.name, ds.kind, ds.shards, generation=idle)
                report.generation_kind, report.committed = "refresh", True
            else:
                progress = LoggedProgress(context.log)
                run = migrator.run(io.connection, {ds.name}, shards, progress=progress)
                report = run.datasets[0]
                state = io.connection.state
            assert state is not None  # migrator.run made it
            own = shard_numbers(state, ds.name, ds.kind, report.generation, shards)
            uris = {s: io.object_uri(own[s].manifest_key) for s in shards}
            destination, dry_run = io.destination, io.dry_run
        # Each partition carries its own shard's numbers, also when a run wrote several.
        for shard in shards:
            context.add_asset_metadata(
                shard_metadata(ds, own[shard], uris[shard]), partition_key=str(shard)
            )
        return MaterializeResult(metadata=run_metadata(report, shards, destination, dry_run))

    return migrate_shards
