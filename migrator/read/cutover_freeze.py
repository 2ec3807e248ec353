"""How long writes stay frozen at cutover: the final sync, then the gate once more.

A sync now costs what changed, not the source: it lists, reads the files that changed since the
last routed listing, and writes the records that changed. So the final sync is estimated per
dataset from the files it would read if it ran now (the gate just read the very same files, and
timed it) plus what recent syncs cost beyond that: a fixed part and a part per GiB written,
fitted through them and applied to the current lag. The fitted part also holds those syncs' own
reading, so the sum errs long, the safe side for a freeze. The gate run in the freeze reads
almost nothing (the final sync has just routed every changed file): its listing and the reused
digests, timed here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from migrator.codec.generation import GenerationKind
from migrator.state.db import StateDB

RECENT_SYNCS = 5  # the estimate fits this many of the latest syncs


@dataclass
class FreezeEstimate:
    seconds: float | None  # None: no sync has been timed yet
    syncs_used: int
    per_gib_seconds: float  # fitted cost of a changed GiB in a sync (the largest of the datasets)
    fixed_seconds: float  # fitted cost of syncs that change nothing (all datasets)
    method: str
    final_sync_files: int | None = None  # files (objects) a final sync would read now
    final_sync_bytes: int | None = None  # None: unknown (objects, without a state store)
    read_seconds: float = 0.0  # this gate's time reading those files (a sync reads them too)


class GateCost(Protocol):
    """What the estimate needs of a dataset's gate."""

    name: str
    scan_seconds: float  # the gate's source side, reading included
    read_seconds: float  # of which reading the changed files
    final_sync_files: int | None
    final_sync_bytes: int | None

    @property
    def pending_bytes(self) -> int | None: ...


def estimate_freeze(gates: Sequence[GateCost], state: StateDB | None) -> FreezeEstimate:
    """Final sync ≈ fitted fixed cost + fitted cost of the lag's bytes + the changed files read
    at the gate's pace, per dataset; then the gate again without that reading. Datasets sync one
    after another, so their estimates add up."""
    reads = [g.final_sync_files for g in gates]
    nbytes = [g.final_sync_bytes for g in gates]
    files = None if any(v is None for v in reads) else sum(v or 0 for v in reads)
    size = None if any(v is None for v in nbytes) else sum(v or 0 for v in nbytes)
    reading = sum(g.read_seconds for g in gates)
    total = sum(max(0.0, g.scan_seconds - g.read_seconds) for g in gates) + reading
    used = 0
    slopes: list[float] = []
    fixeds: list[float] = []
    fitted = True
    for gate in gates:
        rows = [] if state is None else state.generations(gate.name)
        synced = [g for g in rows if g.committed and g.kind is GenerationKind.SYNC]
        syncs = synced[-RECENT_SYNCS:]
        if not syncs:
            return FreezeEstimate(
                None,
                0,
                0.0,
                0.0,
                f"{gate.name}: no sync timed yet; the estimate fits the recent syncs' time to"
                " what they changed, so it needs one committed sync (the schedule, or a sync now)",
                files,
                size,
                reading,
            )
        slope, fixed, ok = fit([g.changed_bytes / 2**30 for g in syncs], [g.seconds for g in syncs])
        fitted = fitted and ok
        used += len(syncs)
        slopes.append(slope)
        fixeds.append(fixed)
        total += fixed + slope * (gate.pending_bytes or 0) / 2**30
    how = (
        "least squares of sync seconds on changed GiB over recent syncs"
        if fitted
        else "mean of recent syncs (too few sizes differ to fit a slope)"
    )
    method = f"per dataset, {how}, plus reading the changed files at this gate's pace"
    return FreezeEstimate(
        round(total, 3),
        used,
        round(max(slopes, default=0.0), 3),
        round(sum(fixeds), 3),
        method,
        files,
        size,
        round(reading, 3),
    )


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, bool]:
    """(slope, intercept, fitted): a line through the points, or their mean if it can't be."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if n < 2 or var == 0:
        return 0.0, mean_y, False
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    slope = max(0.0, slope)
    return slope, max(0.0, mean_y - slope * mean_x), True
