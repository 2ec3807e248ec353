"""A sync's change set of one records shard: from the files that changed alone (shard_change),
or, when every file was read, from a diff of the whole shard (whole_shard_change).

The shard's inventory is a multiset of digest entries, one per record. What a changed or
removed file contributed to it (its digests from the generation that read it) leaves it; what
the new and changed files contribute now joins it. A key changed when the two differ for it;
each such key's records are written again whole and its old ones tombstoned, exactly as a
whole-shard diff would, without reading a record of an unchanged file (but for a key one of
them holds too).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from migrator.codec.digests import (
    DIGEST_ENTRY,
    KeyEntry,
    RecordsMap,
    add,
    pack_records_inventory,
    records_map_from_spool,
    spool_digest,
    unpack_records_entries,
)
from migrator.errors import StateError
from migrator.repository.names import delta_spool_path, inventory_spool_path
from migrator.state.private import open_private
from migrator.write.routed_shards import RoutedShards
from migrator.write.scope import WriteScope
from migrator.write.shard_delta import ShardDelta

Opener = Callable[[], BinaryIO]
DeltaWriter = Callable[[Opener, bytes, set[bytes], Path, bytes], None]  # write_delta_spool


def shard_change(
    scope: WriteScope,
    shard: int,
    routed: RoutedShards,
    folder: Path,
    write_delta_spool: DeltaWriter,
) -> tuple[ShardDelta, Opener, int] | None:
    """None when the changed files change nothing in the shard, else its delta and the
    records to write."""
    ds = scope.ds
    here = routed.routed(shard)
    old_entries = routed.retired_entries(shard)
    if not here.entries and not old_entries:
        return None
    new = records_map_from_spool(here.entries)
    old = records_map_from_spool(old_entries)
    changed = {k for k in new.keys() | old.keys() if _differs(new.get(k), old.get(k))}
    if not changed:
        return None
    previous, previous_xxh3 = scope.previous_head(shard)
    before_entries = _inventory(scope, shard, previous) if previous else b""
    after_entries = _replace(before_entries, old_entries, here.entries, ds.name, shard)
    before = records_map_from_spool(before_entries, only=changed)
    after = records_map_from_spool(after_entries, only=changed)
    dropped = changed & before.keys()
    written = changed & after.keys()
    again = {k for k in written if after[k].records > (new[k].records if k in new else 0)}
    extra = routed.unchanged_records(shard, again) if again else b""
    digest, live = spool_digest(after_entries)
    inventory_path = inventory_spool_path(folder, shard)
    if not inventory_path.exists():
        write_atomic(inventory_path, pack_records_inventory(after_entries))
    delta_path = delta_spool_path(folder, shard)
    if not delta_path.exists():  # a resumed run finds the very same delta spool
        write_delta_spool(here.open, here.entries, written, delta_path, extra)
    delta = change_set(
        (previous, previous_xxh3), before, after, dropped, written, (digest, live), inventory_path
    )
    return delta, lambda: delta_path.open("rb"), delta_path.stat().st_size


def whole_shard_change(
    scope: WriteScope,
    shard: int,
    routed: RoutedShards,
    folder: Path,
    write_delta_spool: DeltaWriter,
) -> tuple[ShardDelta, Opener, int] | None:
    """Diff the shard's routed records (every file's) against its inventory as of the last
    generation: None when nothing changed, else the delta and the records to write."""
    here = routed.routed(shard)
    entries = here.entries
    inventory_path = inventory_spool_path(folder, shard)
    if not inventory_path.exists():
        write_atomic(inventory_path, pack_records_inventory(entries))
    previous, previous_xxh3 = scope.previous_head(shard)
    if previous == 0:
        digest, live = spool_digest(entries)
        delta = ShardDelta(0, None, (), 0, 0, digest, digest, live, inventory_path)
        return delta, here.opener(), here.size
    current = records_map_from_spool(entries)  # one pass gives the totals too
    digest = live = 0
    for e in current.values():
        digest = add(digest, e.digest)
        live += e.records
    before = records_map_from_spool(_inventory(scope, shard, previous))
    changed = {
        kh
        for kh, e in current.items()
        if (p := before.get(kh)) is None or p.digest != e.digest or p.records != e.records
    }
    gone = before.keys() - current.keys()
    if not changed and not gone:
        return None
    dropped = gone | (changed & before.keys())
    delta_path = delta_spool_path(folder, shard)
    if not delta_path.exists():  # a resumed run finds the very same delta spool
        write_delta_spool(here.open, entries, changed, delta_path, b"")
    delta = change_set(
        (previous, previous_xxh3), before, current, dropped, changed, (digest, live), inventory_path
    )
    return delta, lambda: delta_path.open("rb"), delta_path.stat().st_size


def _inventory(scope: WriteScope, shard: int, previous: int) -> bytes:
    """The shard's inventory as of its last generation (`previous`), as digest entries."""
    ds = scope.ds.name
    blob = scope.state.shard_inventory(ds, shard, scope.generation)
    if blob is None:
        raise StateError(
            f"dataset {ds} shard {shard}: the state store has no inventory of"
            f" generation {previous}; rebuild the state before syncing"
        )
    return unpack_records_entries(blob)


def change_set(
    previous: tuple[int, str | None],
    before: RecordsMap,
    after: RecordsMap,
    dropped: set[bytes],
    written: set[bytes],
    totals: tuple[int, int],
    inventory: Path,
) -> ShardDelta:
    """The shard's delta: `dropped` keys tombstoned (as `before` held them), `written` keys'
    records added (as `after` holds them); `totals`: the shard's digest and live records."""
    removed_digest = added_digest = 0
    for k in dropped:
        removed_digest = add(removed_digest, before[k].digest)
    for k in written:
        added_digest = add(added_digest, after[k].digest)
    return ShardDelta(
        previous[0],
        previous[1],
        tuple(sorted(k.hex() for k in dropped)),
        sum(before[k].records for k in dropped),
        removed_digest,
        added_digest,
        totals[0],
        totals[1],
        inventory,
        replaced=len(dropped & written),
    )


def _differs(a: KeyEntry | None, b: KeyEntry | None) -> bool:
    if a is None or b is None:
        return a is not b
    return a.digest != b.digest or a.records != b.records


def _replace(inventory: bytes, leaving: bytes, joining: bytes, dataset: str, shard: int) -> bytes:
    """The inventory's entries with `leaving` taken out (as a multiset) and `joining` added."""
    if not leaving:
        return inventory + joining
    size = DIGEST_ENTRY.size
    out = Counter(leaving[i : i + size] for i in range(0, len(leaving), size))
    kept = bytearray()
    for i in range(0, len(inventory), size):
        entry = inventory[i : i + size]
        if out[entry]:
            out[entry] -= 1
        else:
            kept += entry
    if +out:
        raise StateError(
            f"dataset {dataset} shard {shard}: the state store's inventory lacks"
            f" {sum(out.values())} record(s) the changed files held when they were last read;"
            " remove the state_dir's routed folder of this dataset to diff the next sync whole"
        )
    return bytes(kept) + joining


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
