"""`migrator run`: route, chunk, encode, store and commit every dataset of a plan, resumably.

MigrationRun orchestrates; the pieces are elsewhere in write/: shard leases (workers.py), the
generation to work in and its commit (generation.py), routing (route.py), each kind's change
set (records_change.py, objects_delta.py), encoded shard by shard through a ShardWriter
(encoding.py for records).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from migrator.errors import StateError, UsageError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, load_or_create_keyring
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.read.chain import check_destination_layout
from migrator.read.freshness import find_rollbacks
from migrator.repository.names import generation_prefix, shard_prefix, spool_dir
from migrator.sources.base import Source
from migrator.sources.factory import open_source
from migrator.state.db import StateDB
from migrator.state.leases import LeaseKeeper, process_started_at
from migrator.stores.base import ObjectStore
from migrator.write.committer import COMMIT_BATCH
from migrator.write.encoding import write_records
from migrator.write.generation import (
    BULK_GENERATION,
    commit_generation,
    refuse_while_repairing,
    working_generation,
)
from migrator.write.objects_delta import write_objects
from migrator.write.reports import DatasetReport, ProgressSink, RouteReport, RunReport
from migrator.write.route import RecordsSpec, routing_processes
from migrator.write.routed_shards import RoutedShards
from migrator.write.routing import Routing
from migrator.write.scope import encode_workers
from migrator.write.stage import WriteStage
from migrator.write.upload import abort_orphaned_uploads
from migrator.write.workers import ShardClaims

# COMMIT_BATCH is looked up in this module as a run uses it, so setting it here (as tests do)
# changes what a run does; routing looks up route.routing_processes the same way.
__all__ = [
    "BULK_GENERATION",
    "COMMIT_BATCH",
    "DatasetReport",
    "MigrationRun",
    "ProgressSink",
    "RunReport",
    "routing_processes",
]


class MigrationRun(WriteStage):
    """One plan's run against one store, key provider and state store (all injected).

    The first run of a dataset is its bulk copy (generation 1); each later run is an
    incremental sync: a new generation holding, per changed shard, the records and objects that
    changed and tombstones for those removed. A generation becomes visible to restore when its
    generation record is stored, after every shard of it is complete.
    """

    def __init__(
        self,
        plan: Plan,
        store: ObjectStore,
        provider: KeyProvider,
        state: StateDB,
        progress: ProgressSink | None = None,
    ) -> None:
        super().__init__(plan, store, provider, state, progress, workers=encode_workers(plan))
        self.open_source: Callable[[DatasetPlan], Source] = open_source
        self.worker_id: str | None = None  # the lease owner; None: this process's identity
        self.bytes_routed = 0  # source bytes this run's routing read
        self._routings: dict[tuple[str, int], Routing] = {}
        self._routed: dict[tuple[str, int], RoutedShards] = {}

    def route(
        self, dataset: str, tasks: set[int] | None = None, *, cohort_since: float | None = None
    ) -> RouteReport:
        """Only route a records dataset (a routing step of its own, as Dagster runs it): list
        its working generation once, route `tasks` of it (all when None, none when empty:
        just list), and finish routing once every task is routed. Encoding is run's.
        `cohort_since`: when the sync this router belongs to was asked for; a generation
        opened since and committed already is that sync's, and no new one is opened."""
        ds = self.plan.dataset(dataset)
        if ds.kind is not DatasetKind.RECORDS:
            raise UsageError(f"dataset {dataset} holds objects: only records are routed")
        keeper = LeaseKeeper(self.state, self.plan.lease_seconds, self.worker_id)
        self.guard.keeper = keeper
        try:
            with self.state.lock(f"{ds.name}.datakey"):
                keyring = load_or_create_keyring(self.store, self.provider, self.plan.name, ds.name)
            self.state.bind_dataset_key(ds.name, keyring.first)
            row = working_generation(self.plan, self.state, ds, cohort_since=cohort_since)
            gen = row.generation
            if row.committed:  # the sync this router was started for is done already
                return RouteReport(ds.name, gen, 0, 0, 0, 0, True)
            routing = self.routing(ds, gen)
            read_before = routing.bytes_read
            routing.route(tasks)
            complete = not routing.pending()
            if complete:
                routing.finish(keyring.sealing_key(gen), self.store)
            table = routing.table()
            self.bytes_routed += routing.bytes_read - read_before
            return RouteReport(
                ds.name,
                gen,
                len(table.tasks),
                len(table.files),
                len(table.routed_here()),
                routing.bytes_read - read_before,
                complete,
            )
        finally:
            keeper.close()
            keeper.release_all()

    def run(
        self,
        only: set[str] | None = None,
        shards: set[int] | None = None,
        *,
        worker: bool = False,
        claim: int | None = None,
    ) -> RunReport:
        """Every dataset (or `only` these), every shard (or only `shards`: one Dagster
        partition). Shards are leased in the state store: two runs never work one shard at once.

        By default a run leases all its shards, waiting for any another run holds, and then
        works them: an hourly sync overrunning into the next makes the later one wait, then sync
        anew. With `worker`, many processes (on many machines, over a shared state store) share
        one generation: each claims `claim` free shards at a time, works them and claims more;
        a shard whose worker died is taken over once its lease lapses, from its last committed
        chunk; whoever completes the last shard commits the generation."""
        started = time.monotonic()
        report = RunReport(self.plan.name, self.store.describe())
        keeper = LeaseKeeper(self.state, self.plan.lease_seconds, self.worker_id)
        self.guard.keeper = keeper
        claims = ShardClaims(self.plan, self.state, keeper)
        # A sync on top of a rolled-back destination would bury the generations it lost.
        # (A dataset the state store knows no generation of has nothing to lose: no listing.)
        for ds in self.plan.datasets:
            if (not only or ds.name in only) and self.state.generations(ds.name):
                refuse_while_repairing(self.state, ds.name)
                for rollback in find_rollbacks(self.store, ds.name, state=self.state, head=None):
                    raise rollback.error()
        try:
            for ds in self.plan.datasets:
                if only and ds.name not in only:
                    continue
                if shards is not None and (bad := [s for s in shards if not 0 <= s < ds.shards]):
                    raise UsageError(f"dataset {ds.name} has shards 0..{ds.shards - 1}, not {bad}")
                t0 = time.monotonic()
                # Every run and worker of the plan must agree on one data key.
                with self.state.lock(f"{ds.name}.datakey"):
                    keyring = load_or_create_keyring(
                        self.store, self.provider, self.plan.name, ds.name
                    )
                self.state.bind_dataset_key(ds.name, keyring.first)  # names, digests: sealed
                self.open_ledger(ds.name, keyring.first, keyring.current).check_known()
                if ds.kind is DatasetKind.RECORDS:  # a sync keys records as the chains it extends
                    check_destination_layout(self.store, self.plan.name, ds, keyring)
                selected = sorted(range(ds.shards) if shards is None else shards)
                if worker:
                    dr = self._work_as_worker(
                        ds, keyring, selected, claim, process_started_at(), claims
                    )
                else:
                    dr = self._work_exclusively(ds, keyring, selected, shards, claims)
                dr.seconds = time.monotonic() - t0
                report.datasets.append(dr)
        except BaseException:
            keeper.close()
            with contextlib.suppress(StateError):  # the first error is the one to report
                keeper.release_all()
            raise
        keeper.close()
        keeper.release_all()
        report.seconds = time.monotonic() - started
        return report

    def _work_exclusively(
        self,
        ds: DatasetPlan,
        keyring: Keyring,
        selected: list[int],
        shards: set[int] | None,
        claims: ShardClaims,
    ) -> DatasetReport:
        """Lease every selected shard (in shard order, so runs never deadlock), then work."""
        claims.wait_for_all(ds.name, selected)
        row = working_generation(self.plan, self.state, ds)
        gen = row.generation
        key = self._sealing_key(ds, keyring, gen)
        dr = DatasetReport(ds.name, ds.kind, ds.shards, generation=gen)
        dr.generation_kind = str(row.kind)
        prefixes = (
            [generation_prefix(ds.name, gen)]
            if shards is None
            else [shard_prefix(ds.name, gen, s) for s in selected]
        )
        for p in prefixes:
            dr.orphaned_uploads += abort_orphaned_uploads(self.store, self.state, p)
        self._work(ds, gen, key, dr, None if shards is None else set(selected))
        dr.committed = self._commit_generation(ds, gen, key)
        claims.release(ds.name, selected)
        return dr

    def _work_as_worker(
        self,
        ds: DatasetPlan,
        keyring: Keyring,
        selected: list[int],
        claim: int | None,
        started_at: float,
        claims: ShardClaims,
    ) -> DatasetReport:
        row = working_generation(self.plan, self.state, ds, cohort_since=started_at)
        if row.committed:  # this worker's cohort already finished the generation it belongs to
            dr = DatasetReport(ds.name, ds.kind, ds.shards, generation=row.generation)
            dr.generation_kind, dr.committed = str(row.kind), True
            return dr
        gen = row.generation
        key = self._sealing_key(ds, keyring, gen)
        dr = DatasetReport(ds.name, ds.kind, ds.shards, generation=gen)
        dr.generation_kind = str(row.kind)
        batch_size = claims.batch_size(ds.shards, claim)
        order = claims.order(selected)
        while True:
            done = self.state.complete_shards(ds.name, gen)
            pending = [s for s in order if s not in done]
            if not pending:
                break
            batch = claims.claim_batch(ds.name, gen, pending, batch_size)
            if not batch:  # the rest is leased to others: wait for them, or for a lapse
                claims.pause()
                continue
            claims.progressed()
            for shard in batch:
                prefix = shard_prefix(ds.name, gen, shard)
                dr.orphaned_uploads += abort_orphaned_uploads(self.store, self.state, prefix)
            self._work(ds, gen, key, dr, set(batch))
            claims.release(ds.name, batch)
        dr.committed = self._commit_generation(ds, gen, key)
        return dr

    def _sealing_key(self, ds: DatasetPlan, keyring: Keyring, gen: int) -> DataKey:
        """The key the signed keyring names for generation `gen` (never object metadata, which
        anyone who can write the destination can set); the ledger records chunks under it."""
        key = keyring.sealing_key(gen)
        self.ledgers[ds.name].key_id = key.key_id.hex()
        return key

    def _commit_generation(self, ds: DatasetPlan, gen: int, key: DataKey) -> bool:
        """Store the generation record once every shard of the generation is complete: from
        then on restore sees it. True when it is (now or before) committed."""
        with self.state.lock(f"{ds.name}.generation"):
            return commit_generation(self.plan, ds, gen, self.store, self.state, key)

    def _work(
        self, ds: DatasetPlan, gen: int, key: DataKey, dr: DatasetReport, only: set[int] | None
    ) -> None:
        scope = self.write_scope(ds, gen, key, dr, self.workers, COMMIT_BATCH)
        done = scope.complete_shards()
        selected = range(ds.shards) if only is None else sorted(only)
        todo = [s for s in selected if s not in done]
        if ds.kind is DatasetKind.RECORDS:
            if not todo:
                scope.count_committed(selected)
                return
            routing = self.routing(ds, gen)
            read_before = routing.bytes_read
            routing.route()
            cp = routing.finish(key, self.store)
            self.bytes_routed += routing.bytes_read - read_before
            extra = {}
            if cp.csv_header is not None:
                extra["csv_header"] = cp.csv_header.decode("utf-8", "surrogateescape")
            scope.count_committed([s for s in selected if s in done])
            folder = spool_dir(self.plan.state_dir, ds.name, gen)
            routed = self._routed.get((ds.name, gen))
            if routed is None or routed.table is not routing.table():
                routed = RoutedShards(
                    self.plan.state_dir, ds.name, routing.table(), folder, routing.reroute
                )
                self._routed[(ds.name, gen)] = routed
            write_records(scope, routed, folder, todo, extra)
        else:
            scope.count_committed([s for s in selected if s in done], count_input=True)
            if todo:
                write_objects(scope, self.open_source(ds), todo)

    def routing(self, ds: DatasetPlan, gen: int) -> Routing:
        """This worker's part in routing generation `gen` of a records dataset."""
        records = ds.records
        spec = RecordsSpec(
            dataset=ds.name,
            generation=gen,
            fmt=records.format,
            key_field=records.key,
            shards=ds.shards,
            source=self.open_source(ds),
            csv_delimiter=records.csv_delimiter,
            csv_header=self.state.last_csv_header(ds.name, gen),
            on_bad_record=records.on_bad_record,
            max_record_size=self.plan.max_record_size(ds),
        )
        keeper = self.guard.keeper
        if keeper is None:
            raise StateError("routing needs the run's leases")
        known = self._routings.get((ds.name, gen))
        if known is not None and known.keeper is keeper:
            return known  # a worker's later shard batches: the routing it took part in
        routing = Routing(self.plan, ds, spec, self.state, keeper, self.progress)
        self._routings[(ds.name, gen)] = routing
        return routing
