"""Records routing: split a records source into one spool file per shard, resumably.

Routing first lets each shard then be encoded on its own (a Dagster partition, a worker), and
makes chunk boundaries depend only on the spool, so a resumed run cuts the very same chunks.
"""

from __future__ import annotations

import contextlib
import csv
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from migrator.errors import SourceError, StateError
from migrator.records.blocks import DEFAULT_MAX_RECORD, RecordBlocks
from migrator.records.framing import framing_of
from migrator.repository.names import digests_path, spool_path
from migrator.sources.base import Source, SourceObject
from migrator.state.private import open_private, write_private
from migrator.write.route_blocks import BadRecord, BlockResult, BlockTask, route_block


@dataclass(frozen=True, slots=True)
class RecordsSpec:
    dataset: str
    generation: int
    fmt: str  # "jsonl" | "csv"
    key_field: str
    shards: int
    source: Source
    csv_delimiter: str = ","
    # The header earlier generations were routed with: a sync refuses another one, since its
    # deltas are applied to records the old header describes.
    csv_header: bytes | None = None
    on_bad_record: str = "fail"  # fail | quarantine: a bad record stops routing, or is set aside
    max_record_size: int = DEFAULT_MAX_RECORD  # bytes; a longer record stops routing

    @property
    def quarantines(self) -> bool:
        return self.on_bad_record == "quarantine"


BLOCK_BYTES = 8 * 1024 * 1024  # records handed to a routing worker at a time
PARALLEL_ROUTING_BYTES = 32 * 1024 * 1024
PARALLEL_ROUTING_MIN_CORES = 4


def routing_processes(source_bytes: int, workers: int) -> int:
    """Worker processes for routing: only for more than a few blocks, and only with cores to
    spare beside the reading process (on 2 cores it measured no faster than one process:
    the reader's copies and writes take the other core; docs/PERFORMANCE.md)."""
    cores = os.cpu_count() or 1
    if source_bytes < PARALLEL_ROUTING_BYTES or cores < PARALLEL_ROUTING_MIN_CORES:
        return 1
    return min(workers, cores - 1)


class ShardSpools:
    """Per-shard append buffers, bounded in total, flushed to one spool file per shard, and a
    digest spool per shard that the incremental sync diffs against the last inventory.

    With keep_records False only the digests are kept (the cutover gate's scan of a source)."""

    def __init__(self, folder: Path, shards: int, budget: int, *, keep_records: bool = True):
        self.folder = folder
        self.keep_records = keep_records
        self.buffers = [bytearray() for _ in range(shards)]
        self.dbuffers = [bytearray() for _ in range(shards)]
        self.sizes = [0] * shards
        self.per_shard = max(64 * 1024, budget // max(shards, 1))
        self._dirty: set[int] = set()

    def append_block(
        self, shard: int, records: bytes | bytearray, digests: bytes | bytearray, nbytes: int
    ) -> None:
        """A run of the shard's records (each with its line feed) and their digest entries."""
        dbuf = self.dbuffers[shard]
        dbuf += digests
        if self.keep_records:
            buf = self.buffers[shard]
            buf += records
        else:
            self.sizes[shard] += nbytes
        if len(dbuf) * 8 >= self.per_shard or len(self.buffers[shard]) >= self.per_shard:
            self._flush(shard)

    def _flush(self, shard: int) -> None:
        buf, dbuf = self.buffers[shard], self.dbuffers[shard]
        if not buf and not dbuf:
            return
        if buf:
            with _writing(spool_path(self.folder, shard)) as fh:
                fh.write(buf)
            self.sizes[shard] += len(buf)
            buf.clear()
        with _writing(digests_path(self.folder, shard)) as fh:
            fh.write(dbuf)
        dbuf.clear()
        self._dirty.add(shard)

    def make_durable(self) -> tuple[int, ...]:
        for shard in range(len(self.buffers)):
            self._flush(shard)
        for shard in sorted(self._dirty):
            paths = [digests_path(self.folder, shard)]
            if self.keep_records:
                paths.append(spool_path(self.folder, shard))
            for path in paths:
                with _writing(path) as fh:
                    os.fsync(fh.fileno())
        self._dirty.clear()
        return tuple(self.sizes)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[BinaryIO]:
    """A spool opened for appending; a failed write (a full disk) names the spool."""
    try:
        with open_private(path) as fh:
            yield fh
    except OSError as exc:
        raise StateError(
            f"{path}: cannot write the routing spool ({exc.strerror or exc}); run again to"
            " resume once it can be written"
        ) from None


def scan_digests(
    spec: RecordsSpec,
    folder: Path,
    *,
    buffer_budget: int,
    processes: int = 1,
    listing: Iterable[SourceObject] | None = None,
) -> tuple[int, ...]:
    """Route only the digests of every source record into per-shard digest spools (no record
    bytes, no checkpoints): what the cutover gate compares with the destination. `listing`:
    the source's listing when the caller took one already, else the source is listed here."""
    return spool_source(
        spec,
        folder,
        buffer_budget=buffer_budget,
        processes=processes,
        listing=listing,
        keep_records=False,
    )


def spool_source(
    spec: RecordsSpec,
    folder: Path,
    *,
    buffer_budget: int,
    processes: int = 1,
    listing: Iterable[SourceObject] | None = None,
    keep_records: bool = True,
) -> tuple[int, ...]:
    """Route a whole records source, in one pass and one process, into one spool (unless not
    `keep_records`) and one digest spool per shard; returns each shard's routed bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(spec.shards):
        write_private(digests_path(folder, shard), b"")
        if keep_records:
            write_private(spool_path(folder, shard), b"")
    spools = ShardSpools(folder, spec.shards, buffer_budget, keep_records=keep_records)
    csv_header: bytes | None = None
    # Records a quarantining dataset sets aside never reach the destination: skip them here too.
    sink = (lambda bad: None) if spec.quarantines else None
    with BlockRunner(processes) as runner:
        for src in spec.source.list() if listing is None else listing:
            csv_header, _ = route_file(spec, src, spools, csv_header, runner, sink)
    return spools.make_durable()


class BlockRunner:
    """Routes blocks in order, in worker processes when there are several (see
    route_blocks), else in this one; at most two blocks a worker are in flight."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        if processes > 1:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["migrator.write.route_blocks"])
            self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=context)

    def map(self, tasks: Iterator[BlockTask]) -> Iterator[BlockResult]:
        if self._pool is None:
            yield from map(route_block, tasks)
            return
        pending: deque[Future[BlockResult]] = deque()
        for task in tasks:
            pending.append(self._pool.submit(route_block, task))
            if len(pending) >= 2 * self.processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BlockRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RoutedSink(Protocol):
    """Where routing puts a file's records: the per-shard spools of a scan (ShardSpools) or
    one file's routed output (routed.RoutedFileWriter)."""

    keep_records: bool

    def append_block(
        self, shard: int, records: bytes | bytearray, digests: bytes | bytearray, nbytes: int
    ) -> None: ...


