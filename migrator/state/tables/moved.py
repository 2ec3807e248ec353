"""What a generation has moved, read-only and aggregated in SQL for the migration overview.

Cheap at petabyte scale: a complete shard's totals were kept on its row when it completed, so
only the chunks of shards still open are summed, through the chunks_by_shard index; nothing
here reads every chunk of a generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select

from migrator.state.model import ShardStatus
from migrator.state.schema import chunks, shards

_COMPLETE = str(ShardStatus.COMPLETE)
_IN_LIST = 5000  # shards per IN list: well under every driver's bound-parameter limit


@dataclass(frozen=True, slots=True)
class MovedTotals:
    """Committed chunks of one generation (complete shards from their rows, open ones summed)."""

    shards_complete: int
    shards_running: int
    chunks: int
    records: int
    plain_bytes: int
    stored_bytes: int
    complete_plain_bytes: int  # the complete shards' share of plain_bytes


@dataclass(frozen=True, slots=True)
class RecentTotals:
    """Chunks committed since a moment: what a throughput is worked out from."""

    chunks: int
    records: int
    plain_bytes: int
    first_at: float | None  # the earliest of them was committed then


def moved_totals(conn: Connection, dataset: str, generation: int) -> MovedTotals:
    """Two aggregate queries: the complete shards' kept totals, the open shards' chunks."""
    mine = and_(shards.c.dataset == dataset, shards.c.generation == generation)
    done = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(shards.c.chunks_n), 0),
            func.coalesce(func.sum(shards.c.records_n), 0),
            func.coalesce(func.sum(shards.c.plain_n), 0),
            func.coalesce(func.sum(shards.c.stored_n), 0),
        ).where(mine, shards.c.status == _COMPLETE)
    ).one()
    running = conn.execute(
        select(func.count()).where(mine, shards.c.status == str(ShardStatus.RUNNING))
    ).scalar_one()
    open_shards = select(shards.c.shard).where(mine, shards.c.status != _COMPLETE)
    live = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(chunks.c.records), 0),
            func.coalesce(func.sum(chunks.c.plain_size), 0),
            func.coalesce(func.sum(chunks.c.stored_size), 0),
        ).where(
            chunks.c.dataset == dataset,
            chunks.c.generation == generation,
            chunks.c.shard.in_(open_shards.scalar_subquery()),
        )
    ).one()
    n, r, p, s = (int(done[i]) + int(live[i - 1]) for i in range(1, 5))
    return MovedTotals(int(done[0]), int(running), n, r, p, s, int(done[3]))


def recent_totals(conn: Connection, dataset: str, generation: int, since: float) -> RecentTotals:
    """Chunks of the generation committed at or after `since`. Only shards open now or
    completed since can hold one (a shard completes after its last chunk is committed), so
    the index is walked for those shards alone."""
    active = select(shards.c.shard).where(
        shards.c.dataset == dataset,
        shards.c.generation == generation,
        or_(shards.c.status != _COMPLETE, shards.c.updated_at >= since),
    )
    row = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(chunks.c.records), 0),
            func.coalesce(func.sum(chunks.c.plain_size), 0),
            func.min(chunks.c.committed_at),
        ).where(
            chunks.c.dataset == dataset,
            chunks.c.generation == generation,
            chunks.c.shard.in_(active.scalar_subquery()),
            chunks.c.committed_at >= since,
        )
    ).one()
    first = None if row[3] is None else float(row[3])
    return RecentTotals(int(row[0]), int(row[1]), int(row[2]), first)


def objects_moved(conn: Connection, dataset: str, generation: int, shard_ids: Sequence[int]) -> int:
    """Objects with a committed first part in the generation: one index range per shard
    (dataset, generation, shard, sequence 0), so the cost follows objects, not parts."""
    total = 0
    for lo in range(0, len(shard_ids), _IN_LIST):
        total += conn.execute(
            select(func.count()).where(
                chunks.c.dataset == dataset,
                chunks.c.generation == generation,
                chunks.c.shard.in_(list(shard_ids[lo : lo + _IN_LIST])),
                chunks.c.sequence == 0,
            )
        ).scalar_one()
    return int(total)


def objects_by_shard(
    conn: Connection, dataset: str, generation: int, shard_ids: Sequence[int]
) -> dict[int, int]:
    """objects_moved per shard, in one grouped query per batch of shards."""
    out: dict[int, int] = {}
    for lo in range(0, len(shard_ids), _IN_LIST):
        rows = conn.execute(
            select(chunks.c.shard, func.count())
            .where(
                chunks.c.dataset == dataset,
                chunks.c.generation == generation,
                chunks.c.shard.in_(list(shard_ids[lo : lo + _IN_LIST])),
                chunks.c.sequence == 0,
            )
            .group_by(chunks.c.shard)
        ).fetchall()
        out.update({int(shard): int(n) for shard, n in rows})
    return out
