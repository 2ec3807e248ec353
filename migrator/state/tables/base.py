"""What the table modules stand on: the shared Backend, the dataset sealers of the tables that
hold sealed values, and the leases and ledger heads of those whose writes are fenced; and the one
shard of one generation that statements built once select by."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table, bindparam

from migrator.state.backend import Backend
from migrator.state.sealed import DatasetSealers
from migrator.state.tables.leases import LeaseTable
from migrator.state.tables.ledger import LedgerHeadTable


class SealedTable:
    """A table some of whose values are sealed under its dataset's bound key."""

    def __init__(self, backend: Backend, sealers: DatasetSealers) -> None:
        self.backend = backend
        self.sealers = sealers


class FencedTable(SealedTable):
    """A table whose writes check the writer's shard leases and move the audit ledger heads of
    its shards, both inside the write's own transaction."""

    def __init__(
        self,
        backend: Backend,
        sealers: DatasetSealers,
        leases: LeaseTable,
        ledger: LedgerHeadTable,
    ) -> None:
        super().__init__(backend, sealers)
        self.leases = leases
        self.ledger = ledger


def one_shard(table: Table) -> tuple[ColumnElement[bool], ...]:
    """Where `table`'s rows are one shard of one generation, bound later as d, g and s: for
    statements run once per shard or chunk, built once (building a select costs more than
    running it on SQLite)."""
    return (
        table.c.dataset == bindparam("d"),
        table.c.generation == bindparam("g"),
        table.c.shard == bindparam("s"),
    )
