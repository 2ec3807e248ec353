"""What `migrator plan` prints: the plan's sizes, or with --estimate its forecast, and the
residency checks it passed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from migrator.cli.render.stages import figures_table, sync_parts_table
from migrator.cli.render.tables import report_table
from migrator.forecast.sizing import OBJECTS_RATIO, RECORDS_RATIO
from migrator.sizes import format_size

if TYPE_CHECKING:
    from migrator.forecast.estimate import PlanEstimate
    from migrator.forecast.sizing import DatasetEstimate
    from migrator.plan.model import Plan
    from migrator.residency import ResidencyCheck


def residency_table(checks: list[ResidencyCheck]) -> Table:
    columns = ("field", "value", "lies in", "verdict", "why")
    t = report_table("residency checks (before any byte moves)", columns, right=())
    for c in checks:
        verdict = "[green]allowed[/]" if c.allowed else "[red]REFUSED[/]"
        t.add_row(c.field, c.value, c.place, verdict, c.reason)
    return t


def plan_table(plan: Plan, est: list[DatasetEstimate]) -> Table:
    columns = ("dataset", "kind", "shards", "files", "bytes", "est. chunks", "est. stored")
    t = report_table(f"plan {plan.name}: valid", columns, left=("dataset", "kind"))
    for e in est:
        t.add_row(
            e.dataset,
            e.kind,
            str(e.shards),
            f"{e.files:,}",
            format_size(e.bytes),
            f"{e.chunks:,}",
            format_size(e.stored_bytes),
        )
    t.caption = (
        f"destination {plan.destination.kind}; chunk size {format_size(plan.chunk_size)};"
        f" zstd level {plan.compression_level}; memory budget {format_size(plan.memory_budget)}"
    )
    return t


def measuring_line(sample_bytes: int) -> str:
    """Said on stderr before the measurement, which takes a few seconds."""
    return (
        f"measuring one worker on this machine: {format_size(sample_bytes)} each of"
        " synthetic records and videos, local to local, then a records sync of no change ..."
    )


def print_estimate(console: Console, plan: Plan, est: PlanEstimate) -> None:
    """Where the rates came from, then per dataset and for the whole plan."""
    rates = est.rates
    if rates.measured_seconds is not None:
        sample = format_size(rates.sample_bytes)
        records_s, objects_s = (rates.sample_bytes / r for r in (rates.records, rates.objects))
        console.print(
            f"per-worker rate measured just now on this machine ({rates.cpus} CPUs) by"
            f" `migrator run` local to local on {sample} of each kind, a"
            f" {rates.measured_seconds:.1f} s measurement: records"
            f" {rates.records / 1e6:,.0f} MB/s ({records_s:.1f} s),"
            f" objects {rates.objects / 1e6:,.0f} MB/s ({objects_s:.1f} s)"
            + (f", routing {rates.routing / 1e6:,.0f} MB/s" if rates.routing else "")
            + (
                f"; a records sync with nothing changed {rates.sync_seconds:.2f} s"
                if rates.sync_seconds is not None
                else ""
            ),
            soft_wrap=True,
        )
        if rates.contended:
            console.print(
                f"[yellow]note: this machine was busy (1-minute load {rates.load:.1f} on"
                f" {rates.cpus} CPUs), so these rates are likely low; measure when it is idle,"
                " or give --rate[/]",
                soft_wrap=True,
            )
    else:
        console.print(f"per-worker rate given: {rates.records / 1e6:,.0f} MB/s (--rate)")
    console.print(estimate_table(plan, est))
    console.print(totals_table(est))
    console.print(sync_parts_table(est.stages))
    console.print(figures_table(est.stages))


def estimate_table(plan: Plan, est: PlanEstimate) -> Table:
    columns = (
        "dataset",
        "kind",
        "size from",
        "source",
        "shards = Dagster partitions",
        "chunks",
        "est. stored",
        "PUT requests",
    )
    t = report_table(f"plan {plan.name}: estimate", columns, left=("dataset", "kind", "size from"))
    for d in est.datasets:
        t.add_row(
            d.dataset,
            d.kind,
            "expected_size" if d.files is None else f"listed, {d.files:,} files",
            format_size(d.bytes),
            f"{d.shards:,}",
            f"{d.chunks:,}",
            format_size(d.stored_bytes),
            f"{est.puts(d):,}",
        )
    t.caption = (
        f"chunk size {format_size(plan.chunk_size)}; stored assumes zstd {RECORDS_RATIO:g}x on"
        f" records, {OBJECTS_RATIO:g}x on objects; objects sized by expected_size count full"
        " parts only (each file adds at most one more)"
    )
    return t


def totals_table(est: PlanEstimate) -> Table:
    totals = Table(title=f"whole plan at {est.workers} workers", title_justify="left")
    totals.add_column("")
    totals.add_column("", justify="right")
    for name, value in est.summary_rows():
        totals.add_row(name, value)
    totals.caption = est.caption()
    return totals
