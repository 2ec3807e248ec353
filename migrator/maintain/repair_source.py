"""A damaged chunk's plaintext, rebuilt from the source: the same bytes its manifest pins.

An object part is a byte range of one source object (docs/FORMAT.md §1.3): read again, as long
as the object still has the version its manifest recorded. A records chunk is a window of its
shard's routed records: the source is routed again (the same framing, keys and shard function a
run uses) and the shard's records are cut at the offsets the manifest's earlier chunks give. A
delta holds only the records of keys its generation changed: the keys it removed (its
`removed`) and the keys no earlier generation held. Whatever is rebuilt is compared with the
manifest's plain digest by the caller; nothing else decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import xxhash

from migrator.codec.digests import iter_spool_entries
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import MigratorError, SourceError
from migrator.plan.model import DatasetPlan, Plan
from migrator.read.chain import RecordKeys, csv_header_of, superseded
from migrator.records.framing import split_stored_records
from migrator.sources.base import Source, SourceObject
from migrator.write.route import BlockRunner, RecordsSpec, route_file

ReadChunk = Callable[[ShardManifest, ChunkRef], bytes]


class Unrepairable(MigratorError):
    """A chunk the source cannot give back as it was stored: the reason, for the operator."""


@dataclass
class _ShardSink:
    """Route sink keeping one shard's records and their digest entries, in routing order."""

    shard: int
    keep_records: bool = True
    records: bytearray = field(default_factory=bytearray)
    entries: bytearray = field(default_factory=bytearray)

    def append_block(
        self, shard: int, records: bytes | bytearray, digests: bytes | bytearray, nbytes: int
    ) -> None:
        if shard == self.shard:
            self.records += records
            self.entries += digests


@dataclass(frozen=True)
class RoutedShard:
    """One shard's records as routing the source now gives them (each ended by a line feed)."""

    records: bytes
    entries: bytes  # DIGEST_ENTRY per record: key hash, record digest, spool bytes
    csv_header: bytes | None

    def key_hashes(self) -> set[bytes]:
        return {kh for kh, _ in iter_spool_entries(self.entries)}

    def take(self, skip: int, count: int, keep: Callable[[bytes], bool]) -> bytes:
        """`count` records after the first `skip` of those whose key hash `keep` accepts, in
        routing order, each with its line feed (fewer when the source holds fewer)."""
        out = bytearray()
        read = 0
        for kh, length in iter_spool_entries(self.entries):
            start, read = read, read + length
            if not keep(kh):
                continue
            if skip:
                skip -= 1
                continue
            out += self.records[start:read]
            count -= 1
            if not count:
                break
        return bytes(out)


def route_shard(plan: Plan, ds: DatasetPlan, source: Source, shard: int) -> RoutedShard:
    """Route every source file as a run does, keeping only `shard`'s records (held in memory:
    one shard's routed records)."""
    records = ds.records
    spec = RecordsSpec(
        ds.name,
        0,
        records.format,
        records.key,
        ds.shards,
        source,
        csv_delimiter=records.csv_delimiter,
        on_bad_record=records.on_bad_record,
        max_record_size=plan.max_record_size(ds),
    )
    sink = _ShardSink(shard)
    header: bytes | None = None
    # Records a quarantining dataset set aside never reached a chunk: skipped here too.
    quarantine = (lambda bad: None) if spec.quarantines else None
    with BlockRunner(1) as runner:
        for src in source.list():
            header, _ = route_file(spec, src, sink, header, runner, quarantine)
    return RoutedShard(bytes(sink.records), bytes(sink.entries), header)


def live_key_hashes(ds: DatasetPlan, chain: Sequence[ShardManifest], read: ReadChunk) -> set[bytes]:
    """Key hashes of the shard's live records after `chain` (a chain's first manifests)."""
    if not chain:
        return set()
    keys = RecordKeys(ds, chain)
    live: set[bytes] = set()
    for manifest, gone in zip(chain, superseded(chain), strict=True):
        live |= {
            kh for kh in _key_hashes(keys, manifest, manifest.chunks, read) if kh.hex() not in gone
        }
    return live