def route_file(
    spec: RecordsSpec,
    src: SourceObject,
    spools: RoutedSink,
    csv_header: bytes | None,
    runner: BlockRunner,
    quarantine: Callable[[list[BadRecord]], None] | None = None,
) -> tuple[bytes | None, int]:
    """Route one source file into `spools`; returns the CSV header in force after it and the
    line of the file's own header (0: none). `quarantine` takes the file's bad records, in
    order; without it a bad record stops routing (BadRecordError: file, line, byte offset,
    reason)."""
    path = spec.source.location(src)
    is_csv = spec.fmt == "csv"
    line = 0
    framing = framing_of(spec.csv_delimiter if is_csv else None)
    with spec.source.open(src) as fh:
        reader = RecordBlocks(fh, framing, path, spec.max_record_size, BLOCK_BYTES)
        if is_csv:
            header = reader.first_record()
            if header is None:  # no record at all: nothing to route
                return csv_header, 0
            record, line = header
            record = record.removesuffix(b"\r")
            if csv_header is not None and record != csv_header:
                before = "earlier generations'" if spec.csv_header else "the first file's"
                old, new = differing_headers(csv_header, record)
                raise SourceError(
                    f"{path}:{line}: CSV header differs from {before} header: {new} here,"
                    f" {old} there; a changed schema needs a new dataset, not a sync"
                )
            if csv_header is None:
                _refuse_repeated_key(record, spec, path, line)
            csv_header = record
        tasks = (
            BlockTask(
                data,
                spec.fmt,
                spec.key_field,
                csv_header,
                spec.csv_delimiter,
                spec.shards,
                path,
                lines_before,
                spools.keep_records,
                offset_before,
                quarantine is not None,
                spec.max_record_size,
            )
            for data, lines_before, offset_before in reader.blocks()
        )
        for result in runner.map(tasks):
            for shard, records, digests, nbytes in result.runs:
                spools.append_block(shard, records, digests, nbytes)
            if result.bad and quarantine is not None:
                quarantine(result.bad)
    return csv_header, line


def differing_headers(old: bytes, new: bytes, width: int = 120) -> tuple[str, str]:
    """Both header rows, shown from a little before where they first differ, `width`
    characters at most: a header of hundreds of columns stays readable."""
    a, b = old.decode("utf-8", "replace"), new.decode("utf-8", "replace")
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    start = max(0, at - 40)

    def shown(text: str) -> str:
        part = text[start : start + width]
        return ("…" if start else "") + repr(part) + ("…" if start + width < len(text) else "")

    return shown(a), shown(b)


def _refuse_repeated_key(header: bytes, spec: RecordsSpec, path: str, line: int) -> None:
    """A key column named twice would key every record by one of them, silently: refused."""
    text = header.decode("utf-8", "replace")
    names = next(csv.reader([text], delimiter=spec.csv_delimiter), [])
    columns = [i + 1 for i, name in enumerate(names) if name == spec.key_field]
    if len(columns) > 1:
        listed = ", ".join(map(str, columns))
        raise SourceError(
            f"{path}:{line}: key field {spec.key_field!r} names {len(columns)} columns of the"
            f" CSV header (columns {listed}); rename all but one so each record has one key"
        )
