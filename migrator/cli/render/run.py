"""What the CLI draws: rich progress while running, one-screen tables afterwards."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from migrator.forecast.model import Forecast
from migrator.read.cutover import CutoverReport
from migrator.read.verify import VerifyReport
from migrator.rehearsal import DryRunReport
from migrator.residency import ResidencyCheck
from migrator.sizes import format_size
from migrator.state.model import GenerationRow, ShardProgress, ShardStatus
from migrator.write.run import ProgressSink, RunReport


class RichProgress(ProgressSink):
    """Bytes, MB/s and ETA per dataset phase, on stderr so stdout stays for results."""

    def __init__(self, console: Console, *, limit: int | None = None) -> None:
        self._limit = f" [limit {format_size(limit)}/s]" if limit else ""
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total)
        label = f"{dataset}: {phase}" + (self._limit if phase == "encoding" else "")
        self._task = self._progress.add_task(label, total=max(total_bytes, 1))

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, nbytes)


def run_table(report: RunReport) -> Table:
    t = Table(title=f"migrated plan {report.plan} → {report.destination}", title_justify="left")
    for col in (
        "dataset",
        "kind",
        "generation",
        "shards changed",
        "removed",
        "records",
        "in",
        "stored",
        "ratio",
        "chunks new",
        "chunks skipped",
        "MB/s",
    ):
        t.add_column(col, justify="left" if col in ("dataset", "kind", "generation") else "right")
    for d in report.datasets:
        rate = d.bytes_in / d.seconds / 1e6 if d.seconds else 0.0
        t.add_row(
            d.name,
            d.kind,
            f"{d.generation} {d.generation_kind}" + ("" if d.committed else " (open)"),
            f"{d.shards_changed}/{d.shards}",
            f"{d.removed:,}",
            f"{d.records:,}" if d.kind == "records" else "-",
            format_size(d.bytes_in),
            format_size(d.bytes_stored),
            f"{d.compression_ratio:.2f}",
            str(d.chunks_written),
            str(d.chunks_skipped),
            f"{rate:.1f}",
        )
    rate = report.bytes_in / report.seconds / 1e6 if report.seconds else 0.0
    t.caption = (
        f"{format_size(report.bytes_in)} in {report.seconds:.1f} s ({rate:.1f} MB/s);"
        f" {report.chunks_written} chunks written, {report.chunks_skipped} already done"
    )
    if report.bandwidth_limit:
        t.caption += f"; bandwidth limit {format_size(report.bandwidth_limit)}/s"
    return t


def verify_table(report: VerifyReport) -> Table:
    rows = [(p.error, p.dataset, p.shard, p.object_key, p.message) for p in report.problems]
    columns = ("problem", "dataset", "shard", "object", "message")
    return problems_table("verification", columns, rows)


def problems_table(
    title: str,
    columns: tuple[str, str, str, str, str],
    rows: Iterable[tuple[str, str, int | None, str | None, str]],
) -> Table:
    """What a check found, one row each: kind, dataset, shard, object, what (verify, audit)."""
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="right" if col == "shard" else "left")
    for kind, dataset, shard, object_key, message in rows:
        t.add_row(kind, dataset, "" if shard is None else str(shard), object_key or "", message)
    return t


def verify_summary(report: VerifyReport) -> str:
    verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    return (
        f"verify {verdict}: {report.datasets} datasets, {report.shards} shards,"
        f" {report.chunks_checked}/{report.chunks_listed} chunks"
        f" {'checked by HEAD' if report.quick else 'read back'}"
        f" ({format_size(report.bytes_checked)}), {report.records:,} records"
    )


def verify_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "datasets": report.datasets,
        "shards": report.shards,
        "chunks_listed": report.chunks_listed,
        "chunks_checked": report.chunks_checked,
        "bytes_checked": report.bytes_checked,
        "records": report.records,
        "problems": [
            {
                "dataset": p.dataset,
                "shard": p.shard,
                "object_key": p.object_key,
                "error": p.error,
                "message": p.message,
            }
            for p in report.problems
        ],
    }


def generations_table(dataset: str, rows: list[GenerationRow]) -> Table:
    t = Table(title=f"{dataset}: generations", title_justify="left")
    for col in ("generation", "kind", "status", "finished", "seconds", "changed", "bytes"):
        t.add_column(col, justify="left" if col in ("kind", "status", "finished") else "right")
    for g in rows[-10:]:
        finished = (
            datetime.fromtimestamp(g.finished_at, UTC).isoformat(timespec="seconds")
            if g.finished_at
            else "-"
        )
        t.add_row(
            str(g.generation),
            g.kind,
            g.status,
            finished,
            f"{g.seconds:.1f}" if g.finished_at else "-",
            f"{g.changed_records:,}",
            format_size(g.changed_bytes),
        )
    if len(rows) > 10:
        t.caption = f"{len(rows) - 10} earlier generations not shown"
    return t


def status_table(
    dataset: str,
    shards: int,
    progress: list[ShardProgress],
    generation: int = 1,
    leases: dict[int, tuple[str, float]] | None = None,
) -> Table:
    """Per-shard progress; with leases, who works a shard and how long its lease has left."""
    done = sum(1 for p in progress if p.status is ShardStatus.COMPLETE)
    t = Table(
        title=f"{dataset} generation {generation}: {done}/{shards} shards complete",
        title_justify="left",
    )
    for col in ("shard", "status", "chunks", "records", "plain", "stored", "worker"):
        t.add_column(col, justify="right" if col not in ("status", "worker") else "left")
    for p in progress:
        owner, left = (leases or {}).get(p.shard, ("", 0.0))
        worker = "" if not owner else f"{owner} ({'lapsed' if left < 0 else f'{left:.0f} s left'})"
        t.add_row(
            str(p.shard),
            str(p.status),
            str(p.chunks),
            f"{p.records:,}",
            format_size(p.plain_bytes),
            format_size(p.stored_bytes),
            worker,
        )
    return t


def residency_table(checks: list[ResidencyCheck]) -> Table:
    t = Table(title="residency checks (before any byte moves)", title_justify="left")
    for col in ("field", "value", "lies in", "verdict", "why"):
        t.add_column(col)
    for c in checks:
        verdict = "[green]allowed[/]" if c.allowed else "[red]REFUSED[/]"
        t.add_row(c.field, c.value, c.place, verdict, c.reason)
    return t


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
    one = "hot loop" + (f", uploads capped at {format_size(limit)}/s" if limit else "")
    rows = [
        ("stored at the destination", format_size(f.stored_bytes)),
        ("link to the destination", f"{format_size(f.bandwidth)}/s"),
        ("time over the link", f"{f.link_hours:,.1f} h"),
        (f"time on one machine ({one})", f"{f.machine_hours:,.1f} h"),
        ("machines to keep the link full", f"{f.machines_to_fill_link():,}"),
        ("expected time, one machine", f"{f.hours:,.1f} h"),
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


CUTOVER_ROWS = 64  # more shards than this: only the mismatched ones are listed


def cutover_tables(report: CutoverReport) -> list[Table | str]:
    out: list[Table | str] = []
    for d in report.datasets:
        if d.problem is not None:
            out.append(f"[bold red]{d.name}: NOT READY[/] — {d.problem}")
            continue
        shown = d.shards if len(d.shards) <= CUTOVER_ROWS else d.mismatched
        t = Table(
            title=f"{d.name} ({d.kind}): generation {d.generation}, last sync {d.last_sync}",
            title_justify="left",
        )
        for col in ("shard", "source digest", "destination digest", "match", "entries", "lag"):
            t.add_column(col, justify="right" if col in ("shard", "entries") else "left")
        for s in shown:
            lag = (
                "unknown (no state)"
                if s.pending_upserts is None
                else f"+{s.pending_upserts:,} −{s.pending_deletes:,} "
                f"({format_size(s.pending_bytes or 0)})"
            )
            t.add_row(
                str(s.shard),
                s.source_digest[:16],
                (s.destination_digest or "-")[:16],
                "[green]yes[/]" if s.match else "[bold red]NO[/]",
                f"{s.source_entries:,} / {s.destination_entries:,}",
                s.problem or lag,
            )
        if len(shown) < len(d.shards):
            t.caption = f"{len(d.shards) - len(shown)} matching shards not listed"
        out.append(t)
        verdict = (
            "[green]ready[/]" if d.ready else f"[bold red]{len(d.mismatched)} shards differ[/]"
        )
        out.append(f"{d.name}: {verdict}; source scanned in {d.scan_seconds:.1f} s")
    f = report.freeze
    if f.seconds is None:
        out.append(f"write freeze: cannot estimate yet ({f.method})")
    else:
        out.append(f"write freeze estimate: {f.seconds:.1f} s (final sync + this gate; {f.method})")
    out.append(
        "[bold green]CUTOVER READY[/]: every shard matches"
        if report.ready
        else "[bold red]NOT READY[/]: sync again (writes may still be landing) and re-run the gate"
    )
    return out
