"""Where shard leases are written: claimed, renewed and released on the state server's clock,
and checked by every write of a shard (the fence) inside that write's own transaction."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.sql.dml import ReturningInsert

from migrator.state.backend import Backend, ContendedError, server_now
from migrator.state.leases import Fence, Lease, LeaseLostError
from migrator.state.schema import leases

CONTENDED_ATTEMPTS = 5  # a claim PostgreSQL ended to break a deadlock is tried this often


class LeaseTable:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def claim_shard(
        self, dataset: str, shard: int, owner: str, ttl: float, steal_from: str | None = None
    ) -> Lease | None:
        """The shard's lease for `owner` if it is free, lapsed, already its own, or held by
        `steal_from` (a holder known to be dead); else None."""
        upsert = self._claim(dataset, owner, ttl, steal_from)
        with self.backend.write(f"claim shard {shard}") as conn:
            token = conn.execute(upsert, {"s": shard}).scalar()
        return None if token is None else Lease(dataset, shard, owner, int(token))

    def claim_shards(
        self,
        dataset: str,
        shards: Sequence[int],
        owner: str,
        ttl: float,
        *,
        skip_held: bool = False,
        limit: int | None = None,
    ) -> list[Lease]:
        """claim_shard for each of `shards` in order, in one transaction, up to the first one
        held by someone else (or, `skip_held`, past it), `limit` at most: a run leasing
        thousands of shards pays one commit, and still takes them in order (two runs never
        wait on each other's shards crosswise)."""
        upsert = self._claim(dataset, owner, ttl, None)
        for attempt in range(CONTENDED_ATTEMPTS):
            got: list[Lease] = []
            try:
                with self.backend.write(f"claim {len(shards)} shards") as conn:
                    for shard in shards:
                        if limit is not None and len(got) >= limit:
                            break
                        token = conn.execute(upsert, {"s": shard}).scalar()
                        if token is None:
                            if skip_held:
                                continue
                            break
                        got.append(Lease(dataset, shard, owner, int(token)))
                return got
            except ContendedError:
                # Workers claim in different orders (each starts at its own shard): two
                # claims may deadlock, and PostgreSQL ends one. Nothing was taken; again.
                if attempt + 1 == CONTENDED_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.01, 0.1) * (attempt + 1))
        return []

    def _claim(
        self, dataset: str, owner: str, ttl: float, steal_from: str | None
    ) -> ReturningInsert[int]:
        """The claim of shard `s` (bound when run): taken if free, lapsed, `owner`'s or
        `steal_from`'s, on the state server's clock; returns the new token, or nothing."""
        stmt = self.backend.insert(leases).values(
            dataset=dataset,
            shard=bindparam("s"),
            owner=owner,
            token=1,
            expires_at=server_now() + ttl,
            claimed_at=server_now(),
        )
        return stmt.on_conflict_do_update(
            index_elements=["dataset", "shard"],
            set_={
                "owner": stmt.excluded.owner,
                "token": leases.c.token + 1,
                "expires_at": stmt.excluded.expires_at,
                "claimed_at": stmt.excluded.claimed_at,
            },
            where=(leases.c.expires_at < server_now())
            | leases.c.owner.in_([owner, steal_from or owner]),
        ).returning(leases.c.token)

    def renew_leases(self, held: Iterable[Lease], ttl: float) -> list[Lease]:
        """Extend every lease still held; returns those lost (taken over by another worker)."""
        lost = []
        with self.backend.write("renew leases") as conn:
            # In shard order, as the fence locks them: two transactions never wait on each
            # other's rows in opposite orders.
            for lease in sorted(held, key=lambda x: (x.dataset, x.shard)):
                done = conn.execute(
                    update(leases)
                    .where(
                        leases.c.dataset == lease.dataset,
                        leases.c.shard == lease.shard,
                        leases.c.owner == lease.owner,
                        leases.c.token == lease.token,
                    )
                    .values(expires_at=server_now() + ttl)
                )
                if done.rowcount != 1:
                    lost.append(lease)
        return lost

    def release_leases(self, held: Iterable[Lease]) -> None:
        rows = [
            {"d": x.dataset, "s": x.shard, "o": x.owner, "t": x.token}
            for x in sorted(held, key=lambda x: (x.dataset, x.shard))
        ]
        if not rows:
            return
        with self.backend.write("release leases") as conn:
            conn.execute(_RELEASE, rows)  # one statement, many parameter sets

    def lease_holders(self, dataset: str) -> dict[int, tuple[str, float]]:
        """shard -> (owner, seconds until the lease lapses; negative: lapsed)."""
        with self.backend.read() as conn:
            rows = conn.execute(
                select(leases.c.shard, leases.c.owner, leases.c.expires_at - server_now()).where(
                    leases.c.dataset == dataset
                )
            ).fetchall()
        return {int(s): (str(o), float(left)) for s, o, left in rows}

    def check_fence(
        self, conn: Connection, dataset: str, shard_ids: Iterable[int], fence: Fence | None
    ) -> None:
        """Inside the writing transaction: every shard written is still leased to the writer
        (PostgreSQL locks the lease rows, so a takeover waits for this commit)."""
        if fence is None:
            return
        wanted = sorted(set(shard_ids))
        query = (
            select(leases.c.shard, leases.c.owner, leases.c.token)
            .where(leases.c.dataset == dataset, leases.c.shard.in_(wanted))
            .order_by(leases.c.shard)
        )
        if self.backend.dialect == "postgresql":
            query = query.with_for_update()
        found = {int(s): (o, int(t)) for s, o, t in conn.execute(query)}
        for shard in wanted:
            held = fence.get((dataset, shard))
            if held is None or found.get(shard) != (held.owner, held.token):
                raise LeaseLostError(
                    f"dataset {dataset} shard {shard}: this worker's lease lapsed and another"
                    " worker took the shard over; nothing of this worker was recorded for it"
                )


_RELEASE = delete(leases).where(
    leases.c.dataset == bindparam("d"),
    leases.c.shard == bindparam("s"),
    leases.c.owner == bindparam("o"),
    leases.c.token == bindparam("t"),
)
