"""Encoding, the stage after routing: per shard, the change set (records_change.py) encoded
into the generation through a ShardWriter, and the shards nothing changed in completed
without a manifest.

A first generation writes each shard's routed records whole as its base. A sync writes, per
changed shard, a delta spool of the records whose keys are new or changed, and tombstones (key
hashes) for the records removed or replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from migrator.codec.digests import (
    iter_spool_entries,
)
from migrator.plan.kinds import DatasetKind
from migrator.state.private import open_private
from migrator.write import records_change
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
            found = records_change.whole_shard_change(
                scope, shard, routed, folder, write_delta_spool
            )
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
            dr.removed += len(delta.removed) - delta.replaced
            dr.replaced += delta.replaced
            scope.mark_running(shard)
            # A base of a whole diff writes the routed records as they are: their digest
            # entries (read again here, not held for every shard) give the record ends.
            whole = delta.base and not routed.incremental
            writer.encode_stream(
                shard, opener, size, routed.routed(shard).entries if whole else None
            )
            writer.shard_read(shard, delta)
        writer.settle()


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
