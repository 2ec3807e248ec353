"""What every stage over one plan holds: the plan and the store, key provider and state store
it is given; and, for the stages that write shards (a run, a compaction), the lease guard, the
datasets' ledger writers and the scope a generation is written in.

A run, a compaction and a state rebuild are each handed the same things; holding them in one
place keeps their wiring, and what a write scope is built from, from drifting apart.
"""

from __future__ import annotations

import functools

from migrator.keys.datakey import DataKey
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetPlan, Plan
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore
from migrator.write.committer import COMMIT_BATCH
from migrator.write.ledger import LedgerWriter
from migrator.write.reports import DatasetReport, ProgressSink
from migrator.write.scope import ShardGuard, WriteScope, ledger_writer


class PlanStage:
    """One plan worked against one store, key provider and state store (all injected), with
    `workers` threads, reporting to `progress` (a stage that shows none ignores it)."""

    def __init__(
        self,
        plan: Plan,
        store: ObjectStore,
        provider: KeyProvider,
        state: StateDB,
        progress: ProgressSink | None = None,
        *,
        workers: int = 4,
    ) -> None:
        self.plan = plan
        self.store = store
        self.provider = provider
        self.state = state
        self.progress = progress or ProgressSink()
        self.workers = workers


class WriteStage(PlanStage):
    """A stage that writes shards of generations and each dataset's audit ledger."""

    @functools.cached_property
    def guard(self) -> ShardGuard:
        """Whether a shard may still be written: a run sets `guard.keeper` while it holds
        leases; without one (compaction holds the generation lock) every shard may be."""
        return ShardGuard()

    @functools.cached_property
    def ledgers(self) -> dict[str, LedgerWriter]:
        """By dataset: who writes its audit ledgers."""
        return {}

    def open_ledger(self, dataset: str, first: DataKey, key: DataKey) -> LedgerWriter:
        """The dataset's ledger writer (see ledger_writer), kept for its generations' scopes."""
        writer = ledger_writer(
            self.plan, self.store, self.state, self.provider, self.guard, dataset, first, key
        )
        self.ledgers[dataset] = writer
        return writer

    def write_scope(
        self,
        ds: DatasetPlan,
        generation: int,
        key: DataKey,
        report: DatasetReport,
        workers: int,
        commit_batch: int = COMMIT_BATCH,
    ) -> WriteScope:
        """The scope `generation` of `ds` is written in, sealed under `key`."""
        return WriteScope(
            self.plan,
            ds,
            generation,
            key,
            self.store,
            self.state,
            self.guard,
            self.ledgers[ds.name],
            report,
            self.progress,
            workers,
            commit_batch,
        )
