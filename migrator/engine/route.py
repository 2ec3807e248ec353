"""Records routing: split a records source into one spool file per shard, resumably.

Routing first lets each shard then be encoded on its own (a Dagster partition, a worker), and
makes chunk boundaries depend only on the spool, so a resumed run cuts the very same chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import xxhash

from migrator.codec.digests import DIGEST_ENTRY
from migrator.errors import SourceError, StateError
from migrator.sharding import shard_of
from migrator.sources.base import Source, SourceObject
from migrator.sources.records import CsvKeyReader, JsonKeyReader, iter_records
from migrator.state.model import RouteCheckpoint
from migrator.state.sqlite import SqliteStateStore

# Make routing durable every this many source bytes (and at the end): an fsync per spool.
CHECKPOINT_BYTES = 256 * 1024 * 1024


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


_pack_entry = DIGEST_ENTRY.pack
_hash128 = xxhash.xxh3_128_digest  # key_hash and record_digest, bound once for the hot loop


def spool_path(spool_dir: Path, shard: int) -> Path:
    return spool_dir / f"s{shard:05d}.spool"


def digests_path(spool_dir: Path, shard: int) -> Path:
    """Beside each spool: one DIGEST_ENTRY per record (key hash, record digest, length)."""
    return spool_dir / f"s{shard:05d}.digests"


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

    def restore(self, sizes: tuple[int, ...]) -> None:
        """Cut each spool back to its last durable size: bytes past it came from a crashed run;
        its digest spool is cut where its entries' lengths add up to the same size."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for shard, size in enumerate(sizes):
            with spool_path(self.folder, shard).open("ab") as fh:
                fh.truncate(size)
            dpath = digests_path(self.folder, shard)
            with dpath.open("ab") as fh:
                pass
            data = dpath.read_bytes()
            covered = cut = 0
            while covered < size:
                if cut + DIGEST_ENTRY.size > len(data):
                    raise StateError(f"{dpath}: digest spool is shorter than its spool")
                covered += DIGEST_ENTRY.unpack_from(data, cut)[2]
                cut += DIGEST_ENTRY.size
            if covered != size:
                raise StateError(f"{dpath}: digest spool does not end on a record of its spool")
            with dpath.open("ab") as fh:
                fh.truncate(cut)
            self.sizes[shard] = size

    def append(self, shard: int, record: bytes, key: bytes) -> None:
        length = len(record) + 1
        dbuf = self.dbuffers[shard]
        dbuf += _pack_entry(_hash128(key), _hash128(record), length)
        if self.keep_records:
            buf = self.buffers[shard]
            buf += record
            buf += b"\n"
        else:
            self.sizes[shard] += length
        if len(dbuf) * 8 >= self.per_shard or len(self.buffers[shard]) >= self.per_shard:
            self._flush(shard)

    def _flush(self, shard: int) -> None:
        buf, dbuf = self.buffers[shard], self.dbuffers[shard]
        if not buf and not dbuf:
            return
        if buf:
            with spool_path(self.folder, shard).open("ab") as fh:
                fh.write(buf)
            self.sizes[shard] += len(buf)
            buf.clear()
        with digests_path(self.folder, shard).open("ab") as fh:
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
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._dirty.clear()
        return tuple(self.sizes)


def route_records(
    spec: RecordsSpec,
    state: SqliteStateStore,
    spool_dir: Path,
    *,
    buffer_budget: int,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> RouteCheckpoint:
    """Route every source record into its shard's spool; resumes from the last checkpoint."""
    cp = state.route_checkpoint(spec.dataset, spec.generation)
    if cp is not None and cp.complete:
        return cp
    spools = ShardSpools(spool_dir, spec.shards, buffer_budget)
    start = cp.next_file if cp else 0
    spools.restore(cp.spool_sizes if cp else (0,) * spec.shards)
    csv_header = cp.csv_header if cp else spec.csv_header
    inventory = xxhash.xxh3_128()
    since_checkpoint = 0
    index = -1
    for index, src in enumerate(spec.source.list()):
        inventory.update(f"{src.name}\0{src.size}\0{src.version}\n".encode())
        if index < start:
            if (
                index == start - 1
                and cp is not None
                and inventory.hexdigest() != cp.inventory_digest
            ):
                raise StateError(
                    f"dataset {spec.dataset}: source files routed before the interruption have"
                    f" changed (first {start} files under {spec.source.describe()}); remove"
                    " the state directory to start over"
                )
            on_bytes(src.size)
            continue
        csv_header = _route_file(spec, src, spools, csv_header)
        on_bytes(src.size)
        since_checkpoint += src.size
        if since_checkpoint >= CHECKPOINT_BYTES:
            sizes = spools.make_durable()
            cp = RouteCheckpoint(index + 1, inventory.hexdigest(), sizes, csv_header, False)
            state.save_route_checkpoint(spec.dataset, spec.generation, cp)
            since_checkpoint = 0
    if index + 1 < start:
        raise StateError(
            f"dataset {spec.dataset}: {start} source files were routed before, only"
            f" {index + 1} exist now under {spec.source.describe()}"
        )
    sizes = spools.make_durable()
    cp = RouteCheckpoint(index + 1, inventory.hexdigest(), sizes, csv_header, True)
    state.save_route_checkpoint(spec.dataset, spec.generation, cp)
    return cp


def scan_digests(spec: RecordsSpec, folder: Path, *, buffer_budget: int) -> tuple[int, ...]:
    """Route only the digests of every source record into per-shard digest spools (no record
    bytes, no checkpoints): what the cutover gate compares with the destination."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(spec.shards):
        digests_path(folder, shard).write_bytes(b"")
    spools = ShardSpools(folder, spec.shards, buffer_budget, keep_records=False)
    csv_header: bytes | None = None
    for src in spec.source.list():
        csv_header = _route_file(spec, src, spools, csv_header)
    return spools.make_durable()


def _route_file(
    spec: RecordsSpec, src: SourceObject, spools: ShardSpools, csv_header: bytes | None
) -> bytes | None:
    path = spec.source.location(src)
    with spec.source.open(src) as fh:
        csv_header = _route_stream(spec, fh, path, spools, csv_header)
    return csv_header


def _route_stream(
    spec: RecordsSpec, fh: BinaryIO, path: str, spools: ShardSpools, csv_header: bytes | None
) -> bytes | None:
    reader: JsonKeyReader | CsvKeyReader | None = (
        JsonKeyReader(spec.key_field) if spec.fmt == "jsonl" else None
    )
    shards = spec.shards
    append = spools.append
    line = 0
    is_csv = spec.fmt == "csv"
    for batch in iter_records(fh, spec.fmt):
        for record in batch:
            line += 1
            first_line = line
            if is_csv:
                line += record.count(b"\n")
            if not record.strip():
                continue
            if reader is None:  # the CSV header row of this file
                where = f"{path}:{first_line}"
                if csv_header is not None and record.removesuffix(b"\r") != csv_header:
                    before = "earlier generations'" if spec.csv_header else "the first file's"
                    raise SourceError(
                        f"{where}: CSV header differs from {before} header"
                        f" ({csv_header.decode('utf-8', 'replace')!r}); a changed schema needs"
                        " a new dataset, not a sync"
                    )
                csv_header = record.removesuffix(b"\r")
                reader = CsvKeyReader(spec.key_field, csv_header, spec.csv_delimiter, where)
                continue
            key = reader.key(record, path, first_line)
            append(shard_of(key, shards), record, key)
    return csv_header
