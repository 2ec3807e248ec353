"""The migration at a glance, per dataset and for the plan: bytes and records (or objects)
moved against the expected totals, throughput over a recent window, an ETA.

A pure function of the state store (and of the routing's file table beside it): aggregate
queries only (state/tables/moved.py), no source listing, so the Dagster overview can run it
every half minute at petabyte scale and `migrator status` prints the same figures.

Each dataset is seen through its latest generation: the bulk copy while it runs, then the
latest sync. Throughput is the plaintext committed over the last `window` seconds (less if the
generation began since), divided by that span; ETA is what remains over that throughput.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from migrator.errors import StateError
from migrator.forecast.stage_forecast import duration
from migrator.plan.destination import AzureDestinationPlan, S3DestinationPlan
from migrator.plan.kinds import DatasetKind
from migrator.plan.source import AzureSourcePlan, S3SourcePlan
from migrator.read.overview_expected import Expected, Moved, expected_totals
from migrator.sizes import format_size
from migrator.state.tables.moved import moved_totals, objects_moved, recent_totals

if TYPE_CHECKING:
    from migrator.plan.model import DatasetPlan, Plan
    from migrator.state.db import StateDB
    from migrator.state.model import GenerationRow

WINDOW_SECONDS = 300.0  # throughput is measured over this much of the recent past


@dataclass(frozen=True, slots=True)
class Rate:
    """Plaintext committed over a span of the recent past."""

    bytes: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class DatasetOverview:
    name: str
    kind: DatasetKind
    source: str
    shards: int
    generation: int | None  # None: no run has opened one yet
    generation_kind: str  # bulk | sync | compact | "" (none yet)
    committed: bool
    shards_complete: int
    shards_running: int
    chunks: int
    bytes_moved: int  # plaintext
    bytes_stored: int  # encrypted and compressed, as stored
    items_moved: int  # records, or objects for an objects dataset
    expected: Expected
    rate: Rate
    started_at: float | None

    @classmethod
    def not_started(cls, ds: DatasetPlan, source: str, expected: Expected) -> DatasetOverview:
        """A dataset no run has opened a generation of: nothing moved."""
        return cls(
            name=ds.name,
            kind=ds.kind,
            source=source,
            shards=ds.shards,
            generation=None,
            generation_kind="",
            committed=False,
            shards_complete=0,
            shards_running=0,
            chunks=0,
            bytes_moved=0,
            bytes_stored=0,
            items_moved=0,
            expected=expected,
            rate=Rate(0, 0.0),
            started_at=None,
        )

    @property
    def items(self) -> str:
        return "records" if self.kind is DatasetKind.RECORDS else "objects"

    @property
    def bytes_left(self) -> int | None:
        return None if self.expected.bytes is None else self.expected.bytes - self.bytes_moved

    @property
    def eta_seconds(self) -> float | None:
        return eta(self.bytes_left, self.rate)

    @property
    def state(self) -> str:
        if self.generation is None:
            return "not started"
        if self.committed:
            return f"{self.generation_kind} committed"
        running = f", {self.shards_running:,} shard(s) running" if self.shards_running else ""
        return f"{self.generation_kind} in progress{running}"


@dataclass(frozen=True, slots=True)
class PlanOverview:
    plan: str
    destination: str
    at: float  # when the figures were read
    window: float
    datasets: list[DatasetOverview]

    @property
    def bytes_moved(self) -> int:
        return sum(d.bytes_moved for d in self.datasets)

    @property
    def bytes_expected(self) -> int | None:
        """None unless every dataset's total is known: a partial sum would read as the plan's."""
        sizes = [d.expected.bytes for d in self.datasets]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    @property
    def rate(self) -> Rate:
        """The datasets' plaintext over the longest of their spans (they run side by side)."""
        spans = [d.rate.seconds for d in self.datasets if d.rate.bytes]
        return Rate(sum(d.rate.bytes for d in self.datasets), max(spans, default=0.0))

    @property
    def eta_seconds(self) -> float | None:
        expected = self.bytes_expected
        return eta(None if expected is None else expected - self.bytes_moved, self.rate)


def eta(left: int | None, rate: Rate) -> float | None:
    """Seconds until `left` bytes are moved at `rate`; 0 when none are left; None unknown."""
    if left is None:
        return None
    if left <= 0:
        return 0.0
    return left / rate.per_second if rate.per_second > 0 else None


# (state store, dataset, generation) -> objects its committed generation wrote: a bulk of tens of
# millions of objects is counted by an index scan once per process, not on every sensor tick.
_COMMITTED_OBJECTS: dict[tuple[str, str, int], int] = {}


def plan_overview(
    plan: Plan,
    state: StateDB | None,
    state_dir: Path | None = None,
    *,
    destination: str = "",
    now: float | None = None,
    window: float = WINDOW_SECONDS,
) -> PlanOverview:
    """Every dataset of the plan as `state` knows it (None: no run has made a store yet).
    `state_dir`: where the runs keep their routing (default the plan's)."""
    now = time.time() if now is None else now
    folder = plan.state_dir if state_dir is None else state_dir
    where = None if plan.plan_path is None else plan.plan_path.parent
    datasets = [
        _dataset(ds, source_place(ds, where), state, folder, now, window) for ds in plan.datasets
    ]
    return PlanOverview(plan.name, destination or place(plan), now, window, datasets)


