"""Committing confirmed chunks to the state store in batches, and noticing complete shards."""

from __future__ import annotations

import time
from collections.abc import Callable

from migrator.state.db import Fence, StateDB
from migrator.state.model import CommittedChunk
from migrator.write.ledger import LedgerWriter
from migrator.write.reports import DatasetReport

COMMIT_BATCH = 256  # chunks a state-store transaction commits at most (unless time is up)
COMMIT_SECONDS = 0.5  # ...or what was confirmed within this long


class Committer:
    """Batches confirmed chunks into state-store transactions; a shard whose chunks are all read
    and confirmed gets its manifest at once, so the pool never drains between shards."""

    def __init__(
        self,
        state: StateDB,
        report: DatasetReport,
        on_shard_done: Callable[[int], None],
        fence: Callable[[], Fence | None],
        ledger: LedgerWriter,
        *,
        batch: int = COMMIT_BATCH,
    ) -> None:
        self.state = state
        self.report = report
        self.on_shard_done = on_shard_done
        self.fence = fence
        self.ledger = ledger  # records each batch in its shards' audit ledgers
        self.batch_size = batch
        self.batch: list[CommittedChunk] = []
        self.last = time.monotonic()
        self.outstanding: dict[int, int] = {}
        self.awaiting: set[int] = set()

    def submitted(self, shard: int) -> None:
        self.outstanding[shard] = self.outstanding.get(shard, 0) + 1

    def shard_read(self, shard: int) -> None:
        """Every chunk of the shard has been submitted (or was committed before)."""
        self.awaiting.add(shard)
        self._settle()

    def take(self, chunks: list[CommittedChunk], force: bool = False) -> None:
        for c in chunks:
            self.outstanding[c.shard] -= 1
            self.report.chunks_written += 1
            self.report.bytes_stored += c.stored_size
        self.batch.extend(chunks)
        now = time.monotonic()
        if force or len(self.batch) >= self.batch_size or now - self.last >= COMMIT_SECONDS:
            self._commit()
        self._settle()

    def _commit(self) -> None:
        if self.batch:
            # The batch's ledger segments are stored first; their heads move with its rows.
            moves = self.ledger.adds(self.batch)
            self.state.commit_chunks(self.batch, fence=self.fence(), ledger=moves)
        self.batch = []
        self.last = time.monotonic()

    def _settle(self) -> None:
        ready = sorted(s for s in self.awaiting if not self.outstanding.get(s))
        if not ready:
            return
        self._commit()  # the manifest is built from the state store: commit its chunks first
        for shard in ready:
            self.awaiting.discard(shard)
            self.on_shard_done(shard)
