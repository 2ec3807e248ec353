"""Routing whole files in worker processes, each reading its file and writing its output.

Routing holds the GIL (keys, hashes, slices), so one process routes one core's worth. Handing
blocks to processes through pipes (route.BlockRunner) costs the reading process a copy each
way, which on two cores ate the gain. A process that routes a whole file reads the source and
writes the file's routed output itself, and sends back only its index (a few hundred bytes),
so a run routes on every core its plan allows. A source that cannot be sent to another process
(one holding a cloud client) is routed in this process, as before.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import migrator.write.route as route_io  # its route_file looked up at each call (tests wrap it)
from migrator.errors import StateError
from migrator.heap import map_large_buffers
from migrator.repository.names import routed_file_path
from migrator.sources.base import SourceObject
from migrator.write.deadletter import DeadLetterSpool
from migrator.write.route import BlockRunner, RecordsSpec
from migrator.write.route_blocks import BadRecord
from migrator.write.routed import MIN_SHARD_BUFFER, RoutedFileWriter, RoutedIndex

# Below this much to route, starting processes costs more than it saves.
PARALLEL_FILE_BYTES = 48 * 1024 * 1024


def file_processes(source_bytes: int, workers: int, shards: int, budget: int) -> int:
    """Processes that route files at once: one a core (at most the plan's workers), for more
    than a few blocks, and no more than routing's `budget` holds: a file's writer buffers at
    least MIN_SHARD_BUFFER a shard, whatever its share (routed.RoutedFileWriter)."""
    if source_bytes < PARALLEL_FILE_BYTES:
        return 1
    fits = budget // (max(shards, 1) * MIN_SHARD_BUFFER)
    return max(1, min(workers, _cores(), fits))


def _cores() -> int:
    """The cores this process may run on (a pinned worker: those it is pinned to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def route_file_into(
    spec: RecordsSpec,
    src: SourceObject,
    slot: int,
    folder: Path,
    budget: int,
    runner: BlockRunner,
) -> RoutedIndex:
    """One file routed into its output at `slot` of `folder` (dead letters beside it when the
    dataset quarantines); its index, written last, is the checkpoint."""
    writer = RoutedFileWriter(folder, slot, spec.shards, budget)
    dead = DeadLetterSpool(folder, routed_file_path(folder, slot, "dead"))
    dead.restore(0, create=spec.quarantines)
    bad = [0]

    def quarantine(records: list[BadRecord]) -> None:
        bad[0] += len(records)
        dead.add(slot, src.name, records)

    try:
        header, line = route_io.route_file(
            spec, src, writer, spec.csv_header, runner, quarantine if spec.quarantines else None
        )
        dead.make_durable()
    except BaseException:
        writer.abandon()
        raise
    return writer.finish(header, line, bad[0])


def _route_in_process(
    spec: RecordsSpec, src: SourceObject, slot: int, folder: Path, budget: int
) -> RoutedIndex:
    map_large_buffers()  # as the run's own process does (heap.py)
    with BlockRunner(1) as runner:
        return route_file_into(spec, src, slot, folder, budget, runner)


def _sendable(spec: RecordsSpec) -> bool:
    try:
        pickle.dumps(spec)
    except (pickle.PicklingError, TypeError, AttributeError):
        return False
    return True


class FilePool:
    """Routes files on `processes` processes when the dataset's source can be sent to them;
    `capacity` is how many files it routes at once (1: none is sent anywhere)."""

    def __init__(self, spec: RecordsSpec, processes: int, budget: int) -> None:
        self.spec = spec
        self._pool: ProcessPoolExecutor | None = None
        if processes > 1 and _sendable(spec):
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["migrator.write.route_pool"])
            self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=context)
        self.capacity = processes if self._pool is not None else 1
        # Each file's writer buffers its share of the budget, whatever routes at once.
        self.budget = budget // self.capacity

    def submit(self, src: SourceObject, slot: int, folder: Path) -> Future[RoutedIndex]:
        if self._pool is None:
            raise RuntimeError("no worker processes: route the file in this process")
        return self._pool.submit(_route_in_process, self.spec, src, slot, folder, self.budget)

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FilePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def routed_in(future: Future[RoutedIndex], name: str) -> RoutedIndex:
    """A file's routing in a worker process: its error (file, line, byte) is the run's."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise StateError(
            f"the process routing {name} died (killed, or out of memory); run again to resume:"
            " the files routed before are kept"
        ) from None
