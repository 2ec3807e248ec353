"""The source-change sensor, and the sensor that starts a sync's shard runs once routing is done.

What tells the sensor the source changed, and why:
- an S3 source whose bucket sends its event notifications to a queue of the migration's own
  (`source_events`, MIGRATOR_SOURCE_EVENTS): the events (migrator.sources.events). A tick costs
  a few SQS requests whatever the bucket holds, where a listing of tens of millions of objects
  takes hours; the events' digest is the run key, so the same events never ask for a second
  sync, and they are deleted from the queue once a sync is asked for.
- any other source: the digest of its listing (name, size and version of every file); the
  digest is the run key, so the same listing never asks for a second sync. A local
  folder is listed with stat calls, cheap enough; an S3 bucket without a queue, or an Azure
  container (whose equivalent, Event Grid, Azurite does not deliver), pays a listing a tick:
  keep MIGRATOR_SENSOR_INTERVAL long there and let the hourly schedule do the syncing.
Either way, nothing is looked at while a generation of the dataset is being written (its sync
listed the source when it began, and runs asked for now would only join it): the first tick
after its commit looks, and finds the change still there (the cursor did not move, the events
stayed queued). The schedule is the backstop for anything a sensor misses: each sync lists the
source and finds every change by itself.

A sensor's first tick (no cursor yet): a listing sensor compares its listing with what the
latest committed generation read (migrator.read.source_seen): the same, it launches nothing
("source unchanged since generation G") and keeps the listing as its cursor; different, or not
comparable, it asks for a sync, so a change made before the sensor was turned on is not missed.
Before any committed generation it asks for a sync at once, as for any change: that first sync
is the bulk copy. An events sensor needs no seeding: an empty queue launches nothing, and events
queued before it was turned on are changes (at worst of objects the last generation read
already: one sync that finds nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_status_sensor,
    sensor,
)

from migrator import MigratorError, list_source
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.read.source_seen import (
    ListingDigests,
    cursor_digest,
    digest_listing,
    last_generation_seen,
    what_changed,
)
from migrator.sources.events import EventQueue
from pipelines.assets import SYNC_TAG, python_name, routing_key
from pipelines.resources import PlanResource, TargetResource
from pipelines.schedules import shard_requests, sync_requests

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

LISTING_INTERVAL_SECONDS = 300  # each tick lists the whole source: keep it rare
EVENTS_INTERVAL_SECONDS = 30  # each tick reads a queue
ROUTED_INTERVAL_SECONDS = 10  # reads the event log only


def source_digest(ds: DatasetPlan) -> str:
    """sha256 of the source's listing: every object's name, size and version, in name order."""
    return cursor_digest(list_source(ds))


def source_sensor(
    spec: Plan,
    ds: DatasetPlan,
    job: UnresolvedAssetJobDefinition,
    *,
    routers: int,
    shards_per_run: int,
    queue_url: str | None = None,
    interval: int | None = None,
) -> SensorDefinition:
    """`job` is the one a sync starts with: the routers' for records, the shards' for objects."""
    signal = "the change events" if queue_url else "the listing"
    default = EVENTS_INTERVAL_SECONDS if queue_url else LISTING_INTERVAL_SECONDS

    @sensor(
        job=job,
        name=f"{python_name(ds.name)}_source_changed",
        minimum_interval_seconds=interval or default,
        description=f"{ds.name}: a sync whenever {signal} of its source says it changed.",
    )
    def on_source_change(
        context: SensorEvaluationContext, plan: PlanResource, target: TargetResource
    ) -> SensorResult | SkipReason:
        loaded = plan.load()

        def writing() -> SkipReason | None:
            try:
                busy = target.open_generation(loaded, ds.name)
            except MigratorError as exc:
                return SkipReason(f"{ds.name}: cannot read the state store: {exc}")
            if busy is None:
                return None
            return SkipReason(
                f"{ds.name}: generation {busy} is being written; a change is asked for once"
                " it is committed"
            )

        def seeded(now: ListingDigests) -> SensorResult | None:
            """A first tick's answer when the source lists as the latest committed generation
            read it: nothing launched, the listing kept as the cursor. None (ask for a sync)
            before any generation, when it differs, or when the two cannot be compared."""
            try:
                if target.committed_generation(loaded, ds.name) is None:
                    context.log.info(f"{ds.name}: no generation yet: the first sync is the bulk")
                    return None
                with target.open(loaded) as opened:  # the dataset's key: the state is sealed
                    conn = opened.connection
                    seen = None
                    if conn.state is not None:
                        seen = last_generation_seen(
                            conn.state, conn.store, conn.keys, conn.plan.name, ds
                        )
            except (MigratorError, Failure) as exc:
                context.log.warning(f"{ds.name}: not compared with the last generation: {exc}")
                return None
            if seen is None:
                return None
            if (changed := what_changed(seen, now)) is not None:
                context.log.info(f"{ds.name}: {changed}: a sync is asked for")
                return None
            reason = f"{ds.name}: source unchanged since generation {seen.generation}"
            return SensorResult(skip_reason=SkipReason(reason), cursor=now.cursor)

        # Asked before looking (no listing for nothing) and after (one may have begun since).
        if (wait := writing()) is not None:
            return wait
        queue = EventQueue(ds, queue_url) if queue_url else None
        batch = None
        first: ListingDigests | None = None
        try:
            if queue is None and context.cursor is None:
                first = digest_listing(list_source(ds), ds)
                change = first.cursor
            elif queue is None:
                change = source_digest(ds)
                if change == context.cursor:
                    return SkipReason(f"{ds.name}: source unchanged")
            else:
                batch = queue.receive()
                if not batch.changes:
                    queue.acknowledge(batch)  # tags, ACLs, S3's test event: nothing to sync
                    return SkipReason(f"{ds.name}: no change events")
                change = batch.key()
        except MigratorError as exc:
            return SkipReason(f"cannot read {signal} of the source of {ds.name}: {exc}")
        if (wait := writing()) is not None:
            return wait
        if first is not None and (unchanged := seeded(first)) is not None:
            return unchanged
        requests = sync_requests(spec, ds, change, routers, shards_per_run)
        if queue is not None and batch is not None:
            try:
                queue.acknowledge(batch)
            except MigratorError as exc:  # they come back: at worst one more sync, empty
                context.log.warning(f"{ds.name}: change events not deleted: {exc}")
        return SensorResult(run_requests=requests, cursor=change)

    return on_source_change


def routed(
    instance: DagsterInstance, run_id: str, spec: Plan, ds: DatasetPlan
) -> dict[str, object]:
    """The routing materialization's metadata a router run recorded ({} if none)."""
    key = routing_key(spec, ds)
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        event = entry.asset_materialization
        if event is not None and event.asset_key == key:
            return {name: value.value for name, value in event.metadata.items()}
    return {}


