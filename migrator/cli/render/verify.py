"""What `migrator verify` prints, and the findings table `migrator audit` shares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.table import Table

from migrator.cli.render.tables import report_table
from migrator.sizes import format_size

if TYPE_CHECKING:
    from migrator.read.verify import VerifyReport


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
    t = report_table(title, columns, right=("shard",))
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
        "problems": [asdict(p) for p in report.problems],  # fields in JSON's order
    }
