"""A sync fanned out over many runs, as a scheduler launches them (Dagster's partitions):
routers first, then batches of shards.

A records dataset's routing is shared by `routers` runs. Each is one more worker of the
generation's routing (MigrationRun.route): it claims routing tasks under leases, routes them,
waits for the tasks other routers hold, takes over a dead router's, and returns once every task
is routed. Routers claim tasks as they go rather than owning a fixed share (task index mod the
router count), so a slow or failed router holds nothing up: the others take its tasks. Then the
shards are encoded by batches of contiguous shards, one run each, which join the generation the
routers worked and commit it when the last shard is in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrator.errors import UsageError
from migrator.write.reports import ProgressSink, RouteReport
from migrator.write.run import MigrationRun

if TYPE_CHECKING:
    from migrator import Connection
    from migrator.state.db import StateDB


def route(
    conn: Connection,
    dataset: str,
    *,
    progress: ProgressSink | None = None,
    requested_at: float | None = None,
) -> RouteReport:
    """Take part in routing the dataset's working generation (opening a sync if the last one
    is committed) until every routing task is routed; the report counts what this one routed.
    Encoding is the shard runs' (migrator.run). `requested_at`: when the sync was asked for
    (the run's creation): a router that starts after that sync was committed opens none."""
    if conn.state is None:
        raise UsageError("routing needs a state store: connect the plan with create_state")
    job = MigrationRun(conn.plan, conn.store, conn.keys, conn.state, progress)
    return job.route(dataset, cohort_since=requested_at)


def shard_batches(shards: int, per_batch: int) -> list[tuple[int, int]]:
    """The shards as contiguous (first, last) batches of `per_batch`: one run each."""
    if per_batch < 1:
        raise ValueError(f"shards per run must be at least 1, not {per_batch}")
    return [(lo, min(lo + per_batch, shards) - 1) for lo in range(0, shards, per_batch)]


def open_generation(state: StateDB | None, dataset: str) -> int | None:
    """The generation a run of the dataset is working in (opened, not yet committed), if the
    state store knows one: a sync requested now would join it instead of listing anew."""
    if state is None:
        return None
    latest = state.latest_generation(dataset)
    return latest.generation if latest is not None and not latest.committed else None
