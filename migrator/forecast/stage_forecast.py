"""The whole plan's stages at W workers: listing and routing of the bulk, a sync at the plan's
expected change, a sync with none, and the final sync inside the write freeze; with every
rate and cost it rests on, measured or assumed. `plan --estimate` and the dry run show it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from migrator.forecast.stages import (
    DatasetWork,
    Figure,
    FixedCosts,
    StageTimes,
    Upload,
    bulk,
    freeze,
    sync,
)

# The columns of StageForecast.part_rows.
PART_COLUMNS = (
    "dataset",
    "changed",
    "shards touched",
    "listing",
    "routing",
    "inventories",
    "encoding, upload",
    "changed shards",
    "fixed",
    "sync",
    "final sync + gate",
)


def duration(seconds: float) -> str:
    """Seconds as a person reads them: a sync in seconds or minutes, a bulk in hours."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 3600:,.0f} h ({seconds / 86400:,.1f} days)"


def hours(seconds: float) -> str:
    """Hours, as the bulk's other times are given, and under an hour also as a duration."""
    text = f"{seconds / 3600:,.2f} h"
    return text if seconds >= 3600 else f"{text} ({duration(seconds)})"


def decimal_size(n: float) -> str:
    """Bytes in decimal units, as bills and links count them."""
    value, unit = n, "B"
    for bigger in ("kB", "MB", "GB", "TB", "PB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:,.1f} {unit}" if unit != "B" else f"{value:,.0f} B"


def share(change: float) -> str:
    """0.01 as '1 %', 0.005 as '0.5 %'."""
    return f"{change * 100:.3g} %"


@dataclass(frozen=True, slots=True)
class DatasetStages:
    dataset: str
    files: int
    bulk: StageTimes
    sync: StageTimes  # at the plan's expected change
    idle: StageTimes  # a sync with nothing changed
    freeze: StageTimes  # the final sync, then the cutover gate


@dataclass(frozen=True, slots=True)
class StageForecast:
    workers: int
    change: float  # share of the source's bytes expected to change between two syncs
    listing_threads: int
    datasets: tuple[DatasetStages, ...]
    figures: tuple[Figure, ...]
    who: str = "workers"  # what runs in parallel: "workers", or "machine" for the dry run

    def total(self, which: str) -> StageTimes:
        """`which` (bulk, sync, idle, freeze) summed over the datasets, synced one after
        another as a run takes them."""
        out = StageTimes()
        for d in self.datasets:
            out += getattr(d, which)
        return out

    @property
    def files(self) -> int:
        return sum(d.files for d in self.datasets)

    @property
    def at(self) -> str:
        return "on one machine" if self.who == "machine" else f"at {self.workers} workers"

    def rows(self) -> list[tuple[str, str]]:
        """(what, value) lines for the plan's totals: listing and routing of the bulk, in
        hours, then the syncs."""
        bulk_t, at, pct = self.total("bulk"), self.at, share(self.change)
        return [
            (
                f"listing the source, once a generation ({self.listing_threads} threads)",
                f"{hours(bulk_t.listing)}, {self.files:,} names",
            ),
            (f"routing {at}: records / routing rate", hours(bulk_t.routing)),
            (f"a sync at {pct} change {at}", f"~{duration(self.total('sync').seconds)}"),
            (f"a sync with no change {at}", f"~{duration(self.total('idle').seconds)}"),
            ("final sync inside the freeze", f"~{duration(self.total('freeze').seconds)}"),
        ]

    def part_rows(self) -> list[tuple[str, ...]]:
        """A sync at the expected change, part by part, a row a dataset and one for all."""
        out: list[tuple[str, ...]] = []
        named = [(d.dataset, d.sync, d.freeze) for d in self.datasets]
        if len(named) > 1:
            named.append(("all datasets", self.total("sync"), self.total("freeze")))
        for name, s, f in named:
            out.append(
                (
                    name,
                    decimal_size(s.changed_bytes),
                    f"{s.changed_shards:,}",
                    duration(s.listing),
                    duration(s.routing),
                    duration(s.inventories),
                    duration(s.encoding),
                    duration(s.shards),
                    duration(s.fixed),
                    duration(s.seconds),
                    duration(f.seconds),
                )
            )
        return out

    def figure_rows(self) -> list[tuple[str, str, str, str]]:
        return [(f.name, _value(f), f.how, f.basis) for f in self.figures]

    def as_dict(self) -> dict[str, object]:
        totals = {w: self.total(w).as_dict() for w in ("bulk", "sync", "idle", "freeze")}
        return {
            "workers": self.workers,
            "sync_change": self.change,
            "listing_threads": self.listing_threads,
            "listing_hours": self.total("bulk").listing / 3600,
            "routing_hours": self.total("bulk").routing / 3600,
            "sync_seconds": self.total("sync").seconds,
            "no_change_sync_seconds": self.total("idle").seconds,
            "freeze_seconds": self.total("freeze").seconds,
            "bulk": totals["bulk"],
            "sync": totals["sync"],
            "no_change_sync": totals["idle"],
            "freeze": totals["freeze"],
            "datasets": [
                {
                    "dataset": d.dataset,
                    "files": d.files,
                    "bulk": d.bulk.as_dict(),
                    "sync": d.sync.as_dict(),
                    "no_change_sync": d.idle.as_dict(),
                    "freeze": d.freeze.as_dict(),
                }
                for d in self.datasets
            ],
            "figures": [asdict(f) for f in self.figures],
        }


def _value(f: Figure) -> str:
    if f.unit == "B/s":
        return f"{f.value / 1e6:,.1f} MB/s"
    if f.unit == "s":
        return f"{f.value:,.2f} s"
    if f.unit == "B":
        return f"{f.value:,.0f} B"
    return f"{f.value:,.0f} {f.unit}"


def stage_forecast(
    works: list[DatasetWork],
    workers: int,
    change: float,
    costs: FixedCosts,
    upload: Upload,
    figures: list[Figure],
    *,
    who: str = "workers",
) -> StageForecast:
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers})")
    if not 0 <= change <= 1 or math.isnan(change):
        raise ValueError(f"the change between syncs must be a share from 0 to 1 (got {change})")
    return StageForecast(
        workers=workers,
        change=change,
        listing_threads=costs.listing_threads,
        datasets=tuple(
            DatasetStages(
                d.name,
                d.files,
                bulk(d, workers, costs, upload),
                sync(d, workers, change, costs, upload),
                sync(d, workers, 0.0, costs, upload),
                freeze(d, workers, change, costs, upload),
            )
            for d in works
        ),
        figures=tuple(figures),
        who=who,
    )
