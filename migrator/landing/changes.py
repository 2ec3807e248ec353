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
    csv_header_of,
    live_record_blocks,
    superseded,
)
from migrator.read.readback import ordered_map
from migrator.records.framing import split_stored_records
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
    """A stored record's key, key hash and (CSV) fields, under the layout its chain records
    (read.chain.RecordKeys: the keys restore matches removals by)."""

    def __init__(self, ds: DatasetPlan, chain: Sequence[ShardManifest]) -> None:
        self.keys = RecordKeys(ds, chain)
        self.framing = self.keys.framing
        self.delimiter = self.keys.csv.delimiter if self.keys.is_csv else None
        self.header: tuple[str, ...] | None = None
        if self.delimiter is not None:
            header = csv_header_of(chain) or ""  # RecordKeys refused a CSV chain without one
            self.header = tuple(next(csv.reader([header], delimiter=self.delimiter)))

    def landed(self, record: bytes) -> LandedRecord:
        key = self.keys.key(record)
        fields = None
        if self.delimiter is not None:
            text = record.decode("utf-8", "surrogateescape")
            fields = tuple(next(csv.reader([text], delimiter=self.delimiter)))
        return LandedRecord(key.decode("utf-8", "surrogateescape"), key_hash(key), record, fields)

    def records(
        self, blocks: Iterator[bytes], counts: Sequence[int] | None
    ) -> Iterator[LandedRecord]:
        """The records of chunk plaintexts, keyed (or of blocks of whole records, counts None)."""
        return map(self.landed, self.split(blocks, counts))

    def split(self, blocks: Iterator[bytes], counts: Sequence[int] | None) -> Iterator[bytes]:
        """Each record's bytes, as archived, without its line end."""
        for i, data in enumerate(blocks):
            if not data:  # a chunk whose every record a later generation removed
                continue
            expected = None if counts is None else counts[i]
            yield from split_stored_records(data, self.framing, expected)


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
    chain: Sequence[ShardManifest],
) -> Iterator[bytes]:
    """The shard's live records after its whole chain, as restore writes them: bytes only (a
    records file needs no key or fields, so none is parsed)."""
    keys = records.keys if any(superseded(chain)) else None
    return records.split(live_record_blocks(chain, reader.plaintexts, keys), None)


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
