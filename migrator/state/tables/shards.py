"""Shards of a generation: their status, the manifests they stored (heads), the inventories a
sync diffs against, and forgetting the generations a compaction deleted."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, Delete, and_, bindparam, delete, func, select

from migrator.state.leases import Fence
from migrator.state.model import (
    LedgerMove,
    ShardHeadRow,
    ShardProgress,
    ShardStatus,
    check_shard_move,
)
from migrator.state.schema import shard_maps, shards
from migrator.state.tables.base import FencedTable, one_shard
from migrator.state.tables.chunks import forget_shard_chunks, shard_totals, totals_by_shard

# Run once per shard a worker looks at: built once (see tables/chunks.py).
_STATUS = select(shards.c.status).where(*one_shard(shards))


class ShardTable(FencedTable):
    # --- status ------------------------------------------------------------------------

    def shard_status(self, dataset: str, generation: int, shard: int) -> ShardStatus:
        rows = self.backend.fetch(_STATUS, {"d": dataset, "g": generation, "s": shard})
        return ShardStatus(rows[0][0]) if rows else ShardStatus.PENDING

    def set_shard_status(
        self,
        dataset: str,
        generation: int,
        shard: int,
        status: ShardStatus,
        manifest_key: str | None = None,
    ) -> None:
        with self.backend.write(f"mark shard {shard} {status}") as conn:
            check_shard_move(dataset, shard, _status(conn, dataset, generation, shard), status)
            row = {
                "dataset": dataset,
                "generation": generation,
                "shard": shard,
                "status": str(status),
                "manifest_key": manifest_key,
                "updated_at": time.time(),
            }
            stmt = self.backend.insert(shards)
            # Never over a complete shard, even if one completed since the check above (on
            # PostgreSQL the check and the write are not one step).
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["dataset", "generation", "shard"],
                    set_={k: stmt.excluded[k] for k in ("status", "manifest_key", "updated_at")},
                    where=shards.c.status != str(ShardStatus.COMPLETE),
                ),
                row,
            )

    def complete_shards(self, dataset: str, generation: int) -> set[int]:
        """The shards complete in the generation: one query, for workers polling it."""
        with self.backend.read() as conn:
            rows = conn.execute(
                select(shards.c.shard).where(
                    shards.c.dataset == dataset,
                    shards.c.generation == generation,
                    shards.c.status == str(ShardStatus.COMPLETE),
                )
            ).scalars()
            return {int(r) for r in rows}

    def complete_shard(
        self,
        dataset: str,
        generation: int,
        shard: int,
        *,
        manifest_key: str | None,
        manifest_xxh3: str | None = None,
        base: bool = False,
        inventory: bytes | None = None,
        live_records: int = 0,
        digest: str | None = None,
        removed_records: int = 0,
        fence: Fence | None = None,
    ) -> None:
        """The shard's manifest is stored (or the generation left it untouched: no manifest),
        and its inventory is what the next sync diffs against: both in one transaction."""
        if digest is not None:
            digest = self.sealers.require(dataset, "shard digests").seal_text("digest", digest)
        if inventory is not None:
            inventory = self.sealers.require(dataset, "inventories").seal_bytes("blob", inventory)
        with self.backend.write(f"complete shard {shard}") as conn:
            self.leases.check_fence(conn, dataset, [shard], fence)
            old = _status(conn, dataset, generation, shard)
            check_shard_move(dataset, shard, old, ShardStatus.COMPLETE)
            # The shard's totals, kept with it: `status` then never sums millions of rows.
            n, r, p, st = shard_totals(conn, dataset, generation, shard)
            row = {
                "dataset": dataset,
                "generation": generation,
                "shard": shard,
                "status": str(ShardStatus.COMPLETE),
                "manifest_key": manifest_key,
                "updated_at": time.time(),
                "manifest_xxh3": manifest_xxh3,
                "base": int(base),
                "live_records": live_records,
                "digest": digest,
                "removed_records": removed_records,
                "chunks_n": n,
                "records_n": r,
                "plain_n": p,
                "stored_n": st,
            }
            conn.execute(self.backend.upsert(shards, row, ["dataset", "generation", "shard"]), row)
            if inventory is not None:
                inv = {
                    "dataset": dataset,
                    "shard": shard,
                    "generation": generation,
                    "blob": inventory,
                }
                conn.execute(
                    self.backend.upsert(shard_maps, inv, ["dataset", "shard", "generation"]), inv
                )

    def complete_untouched_shards(
        self, dataset: str, generation: int, shard_ids: Sequence[int], fence: Fence | None = None
    ) -> None:
        """complete_shard without a manifest for each of `shard_ids` (none has a chunk in the
        generation), in one transaction: a sync that changed a few shards of thousands does
        not pay a commit for each of the others."""
        if not shard_ids:
            return
        with self.backend.write(f"complete {len(shard_ids)} untouched shards") as conn:
            self.leases.check_fence(conn, dataset, shard_ids, fence)
            now = time.time()
            for shard in shard_ids:
                old = _status(conn, dataset, generation, shard)
                check_shard_move(dataset, shard, old, ShardStatus.COMPLETE)
                row = {
                    "dataset": dataset,
                    "generation": generation,
                    "shard": shard,
                    "status": str(ShardStatus.COMPLETE),
                    "manifest_key": None,
                    "updated_at": now,
                    "manifest_xxh3": None,
                    "base": 0,
                    "live_records": 0,
                    "digest": None,
                    "removed_records": 0,
                    "chunks_n": 0,
                    "records_n": 0,
                    "plain_n": 0,
                    "stored_n": 0,
                }
                conn.execute(
                    self.backend.upsert(shards, row, ["dataset", "generation", "shard"]), row
                )

    def shard_progress(self, dataset: str, generation: int) -> list[ShardProgress]:
        """Every shard with a status, in shard order. A complete shard's totals were kept when
        it completed; only shards still open are summed from their chunks, so this stays fast
        at millions of chunks."""
        out = []
        with self.backend.read() as conn:
            rows = conn.execute(
                select(
                    shards.c.shard,
                    shards.c.status,
                    shards.c.chunks_n,
                    shards.c.records_n,
                    shards.c.plain_n,
                    shards.c.stored_n,
                    shards.c.manifest_key,
                )
                .where(shards.c.dataset == dataset, shards.c.generation == generation)
                .order_by(shards.c.shard)
            ).fetchall()
            # A complete shard's totals were kept; the open ones are summed in one query.
            open_ids = [r[0] for r in rows if r[1] != ShardStatus.COMPLETE]
            sums: dict[int, tuple[int, ...]] = {}
            if open_ids:
                sums = totals_by_shard(conn, dataset, generation, open_ids)
            for shard, status, n, r, p, st, mkey in rows:
                if status != ShardStatus.COMPLETE:
                    n, r, p, st = sums.get(shard, (0, 0, 0, 0))
                out.append(
                    ShardProgress(
                        dataset, generation, shard, ShardStatus(status), n, r, p, st, mkey
                    )
                )
        return out

    # --- heads: the manifests shards stored ----------------------------------------------

    def shard_heads(self, dataset: str, shard: int) -> list[ShardHeadRow]:
        """Every stored manifest of the shard, oldest first."""
        return self._heads(dataset, shard).get(shard, [])

    def all_shard_heads(self, dataset: str) -> dict[int, list[ShardHeadRow]]:
        """shard_heads of every shard, in one query."""
        return self._heads(dataset, None)

    def latest_heads(self, dataset: str) -> dict[int, ShardHeadRow]:
        """Each shard's newest stored manifest, in one query."""
        return {shard: rows[-1] for shard, rows in self._heads(dataset, None).items()}

    def _heads(self, dataset: str, shard: int | None) -> dict[int, list[ShardHeadRow]]:
        where = [
            shards.c.dataset == dataset,
            shards.c.status == str(ShardStatus.COMPLETE),
            shards.c.manifest_key.is_not(None),
        ]
        if shard is not None:
            where.append(shards.c.shard == shard)
        with self.backend.read() as conn:
            rows = conn.execute(
                select(
                    shards.c.shard,
                    shards.c.generation,
                    shards.c.manifest_key,
                    shards.c.manifest_xxh3,
                    shards.c.base,
                    shards.c.live_records,
                    shards.c.digest,
                    shards.c.removed_records,
                    shards.c.updated_at,
                )
                .where(*where)
                .order_by(shards.c.shard, shards.c.generation)
            ).fetchall()
        out: dict[int, list[ShardHeadRow]] = {}
        # Only a generation record needs the digest: a reader without the dataset's key gets
        # it sealed (never hex, so never taken for one).
        sealer = self.sealers.bound(dataset)
        for r in rows:
            digest = r[6] or ""
            if sealer is not None:
                digest = sealer.open_text("digest", digest)
            head = ShardHeadRow(r[1], r[2], r[3] or "", bool(r[4]), r[5], digest, r[7], r[8])
            out.setdefault(int(r[0]), []).append(head)
        return out

    def head_digests(self, dataset: str, upto: int) -> dict[int, str]:
        """Each shard's digest as of generation `upto` (its newest manifest's at or before it),
        in one query that returns a row a shard whatever the number of generations. The
        dataset's key must be bound: the digests are sealed."""
        newest = (
            select(shards.c.shard, func.max(shards.c.generation).label("generation"))
            .where(
                shards.c.dataset == dataset,
                shards.c.status == str(ShardStatus.COMPLETE),
                shards.c.manifest_key.is_not(None),
                shards.c.generation <= upto,
            )
            .group_by(shards.c.shard)
            .subquery()
        )
        stmt = select(shards.c.shard, shards.c.digest).join(
            newest,
            and_(
                shards.c.dataset == dataset,
                shards.c.shard == newest.c.shard,
                shards.c.generation == newest.c.generation,
            ),
        )
        with self.backend.read() as conn:
            rows = conn.execute(stmt).fetchall()
        sealer = self.sealers.require(dataset, "shard digests")
        return {int(shard): sealer.open_text("digest", digest or "") for shard, digest in rows}

    def forget_shard_generations(
        self,
        dataset: str,
        shard: int,
        generations: Iterable[int],
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        """Generations of a shard a compaction deleted, with the ledger segment recording the
        deletion: one transaction."""
        with self.backend.write(f"forget shard {shard}") as conn:
            for generation in generations:
                forget_shard_chunks(conn, dataset, generation, shard)
                conn.execute(
                    delete(shards).where(
                        shards.c.dataset == dataset,
                        shards.c.generation == generation,
                        shards.c.shard == shard,
                    )
                )
            self.ledger.advance(conn, ledger)

    # --- inventories: what the next sync diffs against -----------------------------------

    def shard_inventory(self, dataset: str, shard: int, before: int) -> bytes | None:
        """The shard's inventory as of the last generation before `before` that changed it."""
        with self.backend.read() as conn:
            row = conn.execute(
                select(shard_maps.c.blob)
                .where(
                    shard_maps.c.dataset == dataset,
                    shard_maps.c.shard == shard,
                    shard_maps.c.generation < before,
                )
                .order_by(shard_maps.c.generation.desc())
                .limit(1)
            ).fetchone()
        return None if row is None else self.sealers.open_bytes(dataset, "blob", bytes(row[0]))

    def prune_inventories(self, dataset: str, shard: int, keep_from: int) -> None:
        """Drop inventories older than the newest one before `keep_from`: no sync needs them."""
        newest = (
            select(func.coalesce(func.max(shard_maps.c.generation), 0))
            .where(
                shard_maps.c.dataset == dataset,
                shard_maps.c.shard == shard,
                shard_maps.c.generation < keep_from,
            )
            .scalar_subquery()
        )
        with self.backend.write("prune inventories") as conn:
            conn.execute(
                delete(shard_maps).where(
                    shard_maps.c.dataset == dataset,
                    shard_maps.c.shard == shard,
                    shard_maps.c.generation < newest,
                )
            )

    def prune_all_inventories(self, dataset: str, keep_from: int) -> None:
        """prune_inventories for every shard of the dataset, in one statement."""
        with self.backend.write("prune inventories") as conn:
            conn.execute(_PRUNE, {"d": dataset, "keep": keep_from})


def _prune_statement() -> Delete:
    older = shard_maps.alias("newer")
    newest = (
        select(func.max(older.c.generation))
        .where(
            older.c.dataset == shard_maps.c.dataset,
            older.c.shard == shard_maps.c.shard,
            older.c.generation < bindparam("keep"),
        )
        .scalar_subquery()
    )
    return delete(shard_maps).where(
        shard_maps.c.dataset == bindparam("d"), shard_maps.c.generation < newest
    )


_PRUNE = _prune_statement()


def _status(conn: Connection, dataset: str, generation: int, shard: int) -> ShardStatus:
    row = conn.execute(_STATUS, {"d": dataset, "g": generation, "s": shard}).fetchone()
    return ShardStatus.PENDING if row is None else ShardStatus(row[0])
