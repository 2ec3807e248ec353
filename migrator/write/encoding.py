"""A records dataset's change set: per shard, what routing found against the shard's inventory
as of the last generation, and the changed records encoded into the generation.

A first generation writes each shard's routed records whole as its base. A sync writes, per
changed shard, a delta spool of the records whose keys are new or changed, and tombstones (key
hashes) for the records removed or replaced. With a base file table (records_change.py) a sync
looks only at the files that changed; without one, every file was routed and each shard is
diffed whole here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from migrator.codec.digests import (
    add,
    iter_spool_entries,
    pack_records_inventory,
    records_map_from_spool,
    spool_digest,
    unpack_records_map,
)
from migrator.errors import StateError
from migrator.plan.kinds import DatasetKind
from migrator.repository.names import delta_spool_path, inventory_spool_path
from migrator.state.private import open_private
from migrator.write import records_change
from migrator.write.records_change import write_atomic
from migrator.write.routed_shards import RoutedShards
from migrator.write.scope import WriteScope
from migrator.write.shard_delta import ShardDelta
from migrator.write.shard_writer import ShardWriter
from migrator.write.stale_chunks import complete_untouched_shards

Opener = Callable[[], BinaryIO]


def write_records(
    scope: WriteScope,
    routed: RoutedShards,
    folder: Path,
    shards: Sequence[int],
    extra: dict[str, str],
) -> None:
    """Write the shards (none complete yet) that changed; complete the others without a
    manifest. `folder` is the generation's scratch folder (inventories, delta spools)."""
    ds, dr = scope.ds, scope.report
    todo: list[tuple[int, ShardDelta, Opener, int]] = []
    folder.mkdir(parents=True, exist_ok=True)
    untouched: list[int] = []
    for shard in shards:
        if routed.incremental:
            found = records_change.shard_change(scope, shard, routed, folder, write_delta_spool)
        else:
            found = records_delta(scope, shard, routed, folder)
        if found is None:  # nothing changed in the shard since its last generation
            untouched.append(shard)
            continue
        todo.append((shard, *found))
    complete_untouched_shards(scope, untouched)
    dr.bytes_in += sum(size for *_, size in todo)
    scope.progress.start(ds.name, "encoding", sum(size for *_, size in todo))
    with ShardWriter(scope, DatasetKind.RECORDS, extra) as writer:
        for shard, delta, opener, size in todo:
            dr.shards_changed += 1
            dr.removed += len(delta.removed)
            scope.mark_running(shard)
            writer.encode_stream(shard, opener, size)
            writer.shard_read(shard, delta)
        writer.settle()


def records_delta(
    scope: WriteScope, shard: int, routed: RoutedShards, folder: Path
) -> tuple[ShardDelta, Opener, int] | None:
    """Diff the shard's routed records (every file's) against its inventory as of the last
    generation: None when nothing changed, else the delta and the records to write."""
    ds, gen = scope.ds, scope.generation
    here = routed.routed(shard)
    entries = here.entries
    inventory_path = inventory_spool_path(folder, shard)
    if not inventory_path.exists():
        write_atomic(inventory_path, pack_records_inventory(entries))
    previous, previous_xxh3 = scope.previous_head(shard)
    if previous == 0:
        digest, live = spool_digest(entries)
        delta = ShardDelta(0, None, (), 0, 0, digest, digest, live, inventory_path)
        return delta, here.open, here.size
    current = records_map_from_spool(entries)  # one pass gives the totals too
    digest = live = 0
    for e in current.values():
        digest = add(digest, e.digest)
        live += e.records
    blob = scope.state.shard_inventory(ds.name, shard, gen)
    if blob is None:
        raise StateError(
            f"dataset {ds.name} shard {shard}: the state store has no inventory of"
            f" generation {previous}; rebuild the state before syncing"
        )
    before = unpack_records_map(blob)
    changed = {
        kh
        for kh, e in current.items()
        if (p := before.get(kh)) is None or p.digest != e.digest or p.records != e.records
    }
    gone = before.keys() - current.keys()
    if not changed and not gone:
        return None
    dropped = gone | (changed & before.keys())
    removed_digest = added_digest = 0
    for kh in dropped:
        removed_digest = add(removed_digest, before[kh].digest)
    for kh in changed:
        added_digest = add(added_digest, current[kh].digest)
    delta_path = delta_spool_path(folder, shard)
    if not delta_path.exists():  # a resumed run finds the very same delta spool
        write_delta_spool(here.open, entries, changed, delta_path)
    delta = ShardDelta(
        previous,
        previous_xxh3,
        tuple(sorted(kh.hex() for kh in dropped)),
        sum(before[kh].records for kh in dropped),
        removed_digest,
        added_digest,
        digest,
        live,
        inventory_path,
    )
    return delta, _opener(delta_path), delta_path.stat().st_size


def write_delta_spool(
    spool: Opener, entries: bytes, changed: set[bytes], target: Path, extra: bytes = b""
) -> None:
    """The records of changed keys, in spool order (then `extra`, records of those keys read
    again from unchanged files): what a sync writes for the shard."""
    tmp = target.with_name(target.name + ".tmp")
    with spool() as src, open_private(tmp, "wb") as out:
        for kh, length in iter_spool_entries(entries):
            record = src.read(length)
            if kh in changed:
                out.write(record)
        out.write(extra)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


def _opener(path: Path) -> Opener:
    return lambda: path.open("rb")
