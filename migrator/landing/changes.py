"""A shard's generations read back from the archive as what a landing target applies.

Chunks are fetched and decrypted a few ahead on a thread pool while the target consumes the
records or object parts before them, so a shard streams through in bounded memory: records one
chunk at a time, an object one part at a time.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby

from migrator.codec.digests import key_hash
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import SourceError, TamperedError
from migrator.keys.keyring import Keyring
from migrator.landing.target import (
    LandedObject,
    LandedRecord,
    ObjectsGeneration,
    RecordsGeneration,
)
from migrator.plan.model import DatasetPlan
from migrator.read.chain import (
    RecordKeys,
    chain_layout,
    csv_header_of,
    live_record_blocks,
    superseded,
)
from migrator.read.readback import ordered_map
from migrator.records.framing import split_stored_records, stored_framing
from migrator.records.keys import CsvKeyReader, JsonKeyReader
from migrator.repository.chunks import read_chunk
from migrator.stores.base import ObjectStore

READ_AHEAD = 4  # at most this many chunks fetched and decrypted ahead of the one landed
LANDING_SLOTS = 8  # what the budget is shared by: objects landed at once, each with its part


def read_ahead(memory_budget: int, chunk_bytes: int) -> int:
    """Chunks read ahead of each one being landed, so that several objects landing at once,
    each with its parts read ahead, stay inside the plan's memory budget."""
    return max(1, min(READ_AHEAD, memory_budget // (LANDING_SLOTS * max(1, chunk_bytes))))


@dataclass(eq=False)
class ArchiveReader:
    """Reads one dataset's chunks from the archive with its keyring."""

    store: ObjectStore
    key: Keyring
    pool: ThreadPoolExecutor
    window: int = READ_AHEAD

    def plaintexts(self, manifest: ShardManifest, refs: Sequence[ChunkRef]) -> Iterator[bytes]:
        def read(ref: ChunkRef) -> bytes:
            return read_chunk(self.store, manifest, ref, self.key)

        return ordered_map(self.pool, read, refs, self.window)


class RecordReader:
    """A stored record's key, key hash and (CSV) fields, under the layout its chain records."""

    def __init__(self, ds: DatasetPlan, chain: Sequence[ShardManifest]) -> None:
        layout = chain_layout(ds, chain)
        self.where = f"dataset {ds.name}"
        self.delimiter = layout.csv_delimiter
        self.framing = stored_framing(self.delimiter)
        self.header: tuple[str, ...] | None = None
        self._csv: CsvKeyReader | None = None
        self._json: JsonKeyReader | None = None
        if self.delimiter is not None:
            header = csv_header_of(chain)
            if header is None:
                raise TamperedError(f"{self.where}: CSV manifest without its header")
            self.header = tuple(next(csv.reader([header], delimiter=self.delimiter)))
            self._csv = CsvKeyReader(layout.key, header.encode(), self.delimiter, self.where)
        else:
            self._json = JsonKeyReader(layout.key)

    def landed(self, record: bytes) -> LandedRecord:
        try:
            if self._csv is not None:
                key = self._csv.key(record, self.where, 0)
            else:
                assert self._json is not None
                key = self._json.key(record, self.where, 0)
        except SourceError as exc:
            raise TamperedError(f"a record read back has no readable key ({exc})") from None
        fields = None
        if self.delimiter is not None:
            text = record.decode("utf-8", "surrogateescape")
            fields = tuple(next(csv.reader([text], delimiter=self.delimiter)))
        return LandedRecord(key.decode("utf-8", "surrogateescape"), key_hash(key), record, fields)

    def records(
        self, blocks: Iterator[bytes], counts: Sequence[int] | None
    ) -> Iterator[LandedRecord]:
        """The records of chunk plaintexts (or of blocks of whole records, counts None)."""
        for i, data in enumerate(blocks):
            if not data:  # a chunk whose every record a later generation removed
                continue
            expected = None if counts is None else counts[i]
            for record in split_stored_records(data, self.framing, expected):
                yield self.landed(record)


def records_generation(
    reader: ArchiveReader, records: RecordReader, manifest: ShardManifest
) -> RecordsGeneration:
    """One generation of a records shard: its tombstones and its records, read lazily."""
    refs = sorted(manifest.chunks, key=lambda r: r.sequence)
    return RecordsGeneration(
        dataset=manifest.dataset,
        shard=manifest.shard,
        generation=manifest.generation,
        base=manifest.is_base,
        removed=frozenset(bytes.fromhex(h) for h in manifest.removed),
        records=records.records(reader.plaintexts(manifest, refs), [r.records for r in refs]),
        header=records.header,
    )


def live_records(
    reader: ArchiveReader,
    records: RecordReader,
    ds: DatasetPlan,
    chain: Sequence[ShardManifest],
) -> Iterator[LandedRecord]:
    """The shard's live records after its whole chain, as restore writes them."""
    keys = RecordKeys(ds, chain) if any(superseded(chain)) else None
    blocks = live_record_blocks(chain, reader.plaintexts, keys)
    return records.records(blocks, None)


def objects_generation(
    reader: ArchiveReader, manifest: ShardManifest, *, replace: bool = False, may_hold: bool = True
) -> ObjectsGeneration:
    """One generation of an objects shard: names it deletes, and each object it (re)writes."""
    refs = sorted(manifest.chunks, key=lambda r: (r.name or "", r.sequence))
    objects: list[LandedObject] = []
    for name, group in groupby(refs, key=lambda r: r.name or ""):
        parts = tuple(group)
        objects.append(
            LandedObject(
                name=name,
                size=sum(p.plain_size for p in parts),
                version=parts[-1].version or "",
                parts=_parts_reader(reader, manifest, parts),
                part_sizes=tuple(p.plain_size for p in parts),
                part_xxh3=tuple(p.plain_xxh3 for p in parts),
            )
        )
    added = {o.name for o in objects}
    return ObjectsGeneration(
        dataset=manifest.dataset,
        shard=manifest.shard,
        generation=manifest.generation,
        base=manifest.is_base,
        removed=frozenset(n for n in manifest.removed if n not in added),
        objects=objects,
        replace=replace,
        may_hold=may_hold,
    )


def _parts_reader(
    reader: ArchiveReader, manifest: ShardManifest, parts: tuple[ChunkRef, ...]
) -> Callable[[], Iterator[bytes]]:
    return lambda: reader.plaintexts(manifest, parts)
