"""Removing chunks a shard's manifest will not list: parts of objects that changed or vanished
before the shard closed, and what an interrupted attempt sent for a shard left untouched."""

from __future__ import annotations

from collections.abc import Sequence

from migrator.codec.ledger_entry import EntryReason
from migrator.repository.shard_objects import delete_objects
from migrator.state.model import CommittedChunk
from migrator.write.ledger import LedgerItem
from migrator.write.scope import WriteScope


def delete_chunks(
    scope: WriteScope, shard: int, doomed: list[CommittedChunk], reason: EntryReason
) -> None:
    """Delete committed chunks at the destination and forget them: the ledger segment that
    records it is stored first and committed with the forgetting."""
    if not doomed:
        return
    ds = scope.ds.name
    scope.guard.check(ds, shard)  # a worker that may have lost the shard deletes nothing
    moves = scope.ledger.deletes(map(LedgerItem.of, doomed), reason)
    delete_objects(scope.store, (c.object_key for c in doomed))
    scope.state.forget_chunks(
        ds,
        scope.generation,
        [c.object_key for c in doomed],
        fence=scope.guard.fence(),
        ledger=moves,
    )


def complete_untouched(scope: WriteScope, shard: int) -> None:
    """No manifest for the shard in this generation; parts an interrupted attempt sent
    for an object gone since are removed first, so nothing unlisted stays behind."""
    ds, gen = scope.ds.name, scope.generation
    stale = list(scope.state.shard_chunks(ds, gen, shard))
    scope.guard.check(ds, shard)
    delete_chunks(scope, shard, stale, EntryReason.UNTOUCHED_SHARD)
    scope.state.complete_shard(ds, gen, shard, manifest_key=None, fence=scope.guard.fence())


def complete_untouched_shards(scope: WriteScope, shards: Sequence[int]) -> None:
    """complete_untouched for many shards: in one transaction when the generation holds no
    chunk at all (a sync that changed a few shards of thousands), else one by one."""
    ds, gen = scope.ds.name, scope.generation
    if scope.state.has_chunks(ds, gen):
        for shard in shards:
            complete_untouched(scope, shard)
        return
    for shard in shards:
        scope.guard.check(ds, shard)
    scope.state.complete_untouched_shards(ds, gen, list(shards), fence=scope.guard.fence())
