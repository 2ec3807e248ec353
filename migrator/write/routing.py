"""Routing as a stage of its own: a records source's new and changed files, cut into tasks that
any worker of the plan claims, each routing its files into per-file outputs (routed.py).

The source is listed once per generation, by whichever worker comes first, into the file table
(listing.py); the others read the table. Tasks are leased as shards are: a worker routes a
task nobody holds, waits for one a live worker holds, and takes over one whose worker died. A
routed file's index is its checkpoint, so a task taken over goes on from its first file not yet
routed, and no file is routed twice. Each source byte is read once per generation, by one
worker, whatever the number of workers.

Where routed output lives between the stages: the plan's state_dir, a volume every worker of
the plan mounts (as spools always required). Putting it, encrypted, in the destination instead
would free workers of a shared filesystem, but would write and read every routed byte through
the destination once more: at a petabyte, a second full transfer and its requests, for data
that is deleted an hour later. The README's "Many workers" section says so too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_for
from pathlib import Path

import xxhash

import migrator.write.route as route_io
from migrator.errors import SourceChangedError, SourceError, StateError
from migrator.keys.datakey import DataKey
from migrator.plan.model import DatasetPlan, Plan
from migrator.repository.names import (
    dead_letter_spool_path,
    file_table_path,
    routed_dir,
    routed_file_path,
    spool_dir,
)
from migrator.sources.base import Source, SourceObject
from migrator.sources.listing import list_source_once
from migrator.state.db import StateDB
from migrator.state.leases import LeaseKeeper, dead_on_this_host
from migrator.state.model import RouteCheckpoint
from migrator.stores.base import ObjectStore
from migrator.write import route_pool
from migrator.write.deadletter_seal import store_dead_letters
from migrator.write.listing import (
    FileTable,
    TableFile,
    all_routed,
    build_table,
    last_routed_generation,
    load_table,
    refuse_undecodable_names,
)
from migrator.write.reports import ProgressSink
from migrator.write.route import RecordsSpec, differing_headers
from migrator.write.route_pool import FilePool, route_file_into, routed_in
from migrator.write.routed import RoutedIndex, is_routed, load_index, merge_dead_letters
from migrator.write.workers import FIRST_WAIT

# Listings of one generation a worker makes when files change under it, before it gives up.
RELISTS = 3


def routing_signature(spec: RecordsSpec) -> str:
    """What a file's routed output depends on besides its bytes: a base table routed with
    other settings is not reused (the plan's layout check refuses most such changes anyway)."""
    parts = (
        spec.fmt,
        spec.key_field,
        spec.shards,
        spec.csv_delimiter,
        spec.on_bad_record,
        spec.max_record_size,
    )
    return xxhash.xxh3_64_hexdigest(repr(parts).encode())


def routing_lease(dataset: str, generation: int, version: str) -> str:
    """The lease namespace of the routing tasks of one listing of a generation (a task is
    leased as a shard is)."""
    return f"{dataset}@routing-g{generation}-{version}"


class Routing:
    """One records dataset's routing in one generation, as one worker takes part in it."""

    def __init__(
        self,
        plan: Plan,
        ds: DatasetPlan,
        spec: RecordsSpec,
        state: StateDB,
        keeper: LeaseKeeper,
        progress: ProgressSink,
        *,
        list_source: Callable[[Source], list[SourceObject]] | None = None,
    ) -> None:
        self.plan, self.ds, self.spec, self.state = plan, ds, spec, state
        self.keeper, self.progress = keeper, progress
        self.gen = spec.generation
        self.signature = routing_signature(spec)
        self.folder = routed_dir(plan.state_dir, ds.name, self.gen)
        # Listed in parallel over key ranges where the source can split itself.
        self.list_source = list_source or list_source_once
        self._table: FileTable | None = None
        self._complete: RouteCheckpoint | None = None  # once routing is known complete
        self._done: set[int] = set()
        self.bytes_read = 0  # source bytes this worker routed

    # --- the file table: listed once -------------------------------------------------------

    def table(self) -> FileTable:
        """The generation's file table: listed by the first worker of the generation, read by
        the others and by every later run of it."""
        if self._table is not None:
            return self._table
        path = file_table_path(self.folder)
        table = load_table(path)
        if table is None or table.routing != self.signature:
            with self.state.lock(f"{self.ds.name}.routing"):
                table = load_table(path)
                if table is None or table.routing != self.signature:
                    table = self._list(None)
                    table.save(path)
        self._table = table
        return table

    def _list(self, attempt: FileTable | None) -> FileTable:
        listing = self.list_source(self.spec.source)
        refuse_undecodable_names(listing, self.spec.source, self.ds.name)
        return build_table(self.gen, listing, self._base(), self.signature, attempt=attempt)

    def _list_again(self, stale: FileTable) -> None:
        """A file changed between the listing and its reading: list the generation again
        (unless another worker did already); files still as listed keep what was routed."""
        path = file_table_path(self.folder)
        with self.state.lock(f"{self.ds.name}.routing"):
            table = load_table(path)
            if table is not None and table.version == stale.version:
                fresh = self._list(table)
                if fresh.version != table.version:
                    fresh.save(path)
                table = fresh
        self._table, self._done = table, set()

    def _base(self) -> FileTable | None:
        """The table of the last committed generation whose routing completed, if the state
        store knows it and its routed digests are all still there; else None (diff whole)."""
        gen = last_routed_generation(self.state, self.ds.name, before=self.gen)
        if gen is None:
            return None
        table = load_table(file_table_path(routed_dir(self.plan.state_dir, self.ds.name, gen)))
        if table is None or table.routing != self.signature:
            return None  # routed by other settings: its digests mean something else
        return table if all_routed(self.plan.state_dir, self.ds.name, table) else None

    def _dir(self, gen: int) -> Path:
        return routed_dir(self.plan.state_dir, self.ds.name, gen)

    def _routed(self, f: TableFile) -> bool:
        return is_routed(self._dir(f.origin[0]), f.origin[1])

    def _origin_index(self, f: TableFile) -> RoutedIndex | None:
        return load_index(self._dir(f.origin[0]), f.origin[1])

    # --- routing tasks ---------------------------------------------------------------------

    def pending(self, tasks: Iterable[int] | None = None) -> list[int]:
        """The tasks (of `tasks`, else all) whose files are not all routed yet."""
        table = self.table()
        wanted = range(len(table.tasks)) if tasks is None else tasks
        out = []
        for t in wanted:
            if not 0 <= t < len(table.tasks):
                continue  # a task of an earlier listing of the generation
            if t in self._done:
                continue
            if all(self._routed(table.files[p]) for p in table.tasks[t]):
                self._done.add(t)
            else:
                out.append(t)
        return out

    def route(self, tasks: Iterable[int] | None = None) -> None:
        """Claim and route tasks until every one (or each of `tasks`) is routed: one a live
        worker holds is waited for, a dead worker's is taken over where it stopped. Another
        worker may list the generation again meanwhile: then this one goes on with that
        listing's tasks."""
        relisted = 0
        while True:
            table = self.table()
            try:
                self._route_tasks(table, tasks)
            except SourceChangedError:
                if relisted >= RELISTS:
                    raise  # a file that changes all the time: say which
                relisted += 1
                self._list_again(table)
                tasks = None
                continue
            latest = load_table(file_table_path(self.folder))
            if latest is None or latest.version == table.version:
                return
            self._table, self._done = latest, set()
            tasks = None

    def _route_tasks(self, table: FileTable, tasks: Iterable[int] | None) -> None:
        pending = self.pending(tasks)
        left = sum(table.task_bytes(t) for t in pending)
        self.progress.start(self.ds.name, "routing", left)
        ns = routing_lease(self.ds.name, self.gen, table.version)
        offset = int.from_bytes(xxhash.xxh3_64_digest(self.keeper.owner.encode()), "big")
        workers, budget = self.plan.workers or os.cpu_count() or 1, self.plan.memory_budget // 4
        processes = route_pool.file_processes(left, workers, self.spec.shards, budget)
        with FilePool(self.spec, processes, budget) as pool:
            if pool.parallel:
                self._route_on(pool, table, ns, pending, offset)
                return
        processes = route_io.routing_processes(left, self.plan.workers or 1)
        with route_io.BlockRunner(processes) as runner:
            wait = FIRST_WAIT
            while pending:
                claimed = self._claim(ns, pending, offset)
                if claimed is None:  # the rest is others': brief waits first (their last tasks)
                    time.sleep(wait)
                    wait = min(wait * 2, self.plan.lease_seconds / 4, 1.0)
                else:
                    wait = FIRST_WAIT
                    try:
                        self._route_task(table, claimed, runner)
                    finally:
                        self.keeper.release(ns, [claimed])
                    self._done.add(claimed)
                pending = self.pending(pending)

    def _route_on(
        self, pool: FilePool, table: FileTable, ns: str, pending: list[int], offset: int
    ) -> None:
        """_route_tasks with files routed in `pool`'s processes: tasks are claimed while it has
        room, each released once all its files are routed."""
        running: dict[int, dict[Future[RoutedIndex], TableFile]] = {}
        wait = FIRST_WAIT
        try:
            while pending or running:
                room = pool.capacity > sum(len(files) for files in running.values())
                free = [t for t in pending if t not in running]
                claimed = self._claim(ns, free, offset) if room and free else None
                if claimed is not None:
                    wait = FIRST_WAIT
                    running[claimed] = {}
                    for position in table.tasks[claimed]:
                        f = table.files[position]
                        if not self._routed(f):
                            src = SourceObject(f.name, f.size, f.version)
                            running[claimed][pool.submit(src, f.origin[1], self.folder)] = f
                    if room and len(free) > 1:
                        continue  # room for another task's files
                if running:
                    futures = [fut for files in running.values() for fut in files]
                    finished, _ = wait_for(futures, return_when=FIRST_COMPLETED)
                    for task, files in list(running.items()):
                        for fut in finished & files.keys():
                            routed_in(fut, files[fut].name)
                            size = files.pop(fut).size
                            self.bytes_read += size
                            self.progress.advance(size)
                        if not files:
                            del running[task]
                            self.keeper.release(ns, [task])
                            self._done.add(task)
                elif claimed is None:
                    time.sleep(wait)
                    wait = min(wait * 2, self.plan.lease_seconds / 4, 1.0)
                pending = self.pending(pending)
        finally:
            if running:
                self.keeper.release(ns, list(running))

    def _claim(self, ns: str, pending: list[int], offset: int) -> int | None:
        holders = self.state.lease_holders(ns)
        order = [pending[(offset + i) % len(pending)] for i in range(len(pending))]
        for task in order:
            holder = holders.get(task)
            steal = None
            if holder is not None and holder[0] != self.keeper.owner and holder[1] > 0:
                if not dead_on_this_host(holder[0]):
                    continue  # a live worker routes it
                steal = holder[0]
            if self.keeper.claim(ns, task, steal_from=steal):
                if self.pending([task]):
                    return task
                self.keeper.release(ns, [task])
        return None

    def _route_task(self, table: FileTable, task: int, runner: route_io.BlockRunner) -> None:
        for position in table.tasks[task]:
            f = table.files[position]
            if self._routed(f):
                continue  # routed before this worker took the task over
            self.route_one(SourceObject(f.name, f.size, f.version), f.origin[1], runner)

    def reroute(self, src: SourceObject, folder: Path) -> RoutedIndex:
        """Route a file again, into `folder` (a scratch folder; slot 0 there)."""
        with route_io.BlockRunner(1) as runner:
            return self.route_one(src, 0, runner, folder)

    def route_one(
        self,
        src: SourceObject,
        slot: int,
        runner: route_io.BlockRunner,
        folder: Path | None = None,
    ) -> RoutedIndex:
        budget = self.plan.memory_budget // 4
        index = route_file_into(self.spec, src, slot, folder or self.folder, budget, runner)
        self.bytes_read += src.size
        self.progress.advance(src.size)
        return index

    # --- once every task is routed ---------------------------------------------------------

    def finish(self, key: DataKey, store: ObjectStore) -> RouteCheckpoint:
        """Once per generation, when every task is routed: check every file has the dataset's
        CSV header, and store the generation's dead letters (every current file's, read now
        or before); the checkpoint then says routing is complete."""
        if self._complete is not None:  # a worker's later shard batches: known complete
            return self._complete
        ds, gen = self.ds, self.gen
        path = file_table_path(self.folder)
        while True:
            cp = self.state.route_checkpoint(ds.name, gen)
            if cp is None or not cp.complete:
                with self.state.lock(f"{ds.name}.routing"):
                    cp = self.state.route_checkpoint(ds.name, gen)
                    if cp is None or not cp.complete:
                        cp = self._finish_listed(key, store) if self._latest(path) else None
            if cp is not None:
                self._latest(path)
                self._complete = cp
                return cp
            self.route()  # another worker listed the generation again: its new files first

    def _latest(self, path: Path) -> bool:
        """Take the table on disk (the generation's final listing once routing is complete);
        True when each of its tasks is routed."""
        latest = load_table(path)
        if latest is None:
            raise StateError(
                f"{path}: the generation's file table is missing; every worker of a plan must"
                " see the same state_dir (a shared volume)"
            )
        if self._table is None or latest.version != self._table.version:
            self._table, self._done = latest, set()
        return not self.pending()

    def _finish_listed(self, key: DataKey, store: ObjectStore) -> RouteCheckpoint:
        ds, gen = self.ds, self.gen
        table = self.table()
        header = self._check_headers(table)
        folder = spool_dir(self.plan.state_dir, ds.name, gen)
        dead = [
            routed_file_path(self._dir(g), p, "dead") for g, p in (f.origin for f in table.files)
        ]
        merge_dead_letters(dead, dead_letter_spool_path(folder), self.spec.quarantines)
        store_dead_letters(self.plan, ds, gen, key, store, folder, header)
        cp = RouteCheckpoint(len(table.files), table.listing_digest, (), header, True)
        self.state.save_route_checkpoint(ds.name, gen, cp)
        return cp

    def _check_headers(self, table: FileTable) -> bytes | None:
        """The dataset's CSV header, every file checked to have it: those read in this
        generation (the others were checked when they were read), or, with no header known
        from an earlier generation, every file against the first."""
        if self.spec.fmt != "csv":
            return None
        expected = self.spec.csv_header
        before = "earlier generations'"
        files = table.files
        if expected is not None:
            files = tuple(table.files[p] for p in sorted(table.routed_here()))
        for f in files:
            index = self._origin_index(f)
            if index is None:
                raise StateError(f"dataset {self.ds.name}: {f.name} is not routed yet")
            if index.csv_header is None:
                continue
            if expected is None:
                expected, before = index.csv_header, "the first file's"
                continue
            if index.csv_header != expected:
                old, new = differing_headers(expected, index.csv_header)
                where = self.spec.source.location(SourceObject(f.name, f.size, f.version))
                raise SourceError(
                    f"{where}:{index.header_line}: CSV header differs from {before} header:"
                    f" {new} here, {old} there; a changed schema needs a new dataset, not a sync"
                )
        return expected
