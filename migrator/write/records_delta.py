"""A records dataset's change set: per shard, the routed records diffed against the shard's
inventory as of the last generation, and the changed ones encoded into the generation.

A first generation writes each shard's whole spool as its base; a sync writes, per changed
shard, a delta spool of the records whose keys are new or changed, and tombstones (key hashes)
for the records removed or replaced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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
from migrator.repository.names import (
    delta_spool_path,
    digests_path,
    inventory_spool_path,
    spool_path,
)
from migrator.state.private import open_private
from migrator.write.scope import WriteScope
from migrator.write.shard_delta import ShardDelta
from migrator.write.shard_writer import ShardWriter
from migrator.write.stale_chunks import complete_untouched


def write_records(
    scope: WriteScope,
    folder: Path,
    shards: Sequence[int],
    spool_sizes: Sequence[int],
    extra: dict[str, str],
) -> None:
    """Write the shards (routed into `folder`, none complete yet) that changed; complete the
    others without a manifest."""
    ds, dr = scope.ds, scope.report
    todo: list[tuple[int, ShardDelta, Path]] = []
    for shard in shards:
        check_spool(scope, shard, folder, spool_sizes[shard])
        delta, path = records_delta(scope, shard, folder)
        if delta is None:  # nothing changed in the shard since its last generation
            complete_untouched(scope, shard)
            continue
        todo.append((shard, delta, path))
    sizes = {shard: path.stat().st_size if path.exists() else 0 for shard, _, path in todo}
    dr.bytes_in += sum(sizes.values())
    scope.progress.start(ds.name, "encoding", sum(sizes.values()))
    with ShardWriter(scope, DatasetKind.RECORDS, extra) as writer:
        for shard, delta, path in todo:
            dr.shards_changed += 1
            dr.removed += len(delta.removed)
            scope.mark_running(shard)
            writer.encode_spool(shard, path)
            writer.shard_read(shard, delta)
        writer.settle()


def check_spool(scope: WriteScope, shard: int, folder: Path, routed: int) -> None:
    """The shard's spool is what routing wrote: a worker that does not share the router's
    state_dir would otherwise see no records and write the shard as empty or deleted."""
    path = spool_path(folder, shard)
    size = path.stat().st_size if path.exists() else 0
    if size != routed:
        raise StateError(
            f"dataset {scope.ds.name} shard {shard}: the spool {path} holds {size:,} bytes,"
            f" routing wrote {routed:,}; every worker of a plan must see the same state_dir"
            " (a shared volume)"
        )


def records_delta(scope: WriteScope, shard: int, folder: Path) -> tuple[ShardDelta | None, Path]:
    """Diff the shard's routed records against its inventory as of the last generation:
    (None, _) when nothing changed, else the delta and the spool of records to write."""
    ds, gen = scope.ds, scope.generation
    spool = spool_path(folder, shard)
    dpath = digests_path(folder, shard)
    entries = dpath.read_bytes() if dpath.exists() else b""
    inventory_path = inventory_spool_path(folder, shard)
    if not inventory_path.exists():
        _write_atomic(inventory_path, pack_records_inventory(entries))
    previous, previous_xxh3 = scope.previous_head(shard)
    if previous == 0:
        digest, live = spool_digest(entries)
        return ShardDelta(0, None, (), 0, 0, digest, digest, live, inventory_path), spool
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
        return None, spool
    dropped = gone | (changed & before.keys())
    removed_digest = added_digest = 0
    for kh in dropped:
        removed_digest = add(removed_digest, before[kh].digest)
    for kh in changed:
        added_digest = add(added_digest, current[kh].digest)
    delta_path = delta_spool_path(folder, shard)
    if not delta_path.exists():  # a resumed run finds the very same delta spool
        write_delta_spool(spool, entries, changed, delta_path)
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
    return delta, delta_path


def write_delta_spool(spool: Path, entries: bytes, changed: set[bytes], target: Path) -> None:
    """The records of changed keys, in spool order: what a sync writes for the shard."""
    tmp = target.with_name(target.name + ".tmp")
    with spool.open("rb", buffering=8 * 1024 * 1024) as src, open_private(tmp, "wb") as out:
        for kh, length in iter_spool_entries(entries):
            record = src.read(length)
            if kh in changed:
                out.write(record)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
