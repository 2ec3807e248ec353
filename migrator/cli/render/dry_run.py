"""What `migrator run --dry-run` prints: the rehearsal, its requests, the real run's forecast."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from migrator.cli.render.plan import residency_table
from migrator.cli.render.run import run_table
from migrator.cli.render.stages import figures_table, sync_parts_table
from migrator.cli.render.verify import verify_summary, verify_table
from migrator.sizes import format_size

if TYPE_CHECKING:
    from migrator.forecast.model import Forecast
    from migrator.rehearsal import DryRunReport


def dry_run_tables(report: DryRunReport) -> list[Table | str]:
    out: list[Table | str] = [f"dry run of plan {report.plan}: nothing sent to the real clouds"]
    out += [f"  {s}" for s in report.substitutions]
    out += [f"  note: {n}" for n in report.notes]
    if report.residency:
        out.append(residency_table(report.residency))
    else:
        out.append("residency: the plan sets no policy; no checks made")
    if report.run is not None:
        out.append(run_table(report.run))
    if report.verify is not None:
        out.append(verify_summary(report.verify))
        if report.verify.problems:
            out.append(verify_table(report.verify))
    req = Table(
        title="requests by type (the migration itself, not its verification)", title_justify="left"
    )
    req.add_column("request")
    req.add_column("count", justify="right")
    for op, n in sorted(report.requests.items()):
        req.add_row(op, f"{n:,}")
    req.caption = f"{format_size(report.bytes_sent)} sent"
    out.append(req)
    if report.forecast is not None:
        out.append(forecast_table(report.forecast, report.bandwidth_limit))
        if report.forecast.stages is not None:
            out.append(sync_parts_table(report.forecast.stages))
            out.append(figures_table(report.forecast.stages))
    return out


def forecast_table(f: Forecast, limit: int | None) -> Table:
    t = Table(title="forecast of the real run", title_justify="left")
    t.add_column("dataset")
    t.add_column("source", justify="right")
    t.add_column("compression", justify="right")
    t.add_column("chunks", justify="right")
    t.add_column("hot loop, one machine", justify="right")
    for d in f.datasets:
        t.add_row(
            d.name,
            format_size(d.source_bytes),
            f"{d.compression:.2f}x",
            f"{d.chunks:,}",
            f"{d.encode_rate / 1e6:,.0f} MB/s",
        )
    one = "routing and hot loop" if f.stages is not None else "hot loop"
    one += f", uploads capped at {format_size(limit)}/s" if limit else ""
    rows = [
        ("stored at the destination", format_size(f.stored_bytes)),
        ("link to the destination", f"{format_size(f.bandwidth)}/s"),
        ("time over the link", f"{f.link_hours:,.1f} h"),
        (f"time on one machine ({one})", f"{f.machine_hours:,.1f} h"),
        ("machines to keep the link full", f"{f.machines_to_fill_link():,}"),
        ("expected time, one machine", f"{f.hours:,.1f} h"),
        *(f.stages.rows() if f.stages is not None else []),
        ("PUT-class requests", f"{f.put_requests:,} (${f.request_usd:,.2f})"),
        ("a full verify's GET requests", f"{f.verify_get_requests:,} (${f.verify_usd:,.2f})"),
        ("storage a month", f"${f.storage_usd_month:,.2f}"),
    ]
    t.add_section()
    for name, value in rows:
        t.add_row(name, value, "", "", "")
    storage, put, get = f.prices
    t.caption = (
        f"prices: ${storage}/GB-month, ${put} per 1,000 PUT, ${get} per 1,000 GET"
        " (assumed list prices unless the plan's forecast section sets them)"
    )
    return t