def records_chunk(
    ds: DatasetPlan,
    routed: RoutedShard,
    chain: Sequence[ShardManifest],
    index: int,
    ref: ChunkRef,
    read: ReadChunk,
) -> bytes:
    """The plaintext of records chunk `ref` of chain[index], rebuilt from `routed`.

    Of the source's records, those the manifest wrote: every key (a base) or the keys its
    generation changed (a delta: those it removed, and those no earlier generation held), less
    the keys a later generation removed or wrote (the source holds them as they are now).
    Among those, in routing order, the chunk holds the `records` after the ones its manifest's
    earlier chunks hold that no later generation superseded."""
    manifest = chain[index]
    gen = manifest.generation
    header = csv_header_of(chain)
    was = None if header is None else header.encode("utf-8", "surrogateescape")
    if was is not None and routed.csv_header is not None and routed.csv_header != was:
        raise Unrepairable(
            f"the source's CSV header is no longer the one generation {gen} stored its"
            " records under"
        )
    keys = RecordKeys(ds, chain)
    later = {bytes.fromhex(h) for h in superseded(chain)[index]}
    for m in chain[index + 1 :]:
        later |= set(_key_hashes(keys, m, m.chunks, read))
    written: set[bytes] | None = None
    if not manifest.is_base:
        before = live_key_hashes(ds, chain[:index], read)
        written = {bytes.fromhex(h) for h in manifest.removed}
        written |= {kh for kh in routed.key_hashes() if kh not in before}
    earlier = [r for r in manifest.chunks if r.sequence < ref.sequence]
    skip = sum(kh not in later for kh in _key_hashes(keys, manifest, earlier, read))

    def kept(kh: bytes) -> bool:
        return kh not in later and (written is None or kh in written)

    plain = routed.take(skip, ref.records, kept)
    if xxhash.xxh3_128_hexdigest(plain) != ref.plain_xxh3:
        raise Unrepairable(
            f"the source changed since generation {gen}: its records routed to shard"
            f" {manifest.shard} no longer give the chunk's (a record in it was edited or"
            " removed, or records before it moved)"
        )
    return plain


def _key_hashes(
    keys: RecordKeys, manifest: ShardManifest, refs: Sequence[ChunkRef], read: ReadChunk
) -> Iterator[bytes]:
    for ref in sorted(refs, key=lambda r: r.sequence):
        for record in split_stored_records(read(manifest, ref), keys.framing, ref.records):
            if record.strip():
                yield keys.hash(record)


class SourceObjects:
    """The source's objects by name, listed once, for re-reading object parts."""

    def __init__(self, plan: Plan, ds: DatasetPlan, source: Source) -> None:
        self.part_size = ds.part_size or plan.chunk_size
        self.source = source
        self._listed: dict[str, SourceObject] | None = None

    def _objects(self) -> dict[str, SourceObject]:
        if self._listed is None:
            self._listed = {obj.name: obj for obj in self.source.list()}
        return self._listed

    def part(self, manifest: ShardManifest, ref: ChunkRef) -> bytes:
        """Part `ref.sequence` of object `ref.name` as generation G read it, or Unrepairable."""
        gen, name = manifest.generation, ref.name or ""
        obj = self._objects().get(name)
        if obj is None:
            raise Unrepairable(f"source object {name!r} is gone since generation {gen}")
        if obj.version != ref.version:
            raise Unrepairable(
                f"source object {name!r} changed since generation {gen} (version"
                f" {ref.version!r} then, {obj.version!r} now)"
            )
        offset = ref.sequence * self.part_size
        try:
            plain = self.source.read_range(obj, offset, ref.plain_size) if ref.plain_size else b""
        except SourceError as exc:
            raise Unrepairable(f"source object {name!r} cannot be read again: {exc}") from exc
        if xxhash.xxh3_128_hexdigest(plain) != ref.plain_xxh3:
            raise Unrepairable(
                f"source object {name!r} holds other bytes than generation {gen} stored in"
                f" part {ref.sequence} (changed in place, its version unchanged)"
            )
        return plain
