"""What `migrator audit` prints: per dataset, a table of its shards' ledgers, then every finding
by name, then the verdict. Written for a reader who did not run the migration."""

from __future__ import annotations

from rich.table import Table

from migrator.cli.render.verify import problems_table
from migrator.read.audit_report import FINDINGS, AuditReport, DatasetAudit

WRITERS_SHOWN = 1


def audit_tables(report: AuditReport) -> list[Table | str]:
    out: list[Table | str] = []
    for d in report.datasets:
        out.append(_shards(d))
        for note in d.notes:
            out.append(f"{d.dataset}: {note}")
        for s in d.shards:
            for note in s.notes:
                out.append(f"{d.dataset} shard {s.shard}: {note}")
    found = [(d.dataset, shard, f) for d in report.datasets for shard, f in d.all_findings()]
    if found:
        rows = [(f.kind, dataset, shard, f.object_key, f.message) for dataset, shard, f in found]
        out.append(
            problems_table("findings", ("finding", "dataset", "shard", "object", "what"), rows)
        )
        kinds = sorted({f.kind for _, _, f in found})
        out.extend(f"  {kind}: {FINDINGS[kind]}" for kind in kinds)
    out.append(audit_summary(report))
    return out


def _shards(d: DatasetAudit) -> Table:
    t = Table(
        title=f"{d.dataset}: audit key {d.verify_key[:16]}…; checked: {', '.join(d.checks)}",
        title_justify="left",
    )
    for col in (
        "shard",
        "segments",
        "entries",
        "adds",
        "deletes",
        "live",
        "stored",
        "first entry",
        "last entry",
        "writers",
        "head",
        "findings",
    ):
        t.add_column(
            col,
            justify="left" if col in ("first entry", "last entry", "writers", "head") else "right",
        )
    for s in d.shards:
        writers = sorted(s.writers)
        shown = ", ".join(writers[:WRITERS_SHOWN])
        if len(writers) > WRITERS_SHOWN:
            shown += f" +{len(writers) - WRITERS_SHOWN}"
        head = "-" if s.head is None else f"{s.head[0]}/{s.head[1]} {s.head[2][:12]}…"
        t.add_row(
            str(s.shard),
            f"{s.segments:,}",
            f"{s.entries:,}",
            f"{s.adds:,}",
            f"{s.deletes:,}",
            f"{s.live:,}",
            f"{s.stored:,}",
            (s.first_at or "-")[:19],
            (s.last_at or "-")[:19],
            shown or "-",
            head,
            "[green]0[/]" if not s.findings else f"[bold red]{len(s.findings)}[/]",
        )
    t.caption = "head: segment/entries and chain value where the ledger ends; times UTC"
    return t


def audit_summary(report: AuditReport) -> str:
    shards = sum(len(d.shards) for d in report.datasets)
    entries = sum(s.entries for d in report.datasets for s in d.shards)
    verdict = "CLEAN" if report.ok else f"FAILED ({report.findings} findings)"
    return (
        f"audit {verdict}: {len(report.datasets)} datasets, {shards} shards, {entries:,} ledger"
        f" entries{', every stored object read back' if report.full else ''}"
    )
