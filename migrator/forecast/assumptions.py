"""What `plan --estimate`'s stages rest on: each dataset's work at one worker's rates, and
every rate and cost used, said to be measured here, given, or assumed (and on what)."""

from __future__ import annotations

from typing import Literal

from migrator.forecast.sizing import DatasetEstimate
from migrator.forecast.stages import (
    ASSUMED_FILE_BYTES,
    DatasetWork,
    Figure,
    FixedCosts,
    assumed_files,
    cost_figures,
    listing_figure,
)
from migrator.forecast.worker import ROUTING_SHARE, WorkerRates
from migrator.plan.kinds import DatasetKind
from migrator.sizes import format_size

# A listing this short says more about the clock than about the source.
TIMED_LISTING_FILES = 1000


def rate_figures(rates: WorkerRates) -> list[Figure]:
    """One worker's rates, by stage."""
    how: Literal["measured", "given"] = "measured"
    basis = (
        f"`migrator run` local to local on {format_size(rates.sample_bytes)} of synthetic"
        f" data, this machine ({rates.cpus} CPUs)"
    )
    if rates.measured_seconds is None:
        how, basis = "given", "--rate"
    routed: Literal["measured", "assumed"] = "measured"
    route_basis = "the routing phase of that records run"
    if not rates.routing:
        routed = "assumed"
        route_basis = f"{ROUTING_SHARE:.0%} of a records run's time (bench/phases.py)"
    return [
        Figure("records, end to end, one worker", rates.records, "B/s", how, basis),
        Figure("routing records, one worker", rates.routing_rate, "B/s", routed, route_basis),
        Figure(
            "encoding and storing routed records, one worker",
            rates.records_encoding,
            "B/s",
            routed,
            "the records rate's time less routing's",
        ),
        Figure("objects, end to end, one worker", rates.objects, "B/s", how, basis),
    ]


def _files(d: DatasetEstimate, figures: list[Figure]) -> int:
    if d.files is not None:
        return d.files
    if d.expected_files is not None:
        figures.append(
            Figure(f"files of {d.dataset}", d.expected_files, "files", "given", "expected_files")
        )
        return d.expected_files
    files = assumed_files(d.bytes)
    figures.append(
        Figure(
            f"files of {d.dataset}",
            files,
            "files",
            "assumed",
            f"a file per {format_size(ASSUMED_FILE_BYTES)} of expected_size; set expected_files",
        )
    )
    return files


def _listing_rate(d: DatasetEstimate, figures: list[Figure]) -> float:
    name = f"listing {d.dataset}, one thread"
    if d.files is not None and d.files >= TIMED_LISTING_FILES and d.listed_seconds:
        rate = d.files / d.listed_seconds
        figures.append(Figure(name, rate, "names/s", "measured", "sized by listing it here"))
        return rate
    figure = listing_figure(name, d.source_kind)
    figures.append(figure)
    return figure.value


def plan_works(
    sizes: list[DatasetEstimate], rates: WorkerRates
) -> tuple[list[DatasetWork], list[Figure], FixedCosts]:
    figures = rate_figures(rates)
    works = []
    for d in sizes:
        records = d.kind is DatasetKind.RECORDS
        works.append(
            DatasetWork(
                name=d.dataset,
                kind=d.kind,
                source_bytes=d.bytes,
                stored_bytes=d.stored_bytes,
                files=_files(d, figures),
                shards=d.shards,
                routing_rate=rates.routing_rate if records else 0.0,
                encoding_rate=rates.records_encoding if records else rates.objects,
                listing_rate=_listing_rate(d, figures),
            )
        )
    costs = FixedCosts()
    if rates.sync_seconds is not None:
        costs = FixedCosts(sync_seconds=rates.sync_seconds)
    records = any(w.kind is DatasetKind.RECORDS for w in works)
    figures += cost_figures(costs, sync_measured=rates.sync_seconds is not None, records=records)
    return works, figures, costs
