"""Committed chunks: written in batches (each one transaction, fenced by the writer's leases and
moving the ledger heads of its shards), looked up one by one when a run resumes."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Executable, bindparam, delete, func, select, update

from migrator.state.leases import Fence
from migrator.state.model import CommittedChunk, LedgerMove
from migrator.state.schema import chunks, generations, shards
from migrator.state.tables.base import FencedTable, one_shard

_CHUNK_COLUMNS = (
    chunks.c.dataset,
    chunks.c.generation,
    chunks.c.shard,
    chunks.c.object_key,
    chunks.c.sequence,
    chunks.c.name,
    chunks.c.records,
    chunks.c.plain_size,
    chunks.c.stored_size,
    chunks.c.plain_xxh3,
    chunks.c.stored_xxh3,
    chunks.c.source_end,
    chunks.c.source_version,
)

# Statements run once per chunk or per look-up, built once: building a select costs more than
# running it on SQLite.
_BY_CHUNK_KEY = select(*_CHUNK_COLUMNS).where(
    chunks.c.dataset == bindparam("d"),
    chunks.c.generation == bindparam("g"),
    chunks.c.object_key == bindparam("k"),
)
_BY_SHARD = (
    select(*_CHUNK_COLUMNS)
    .where(*one_shard(chunks))
    .order_by(func.coalesce(chunks.c.name, ""), chunks.c.sequence)
)
_TOTALS = select(
    func.count(),
    func.coalesce(func.sum(chunks.c.records), 0),
    func.coalesce(func.sum(chunks.c.plain_size), 0),
    func.coalesce(func.sum(chunks.c.stored_size), 0),
).where(*one_shard(chunks))


class ChunkTable(FencedTable):
    @functools.cached_property
    def _upsert(self) -> Executable:
        """Built once, in the backend's dialect: every batch of chunks runs it."""
        insert = self.backend.insert(chunks)
        return insert.on_conflict_do_update(
            index_elements=["dataset", "generation", "object_key"],
            set_={
                c.name: insert.excluded[c.name]
                for c in chunks.columns
                if c.name not in ("dataset", "generation", "object_key")
            },
        )

    def commit_chunks(
        self,
        chunks_: Iterable[CommittedChunk],
        fence: Fence | None = None,
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        """One transaction for a batch: batching keeps commits cheap at millions of chunks. The
        ledger heads of the batch's shards move in the same transaction."""
        batch = list(chunks_)
        now = time.time()
        sealers = {
            c.dataset: self.sealers.require(c.dataset, "chunk names and digests") for c in batch
        }
        rows = [
            {
                "dataset": c.dataset,
                "generation": c.generation,
                "object_key": c.object_key,
                "shard": c.shard,
                "sequence": c.sequence,
                "name": None if c.name is None else sealers[c.dataset].seal_text("name", c.name),
                "records": c.records,
                "plain_size": c.plain_size,
                "stored_size": c.stored_size,
                "plain_xxh3": sealers[c.dataset].seal_text("plain_xxh3", c.plain_xxh3),
                "stored_xxh3": c.stored_xxh3,
                "source_end": c.source_end,
                "source_version": c.source_version,
                "committed_at": now,
            }
            for c in batch
        ]
        if not rows:
            return
        with self.backend.write("commit chunks") as conn:
            if fence is not None:
                touched: dict[str, set[int]] = {}
                for c in batch:
                    touched.setdefault(c.dataset, set()).add(c.shard)
                for dataset, owned in touched.items():
                    self.leases.check_fence(conn, dataset, owned, fence)
            conn.execute(self._upsert, rows)
            self.ledger.advance(conn, ledger)

    def forget_chunks(
        self,
        dataset: str,
        generation: int,
        object_keys: Iterable[str],
        fence: Fence | None = None,
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        """Chunks committed for an object that changed or vanished before its shard closed,
        with the ledger segment recording their deletion."""
        keys = list(object_keys)
        if not keys:
            return
        with self.backend.write("forget chunks") as conn:
            if fence is not None:
                owned = conn.execute(
                    select(chunks.c.shard)
                    .where(
                        chunks.c.dataset == dataset,
                        chunks.c.generation == generation,
                        chunks.c.object_key.in_(keys),
                    )
                    .distinct()
                ).scalars()
                self.leases.check_fence(conn, dataset, list(owned), fence)
            conn.execute(
                delete(chunks).where(
                    chunks.c.dataset == dataset,
                    chunks.c.generation == generation,
                    chunks.c.object_key == bindparam("okey"),
                ),
                [{"okey": k} for k in keys],
            )
            self.ledger.advance(conn, ledger)

    def commit_repaired_digests(
        self,
        dataset: str,
        manifests: Mapping[tuple[int, int], str],
        records: Mapping[int, str],
    ) -> None:
        """After a repair re-sealed chunks (maintain/repair.py): the stored digests of the
        manifests `(generation, shard)` and generation records it sealed again, and the
        shards' stored totals, in one transaction."""
        with self.backend.write("commit repaired digests") as conn:
            for (generation, shard), xxh3 in sorted(manifests.items()):
                stored = shard_totals(conn, dataset, generation, shard)[3]
                conn.execute(
                    update(shards)
                    .where(*_one(shards, dataset, generation), shards.c.shard == shard)
                    .values(manifest_xxh3=xxh3, stored_n=stored)
                )
            for generation, xxh3 in sorted(records.items()):
                conn.execute(
                    update(generations)
                    .where(*_one(generations, dataset, generation))
                    .values(record_xxh3=xxh3)
                )

    def has_chunks(self, dataset: str, generation: int) -> bool:
        with self.backend.read() as conn:
            row = conn.execute(
                select(chunks.c.shard)
                .where(chunks.c.dataset == dataset, chunks.c.generation == generation)
                .limit(1)
            ).fetchone()
        return row is not None

    def chunk_count(self, dataset: str, generation: int, shard: int) -> int:
        with self.backend.read() as conn:
            return shard_totals(conn, dataset, generation, shard)[0]

    def committed_chunk(
        self, dataset: str, generation: int, object_key: str
    ) -> CommittedChunk | None:
        rows = self.backend.fetch(_BY_CHUNK_KEY, {"d": dataset, "g": generation, "k": object_key})
        return self._chunk(rows[0]) if rows else None

    def shard_chunks(self, dataset: str, generation: int, shard: int) -> Iterator[CommittedChunk]:
        """In (name, sequence) order: records by sequence, object parts grouped by object
        (sorted here: the database holds the names sealed)."""
        rows = self.backend.fetch(_BY_SHARD, {"d": dataset, "g": generation, "s": shard})
        yield from sorted(map(self._chunk, rows), key=lambda c: (c.name or "", c.sequence))

    def _chunk(self, row: Sequence[Any]) -> CommittedChunk:
        """A chunks row (_CHUNK_COLUMNS) with its name and plaintext digest opened."""
        dataset = row[0]
        values = list(row)
        if values[5] is not None:
            values[5] = self.sealers.open_text(dataset, "name", values[5])
        values[9] = self.sealers.open_text(dataset, "plain_xxh3", values[9])
        return CommittedChunk(*values)


def _one(table: Any, dataset: str, generation: int) -> tuple[Any, Any]:
    return table.c.dataset == dataset, table.c.generation == generation


def shard_totals(conn: Connection, dataset: str, generation: int, shard: int) -> tuple[int, ...]:
    """(chunks, records, plain bytes, stored bytes) the shard's committed chunks hold."""
    row = conn.execute(_TOTALS, {"d": dataset, "g": generation, "s": shard}).one()
    return tuple(int(v) for v in row)


def totals_by_shard(
    conn: Connection, dataset: str, generation: int, shard_ids: Sequence[int]
) -> dict[int, tuple[int, ...]]:
    """shard_totals of many shards in one query; shards without chunks are left out."""
    grouped = conn.execute(
        select(
            chunks.c.shard,
            func.count(),
            func.coalesce(func.sum(chunks.c.records), 0),
            func.coalesce(func.sum(chunks.c.plain_size), 0),
            func.coalesce(func.sum(chunks.c.stored_size), 0),
        )
        .where(
            chunks.c.dataset == dataset,
            chunks.c.generation == generation,
            chunks.c.shard.in_(shard_ids),
        )
        .group_by(chunks.c.shard)
    )
    return {int(g[0]): tuple(int(v) for v in g[1:]) for g in grouped}


def forget_shard_chunks(conn: Connection, dataset: str, generation: int, shard: int) -> None:
    """Inside the caller's transaction: every chunk of the shard in the generation."""
    conn.execute(
        delete(chunks).where(
            chunks.c.dataset == dataset,
            chunks.c.generation == generation,
            chunks.c.shard == shard,
        )
    )