def _dataset(
    ds: DatasetPlan,
    source: str,
    state: StateDB | None,
    state_dir: Path,
    now: float,
    window: float,
) -> DatasetOverview:
    latest = _latest(state, ds.name)
    if state is None or latest is None:
        expected = expected_totals(ds, 0, None, False, Moved(0, 0, 0, 0), state_dir)
        return DatasetOverview.not_started(ds, source, expected)
    gen = latest.generation
    since = max(now - window, latest.started_at)
    try:
        with state.engine.connect() as conn:
            moved = moved_totals(conn, ds.name, gen)
            recent = recent_totals(conn, ds.name, gen, since)
            objects = 0
            if ds.kind is DatasetKind.OBJECTS:
                counted = (state.url, ds.name, gen)
                objects = _COMMITTED_OBJECTS.get(counted, -1)
                if objects < 0:
                    objects = objects_moved(conn, ds.name, gen, range(ds.shards))
                if latest.committed:  # it no longer changes: counted once, not every tick
                    _COMMITTED_OBJECTS[counted] = objects
    except SQLAlchemyError as exc:
        raise StateError(f"{state.path}: {exc}") from None
    items = moved.records if ds.kind is DatasetKind.RECORDS else objects
    so_far = Moved(moved.plain_bytes, items, moved.shards_complete, moved.complete_plain_bytes)
    expected = expected_totals(ds, gen, latest.kind, latest.committed, so_far, state_dir)
    return DatasetOverview(
        name=ds.name,
        kind=ds.kind,
        source=source,
        shards=ds.shards,
        generation=gen,
        generation_kind=str(latest.kind),
        committed=latest.committed,
        shards_complete=moved.shards_complete,
        shards_running=moved.shards_running,
        chunks=moved.chunks,
        bytes_moved=moved.plain_bytes,
        bytes_stored=moved.stored_bytes,
        items_moved=items,
        expected=expected,
        rate=Rate(recent.plain_bytes, max(now - since, 0.0)),
        started_at=latest.started_at,
    )


def _latest(state: StateDB | None, dataset: str) -> GenerationRow | None:
    return None if state is None else state.latest_generation(dataset)


def place(plan: Plan) -> str:
    """The plan's destination as an operator names it (never a credential)."""
    d = plan.destination
    if isinstance(d, S3DestinationPlan):
        return f"s3://{d.bucket}/{d.prefix}"
    if isinstance(d, AzureDestinationPlan):
        return f"{d.account_url}/{d.bucket}/{d.prefix}"
    return f"{d.path}/{d.prefix}"


def source_place(ds: DatasetPlan, plan_folder: Path | None = None) -> str:
    """A local source's folder as the plan file names it (relative to it), when inside it."""
    s = ds.source
    if isinstance(s, S3SourcePlan):
        return f"s3://{s.bucket}/{s.prefix}"
    if isinstance(s, AzureSourcePlan):
        return f"{s.account_url}/{s.bucket}/{s.prefix}"
    folder = Path(s.path)
    if plan_folder is not None and folder.is_relative_to(plan_folder):
        folder = folder.relative_to(plan_folder)
    return f"{folder.as_posix()}/{s.prefix}"


# --- as text ----------------------------------------------------------------------------------


def amount(moved: int, expected: int | None, unit: str = "bytes") -> str:
    """ "1.2 GiB of 4.0 GiB (30.0 %)", "1,200 of ≈4,000 records", "1.2 GiB of ?"."""
    shown = format_size if unit == "bytes" else "{:,}".format
    if expected is None:
        return f"{shown(moved)} of ?" + ("" if unit == "bytes" else f" {unit}")
    share = f" ({100 * moved / expected:.1f} %)" if expected else ""
    return f"{shown(moved)} of {shown(expected)}" + ("" if unit == "bytes" else f" {unit}") + share


def rate_text(rate: Rate) -> str:
    return f"{format_size(round(rate.per_second))}/s"


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return "done" if seconds == 0 else duration(seconds)


def totals_line(o: PlanOverview) -> str:
    """The plan in one line: what `migrator status` prints first."""
    return (
        f"plan {o.plan}: {amount(o.bytes_moved, o.bytes_expected)} moved,"
        f" {rate_text(o.rate)} over the last {duration(o.window)}, ETA {eta_text(o.eta_seconds)}"
    )


def overview_json(o: PlanOverview) -> dict[str, Any]:
    return {
        "plan": o.plan,
        "destination": o.destination,
        "at": o.at,
        "bytes_moved": o.bytes_moved,
        "bytes_expected": o.bytes_expected,
        "bytes_per_second": round(o.rate.per_second, 1),
        "eta_seconds": o.eta_seconds,
        "datasets": [
            {
                "name": d.name,
                "state": d.state,
                "generation": d.generation,
                "shards": d.shards,
                "shards_complete": d.shards_complete,
                "bytes_moved": d.bytes_moved,
                "bytes_expected": d.expected.bytes,
                d.items: d.items_moved,
                f"{d.items}_expected": d.expected.items,
                "expected_from": d.expected.basis,
                "bytes_per_second": round(d.rate.per_second, 1),
                "eta_seconds": d.eta_seconds,
            }
            for d in o.datasets
        ],
    }
