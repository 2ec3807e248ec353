"""One dataset's generation as the write stage works it, and the lease guard on its shards.

A run and a compaction both write shards of a generation; what they share (the store, the
state store, the sealing key, the ledger, who may write which shard) travels as one scope.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from migrator.codec.ledger import LedgerKeys
from migrator.keys.datakey import DataKey
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.state.db import Fence, StateDB
from migrator.state.leases import LeaseKeeper, worker_identity
from migrator.state.model import ShardStatus
from migrator.stores.base import ObjectStore
from migrator.write.committer import COMMIT_BATCH
from migrator.write.ledger import LedgerWriter
from migrator.write.reports import DatasetReport, ProgressSink


class ShardGuard:
    """Whether this process may still write a shard. A run's leases say so (set `keeper` while
    they are held); without a keeper (compaction holds the dataset's generation lock instead)
    every shard may be written and commits carry no fence."""

    def __init__(self, keeper: LeaseKeeper | None = None) -> None:
        self.keeper = keeper

    def check(self, dataset: str, shard: int) -> None:
        """Raise LeaseLostError before a store write for a shard this process may have lost."""
        if self.keeper is not None:
            self.keeper.check(dataset, shard)

    def fence(self) -> Fence | None:
        """The leases a state-store commit must still find held."""
        return self.keeper.fence() if self.keeper is not None else None

    def owner(self) -> str:
        """Who writes: the lease owner, else this process's worker identity."""
        return self.keeper.owner if self.keeper is not None else worker_identity()


def encode_workers(plan: Plan) -> int:
    """Threads that seal chunks (uploads get plan.upload_concurrency more)."""
    return plan.workers or os.cpu_count() or 1


def ledger_writer(
    plan: Plan,
    store: ObjectStore,
    state: StateDB,
    provider: KeyProvider,
    guard: ShardGuard,
    dataset: str,
    first: DataKey,
    key: DataKey,
) -> LedgerWriter:
    """The dataset's ledger writer: signs with the plan's signing key, tags plaintext digests
    with a key derived from its first data key, records chunks as sealed under `key`, and
    stores nothing for a shard in doubt."""
    return LedgerWriter(
        plan.name,
        dataset,
        store,
        state,
        LedgerKeys(first, provider.signer),
        key_id=key.key_id.hex(),
        who=guard.owner(),
        guard=lambda shard: guard.check(dataset, shard),
    )


@dataclass(frozen=True)
class WriteScope:
    """A dataset's generation being written, sealed under `key`, and what writing it needs."""

    plan: Plan
    ds: DatasetPlan
    generation: int
    key: DataKey
    store: ObjectStore
    state: StateDB
    guard: ShardGuard
    ledger: LedgerWriter
    report: DatasetReport
    progress: ProgressSink
    workers: int  # threads that seal chunks
    commit_batch: int = COMMIT_BATCH

    def complete_shards(self) -> set[int]:
        return self.state.complete_shards(self.ds.name, self.generation)

    def mark_running(self, shard: int) -> None:
        """A shard this generation starts writing (one it resumes is running already)."""
        ds, gen = self.ds.name, self.generation
        if self.state.shard_status(ds, gen, shard) is ShardStatus.PENDING:
            self.state.set_shard_status(ds, gen, shard, ShardStatus.RUNNING)

    def previous_head(self, shard: int) -> tuple[int, str | None]:
        """(generation, stored xxh3) of the shard's last manifest before this generation;
        (0, None) if there is none, and this generation writes the shard's base."""
        heads = [
            h for h in self.state.shard_heads(self.ds.name, shard) if h.generation < self.generation
        ]
        return (heads[-1].generation, heads[-1].manifest_xxh3) if heads else (0, None)

    def count_committed(self, shards: Iterable[int], *, count_input: bool = False) -> None:
        """Report the chunks of these shards committed before as skipped (and, for records
        or with `count_input`, their plaintext as read)."""
        dr = self.report
        for shard in shards:
            for c in self.state.shard_chunks(self.ds.name, self.generation, shard):
                dr.chunks_skipped += 1
                dr.records += c.records
                dr.bytes_stored += c.stored_size
                if count_input or self.ds.kind is DatasetKind.RECORDS:
                    dr.bytes_in += c.plain_size
