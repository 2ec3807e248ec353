"""Where each shard's audit ledger ends: read by audit and freshness, set by state rebuild, and
moved only inside the transaction that records the chunks a new segment explains."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from migrator.errors import StateError
from migrator.state.backend import Backend
from migrator.state.model import LedgerHead, LedgerMove
from migrator.state.schema import ledger_heads


class LedgerHeadTable:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def ledger_heads(self, dataset: str, shard_ids: Iterable[int]) -> dict[int, LedgerHead]:
        """Where each shard's audit ledger ends; shards without one are left out."""
        wanted = sorted(set(shard_ids))
        with self.backend.read() as conn:
            rows = conn.execute(
                select(
                    ledger_heads.c.shard,
                    ledger_heads.c.segment,
                    ledger_heads.c.entries,
                    ledger_heads.c.link,
                ).where(ledger_heads.c.dataset == dataset, ledger_heads.c.shard.in_(wanted))
            ).fetchall()
        return {int(s): LedgerHead(dataset, int(s), int(g), int(n), str(k)) for s, g, n, k in rows}

    def ledger_begun(self, dataset: str) -> bool:
        """Whether the store knows an audit ledger head of any shard of the dataset."""
        with self.backend.read() as conn:
            row = conn.execute(
                select(ledger_heads.c.shard).where(ledger_heads.c.dataset == dataset).limit(1)
            ).fetchone()
        return row is not None

    def ledger_head(self, dataset: str, shard: int) -> LedgerHead | None:
        return self.ledger_heads(dataset, [shard]).get(shard)

    def set_ledger_head(self, head: LedgerHead) -> None:
        """The head as the destination's ledger shows it (state rebuild)."""
        row = _ledger_row(head)
        with self.backend.write("set a ledger head") as conn:
            conn.execute(self.backend.upsert(ledger_heads, row, ["dataset", "shard"]), row)

    def advance(self, conn: Connection, moves: Sequence[LedgerMove]) -> None:
        """Inside the writing transaction: a head moves only from the segment its new segment
        was written after, so two writers can never both extend one ledger."""
        for move in moves:
            row = _ledger_row(move.after)
            if move.before == 0:
                stmt = self.backend.insert(ledger_heads).on_conflict_do_nothing(
                    index_elements=["dataset", "shard"]
                )
                done = conn.execute(stmt, row).rowcount
            else:
                done = conn.execute(
                    update(ledger_heads)
                    .where(
                        ledger_heads.c.dataset == move.after.dataset,
                        ledger_heads.c.shard == move.after.shard,
                        ledger_heads.c.segment == move.before,
                    )
                    .values(row)
                ).rowcount
            if done != 1:
                raise StateError(
                    f"dataset {move.after.dataset} shard {move.after.shard}: the audit ledger"
                    f" moved past segment {move.before} while segment {move.after.segment} was"
                    " written; nothing of this batch was recorded"
                )


def _ledger_row(head: LedgerHead) -> dict[str, Any]:
    return {
        "dataset": head.dataset,
        "shard": head.shard,
        "segment": head.segment,
        "entries": head.entries,
        "link": head.link,
        "updated_at": time.time(),
    }
