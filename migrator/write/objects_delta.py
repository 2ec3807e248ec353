"""An objects dataset's change set: per shard, the source listing diffed against the shard's
inventory as of the last generation, and the parts of new or changed objects written.

Objects arrive in listing order, spread over all shards, so every shard's manifest follows the
whole listing; an object's parts committed for the same source version are not sent again.
"""

from __future__ import annotations

import functools
import mmap
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from migrator.codec.chunk import object_tagger
from migrator.codec.digests import (
    ObjectEntry,
    ObjectsMap,
    add,
    objects_digest,
    pack_objects_map,
    unpack_objects_map,
)
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import StateError
from migrator.plan.kinds import DatasetKind
from migrator.repository.names import object_part_key
from migrator.sharding import shard_of
from migrator.sources.base import Source, SourceObject, SourceView
from migrator.sources.listing import list_source_once
from migrator.state.model import CommittedChunk
from migrator.write.pipeline import ChunkJob
from migrator.write.scope import WriteScope
from migrator.write.shard_delta import ShardDelta
from migrator.write.shard_writer import ShardWriter
from migrator.write.stale_chunks import complete_untouched


def write_objects(scope: WriteScope, source: Source, shards: list[int]) -> None:
    """Write the parts of the objects of these shards (none complete yet) that are new or
    changed since the last generation, then each changed shard's manifest; complete the
    others without one."""
    ds, gen, dr, state = scope.ds, scope.generation, scope.report, scope.state
    part_size = ds.part_size or scope.plan.chunk_size
    before: dict[int, ObjectsMap | None] = {}
    for shard in shards:
        previous, _ = scope.previous_head(shard)
        blob = state.shard_inventory(ds.name, shard, gen) if previous else None
        if previous and blob is None:
            raise StateError(
                f"dataset {ds.name} shard {shard}: the state store has no inventory of"
                f" generation {previous}; rebuild the state before syncing"
            )
        before[shard] = unpack_objects_map(blob) if blob is not None else None
    current: dict[int, ObjectsMap] = {shard: {} for shard in before}
    sent: dict[int, set[str]] = {shard: set() for shard in before}

    def changed(src: SourceObject) -> int | None:
        """The shard of an object this generation must send, else None."""
        shard = shard_of(src.name.encode(), ds.shards)
        if shard not in current:
            return None
        entry = ObjectEntry(src.version, src.size)
        current[shard][src.name] = entry
        prior = before[shard]
        if prior is not None and prior.get(src.name) == entry:
            return None
        sent[shard].add(src.name)
        return shard

    # One listing, whole before any byte moves, so the source can refuse names restore could
    # not write back (sources.base.RestorableNames); it gives the progress bar's total (an
    # upper bound on a sync) and the work. Objects of other shards are not kept.
    listing = [
        src for src in list_source_once(source) if shard_of(src.name.encode(), ds.shards) in current
    ]
    scope.progress.start(ds.name, "encoding", sum(src.size for src in listing))
    for shard in current:
        scope.mark_running(shard)
    tag = object_tagger(scope.key)
    # A first run has nothing to skip: no state look-up per part.
    fresh = not state.has_chunks(ds.name, gen)
    into = _reader_into(source)
    with ShardWriter(scope, DatasetKind.OBJECTS, {}) as writer:
        for src in listing:
            picked = changed(src)
            if picked is None:
                continue
            shard = picked
            name_tag = tag(src.name)
            need: Callable[[int], bool] = every_part
            if not fresh:
                need = _needed(scope, shard, name_tag, src.version)
            for part, offset, length in parts_needed(src.size, part_size, need):
                ident = ChunkIdentity(
                    ChunkKind.OBJECT_PART, scope.plan.name, ds.name, gen, shard, part, name_tag
                )
                okey = object_part_key(ds.name, gen, shard, name_tag, part)
                job = ChunkJob(ident, okey, b"", 0, src.name, 0, src.version)
                if into is not None:
                    job.load_into = functools.partial(into, src, offset, length)
                else:
                    job.load = functools.partial(source.read_range, src, offset, length)
                job.size = length
                writer.submit(job)
                scope.progress.advance(length)
                writer.take_finished()
            dr.bytes_in += src.size
        writer.settle()
        # Objects arrive in listing order, spread over all shards: all finish together.
        for shard in sorted(current):
            delta = objects_delta(
                before[shard], current[shard], sent[shard], part_size, *scope.previous_head(shard)
            )
            if delta is None:
                complete_untouched(scope, shard)
                continue
            dr.shards_changed += 1
            dr.removed += len(delta.removed) - delta.replaced
            dr.replaced += delta.replaced
            writer.shard_read(shard, delta)
        writer.settle()


@runtime_checkable
class ReadsInto(Protocol):
    def read_range_into(
        self, obj: SourceObject, offset: int, length: int, buffer: mmap.mmap
    ) -> memoryview:
        """read_range into a buffer the caller reuses (sources.local)."""


def _reader_into(
    source: Source,
) -> Callable[[SourceObject, int, int, mmap.mmap], memoryview] | None:
    """The source's read into a reused buffer, if the source below its views has one (views
    pass reads through as they are)."""
    base = source
    while isinstance(base, SourceView):
        base = base.inner
    return base.read_range_into if isinstance(base, ReadsInto) else None


def _needed(scope: WriteScope, shard: int, name_tag: bytes, version: str) -> Callable[[int], bool]:
    """Which parts of an object still need sending: not committed for this file version."""
    ds, gen, dr = scope.ds, scope.generation, scope.report

    def need(part: int) -> bool:
        okey = object_part_key(ds.name, gen, shard, name_tag, part)
        prior = scope.state.committed_chunk(ds.name, gen, okey)
        if prior is not None and prior.source_version == version:
            dr.chunks_skipped += 1
            dr.bytes_stored += prior.stored_size
            scope.progress.advance(prior.plain_size)
            return False
        return True

    return need


def every_part(part: int) -> bool:
    """A first generation sends every part of every object."""
    return True


def parts_needed(
    size: int, part_size: int, need: Callable[[int], bool]
) -> Iterator[tuple[int, int, int]]:
    """(part, offset, length) of the parts still needed; an empty file is one empty part."""
    parts = max(1, -(-size // part_size))
    for part in range(parts):
        if need(part):
            offset = part * part_size
            yield part, offset, min(part_size, size - offset)


def objects_delta(
    before: ObjectsMap | None,
    current: ObjectsMap,
    sent: set[str],
    part_size: int,
    previous: int,
    previous_xxh3: str | None,
) -> ShardDelta | None:
    """A shard's objects delta from its inventory before and its listing now; None if equal."""

    def keep(c: CommittedChunk) -> bool:
        entry = current.get(c.name or "")
        return (
            c.name in sent
            and entry is not None
            and entry.version == c.source_version
            and c.sequence < max(1, -(-entry.size // part_size))
        )

    digest = objects_digest(current)
    inventory = pack_objects_map(current)
    added = 0
    for name in sent:
        added = add(added, current[name].digest(name))
    if before is None or previous == 0:
        return ShardDelta(0, None, (), 0, 0, added, digest, 0, inventory, keep)
    gone = before.keys() - current.keys()
    if not sent and not gone:
        return None
    dropped = gone | (sent & before.keys())
    removed_digest = 0
    for name in dropped:
        removed_digest = add(removed_digest, before[name].digest(name))
    return ShardDelta(
        previous,
        previous_xxh3,
        tuple(sorted(dropped)),
        0,
        removed_digest,
        added,
        digest,
        0,
        inventory,
        keep,
        replaced=len(sent & before.keys()),
    )