def routed_sensor(
    spec: Plan,
    ds: DatasetPlan,
    routers_job: UnresolvedAssetJobDefinition,
    shards_job: UnresolvedAssetJobDefinition,
    shards_per_run: int,
) -> RunStatusSensorDefinition:
    """On by default: without it, a sync of a records dataset would route and stop there. A
    completion it missed (stopped, or the daemon down) is made good by the next sync's routers,
    which find the open generation routed and say so again."""
    if ds.kind is not DatasetKind.RECORDS:
        raise ValueError(f"dataset {ds.name} holds objects: nothing is routed")

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name=f"{python_name(ds.name)}_routed",
        monitored_jobs=[routers_job],
        request_job=shards_job,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=ROUTED_INTERVAL_SECONDS,
        description=f"{ds.name}: a sync's shard runs, once a router reports routing complete.",
    )
    def encode_when_routed(context: RunStatusSensorContext) -> SensorResult | None:
        run = context.dagster_run
        found = routed(context.instance, run.run_id, spec, ds)
        generation = found.get("generation")
        if found.get("routing_complete") is not True or not isinstance(generation, int):
            return None  # its routers are not all done: another one will say so
        # Every router of a sync says "complete" at the end: the run keys make it one request.
        sync = run.tags.get(SYNC_TAG) or run.run_id
        requests = shard_requests(
            spec,
            ds,
            sync,
            shards_per_run,
            key=f"{sync}/g{generation}",
            dry_run=found.get("dry_run") is True,
        )
        return SensorResult(run_requests=requests)

    return encode_when_routed
