"""A records source's per-shard digests for the cutover gate, reading only what changed.

A sync keeps, for each source file it routed, the file's digest entries grouped by shard
(write/routed.py), and the file table it listed (write/listing.py). The gate lists the source
once; a file listed with the name, size and version its table holds contributes what its routed
digests say, without being read; only new and changed files are read (digests only); a removed
file contributes nothing. A shard's digest is a sum over its records and each record belongs to
one file, so the sums are exactly a whole scan's. Without a usable table the source is read
whole, as before syncs kept routed digests.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from migrator.codec.digests import DIGEST_ENTRY, RecordsMap, from_hex, unpack_records_map
from migrator.codec.generation import ShardHead
from migrator.errors import SourceError, StateError
from migrator.plan.model import DatasetPlan, Plan
from migrator.read.records_lag import Lag, changed_keys, keyed, lag_between, lag_of_change, merge
from migrator.read.routed_digests import ShardSum, entries_sum, routed_index, routed_table
from migrator.repository.names import (
    cutover_dir,
    digests_path,
    routed_dir,
    routed_file_path,
    routed_root,
)
from migrator.sources.base import Source, SourceObject
from migrator.sources.listing import list_source_once
from migrator.state.db import StateDB
from migrator.write.listing import FileTable, TableFile
from migrator.write.route import (
    BlockRunner,
    RecordsSpec,
    ShardSpools,
    differing_headers,
    route_file,
    routing_processes,
)
from migrator.write.routed import RoutedIndex


@dataclass
class RecordsSource:
    """A records source as the gate found it, per shard, and what it read to find out."""

    shards: list[ShardSum]
    lags: list[Lag | None]  # None: no state store (or no inventory) to compare with
    files: int  # listed
    reused: int  # taken from their routed digests, unread
    read: int  # new or changed since the table: read now, and by the next sync
    read_bytes: int
    read_seconds: float
    table: int | None  # the generation whose file table was reused; None: read whole


class _Stale(Exception):
    """Routed output the table names is gone (a sync committed and pruned meanwhile), or was
    routed for another shard count: `again` says whether a fresh table may do."""

    def __init__(self, again: bool) -> None:
        super().__init__()
        self.again = again


def records_source(
    plan: Plan,
    ds: DatasetPlan,
    source: Source,
    state: StateDB | None,
    heads: Sequence[ShardHead],
    generation: int,
    *,
    reuse: bool = True,
) -> RecordsSource:
    """The source's per-shard digests and lags against committed `generation` (its `heads`),
    listing the source once. `reuse` False reads every file (the whole scan)."""
    folder = cutover_dir(plan.state_dir, ds.name)
    listing = list_source_once(source)
    try:
        for checked in (False, True) if reuse else ():
            table = routed_table(plan, ds.name, state, checked=checked)
            if table is None:
                break
            check = _Check(plan, ds, source, state, listing, table, folder)
            try:
                return check.run(heads, generation)
            except _Stale as stale:
                shutil.rmtree(folder, ignore_errors=True)
                if not stale.again:
                    break
        return _Check(plan, ds, source, state, listing, None, folder).run(heads, generation)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _head_sum(head: ShardHead) -> ShardSum:
    return ShardSum(from_hex(head.digest), head.records)


class _Check:
    """One look at the source against one file table (or none)."""

    def __init__(
        self,
        plan: Plan,
        ds: DatasetPlan,
        source: Source,
        state: StateDB | None,
        listing: list[SourceObject],
        table: FileTable | None,
        folder: Path,
    ) -> None:
        self.plan, self.ds, self.source, self.state = plan, ds, source, state
        self.listing, self.table, self.folder = listing, table, folder
        self.n = ds.shards

    def run(self, heads: Sequence[ShardHead], generation: int) -> RecordsSource:
        table, n = self.table, self.n
        by_name = {f.name: f for f in table.files} if table is not None else {}
        reused: list[TableFile] = []
        to_read: list[SourceObject] = []
        for src in self.listing:
            f = by_name.get(src.name)
            if f is not None and f.same_as(src):
                reused.append(f)
            else:
                to_read.append(src)
        kept = {f.name for f in reused}
        retired = [f for f in table.files if f.name not in kept] if table is not None else []
        header = self._first_header(reused)
        started = time.monotonic()
        self._read(to_read, header)
        read_seconds = time.monotonic() - started
        incremental = table is not None and self.state is not None
        read_sums, retired_sums, changes = self._changes(retired if incremental else None)
        keys = set().union(*(diff for _, _, diff in changes))
        reused_sums, others = self._reused_pass(reused, keys, header)
        lags: list[Lag | None] = [None] * n
        if self.state is not None:
            whole: list[int] = []
            by_shard = {h.shard: h for h in heads}
            for shard in range(n):
                head = by_shard.get(shard)
                then = reused_sums[shard] + retired_sums[shard]
                if incremental and head is not None and then == _head_sum(head):
                    lags[shard] = lag_of_change(*changes[shard], others)
                else:
                    whole.append(shard)
            if whole:
                self._whole_lags(lags, whole, reused, generation)
        return RecordsSource(
            [reused_sums[s] + read_sums[s] for s in range(n)],
            lags,
            len(self.listing),
            len(reused),
            len(to_read),
            sum(src.size for src in to_read),
            read_seconds,
            table.generation if table is not None else None,
        )

    def _changes(
        self, retired: list[TableFile] | None
    ) -> tuple[list[ShardSum], list[ShardSum], list[tuple[RecordsMap, RecordsMap, set[bytes]]]]:
        """Per shard: the sums of what the read files hold now and of what the `retired` files
        held then, and (with `retired`) both sides of the keys that differ, and those keys."""
        by_shard = self._entries(retired, set(range(self.n))) if retired is not None else {}
        read_sums: list[ShardSum] = []
        retired_sums: list[ShardSum] = []
        changes: list[tuple[RecordsMap, RecordsMap, set[bytes]]] = []
        for shard in range(self.n):
            now = self._read_entries(shard)
            then = by_shard.pop(shard, bytearray())
            read_sums.append(ShardSum(*entries_sum(now)))
            retired_sums.append(ShardSum(*entries_sum(then)))
            if retired is not None:
                old, new = keyed(then), keyed(now)
                diff = changed_keys(old, new)
                old = {k: old[k] for k in diff & old.keys()}
                new = {k: new[k] for k in diff & new.keys()}
                changes.append((old, new, diff))
        return read_sums, retired_sums, changes

    # --- reading what changed --------------------------------------------------------------

    def _read(self, files: list[SourceObject], header: bytes | None) -> None:
        """Route the files' digests (no records kept) into one digest spool per shard."""
        settings, folder = self.ds.records, self.folder
        shutil.rmtree(folder, ignore_errors=True)  # what an interrupted gate left
        folder.mkdir(parents=True)
        spec = RecordsSpec(
            self.ds.name,
            0,
            settings.format,
            settings.key,
            self.n,
            self.source,
            csv_delimiter=settings.csv_delimiter,
            csv_header=header,
            on_bad_record=settings.on_bad_record,
            max_record_size=self.plan.max_record_size(self.ds),
        )
        spools = ShardSpools(folder, self.n, self.plan.memory_budget // 4, keep_records=False)
        # Records a quarantining dataset sets aside never reach the destination: nor the sums.
        sink = (lambda bad: None) if spec.quarantines else None
        total = sum(src.size for src in files)
        processes = routing_processes(total, self.plan.workers or os.cpu_count() or 1)
        with BlockRunner(processes) as runner:
            for src in files:
                header, _ = route_file(spec, src, spools, header, runner, sink)
        spools.make_durable()

    def _read_entries(self, shard: int) -> bytes:
        """The read files' digest entries of the shard (no spool: none)."""
        try:
            return digests_path(self.folder, shard).read_bytes()
        except FileNotFoundError:
            return b""

    # --- the routed digests of unchanged (and retired) files -------------------------------

    def _index(self, f: TableFile) -> RoutedIndex:
        index = routed_index(self.plan, self.ds.name, f)
        if index is None:
            raise _Stale(again=True)
        if any(s >= self.n for s, *_ in index.segments):
            raise _Stale(again=False)  # routed for more shards than the plan has now
        return index

    def _segments(
        self, f: TableFile, index: RoutedIndex, shards: set[int] | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """(shard, digest entries) of each of the file's segments (of `shards` only)."""
        folder = routed_dir(self.plan.state_dir, self.ds.name, f.origin[0])
        path = routed_file_path(folder, f.origin[1], "digests")
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise _Stale(again=True) from None
        with fh:
            for shard, _ro, _rl, offset, length in index.segments:
                if shards is not None and shard not in shards:
                    continue
                fh.seek(offset)
                data = fh.read(length)
                if len(data) != length or length % DIGEST_ENTRY.size:
                    raise StateError(
                        f"{path}: routed digests are shorter than their index says; remove"
                        f" {routed_root(self.plan.state_dir, self.ds.name)} to have the gate"
                        " and the next sync read the source whole"
                    )
                yield shard, data

    def _entries(self, files: Iterable[TableFile], shards: set[int]) -> dict[int, bytearray]:
        out: dict[int, bytearray] = {}
        for f in files:
            for shard, data in self._segments(f, self._index(f), shards):
                out.setdefault(shard, bytearray()).extend(data)
        return out

    def _first_header(self, reused: list[TableFile]) -> bytes | None:
        """The CSV header the unchanged files were routed with (changed files must have it)."""
        if self.ds.records.format != "csv":
            return None
        for f in reused:
            if (header := self._index(f).csv_header) is not None:
                return header
        return None

    def _reused_pass(
        self, reused: list[TableFile], keys: set[bytes], header: bytes | None
    ) -> tuple[list[ShardSum], RecordsMap]:
        """One pass over the unchanged files' routed digests: per-shard sums, and their
        records of `keys` (for the lag)."""
        sums = [ShardSum() for _ in range(self.n)]
        others: RecordsMap = {}
        for f in reused:
            index = self._index(f)
            if header is not None and index.csv_header not in (None, header):
                self._header_differs(f, index, header)
            for shard, data in self._segments(f, index):
                sums[shard].add(*entries_sum(data))
                for k, entry in keyed(data, keys).items():
                    merge(others, k, entry)
        return sums, others

    def _header_differs(self, f: TableFile, index: RoutedIndex, header: bytes) -> None:
        old, new = differing_headers(header, index.csv_header or b"")
        where = self.source.location(SourceObject(f.name, f.size, f.version))
        raise SourceError(
            f"{where}:{index.header_line}: CSV header differs from the first file's header:"
            f" {new} here, {old} there; a changed schema needs a new dataset, not a sync"
        )

    def _whole_lags(
        self, lags: list[Lag | None], shards: list[int], reused: list[TableFile], generation: int
    ) -> None:
        """Every key of `shards` compared with the inventory (no table, or one that is not the
        committed generation's): the source's entries are the unchanged files' and the read."""
        if self.state is None:
            return
        unchanged = self._entries(reused, set(shards))
        for shard in shards:
            blob = self.state.shard_inventory(self.ds.name, shard, generation + 1)
            if blob is None:
                continue
            entries = unchanged.pop(shard, bytearray())
            entries += self._read_entries(shard)
            lags[shard] = lag_between(unpack_records_map(blob), keyed(entries))
