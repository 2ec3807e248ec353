"""What `migrator run` and `migrator compact` print when they are done."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.table import Table

from migrator.cli.render.tables import report_table
from migrator.plan.kinds import DatasetKind
from migrator.sizes import format_size

if TYPE_CHECKING:
    from migrator.maintain.compact import DatasetCompaction
    from migrator.write.reports import RunReport


def run_table(report: RunReport) -> Table:
    columns = (
        "dataset",
        "kind",
        "generation",
        "shards changed",
        "replaced",
        "removed",
        "records",
        "in",
        "stored",
        "ratio",
        "chunks new",
        "chunks skipped",
        "MB/s",
    )
    t = report_table(
        f"migrated plan {report.plan} → {report.destination}",
        columns,
        left=("dataset", "kind", "generation"),
    )
    for d in report.datasets:
        rate = d.bytes_in / d.seconds / 1e6 if d.seconds else 0.0
        t.add_row(
            d.name,
            d.kind,
            f"{d.generation} {d.generation_kind}" + ("" if d.committed else " (open)"),
            f"{d.shards_changed}/{d.shards}",
            f"{d.replaced:,}",
            f"{d.removed:,}",
            f"{d.records:,}" if d.kind == DatasetKind.RECORDS else "-",
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


def quarantine_line(dataset: str, records: int, generation: int, plan_file: str) -> str:
    """A run that set bad records aside (on_bad_record: quarantine) says where to read them."""
    return (
        f"{dataset}: {records:,} bad records quarantined in generation {generation}, not"
        f" migrated; read them with: migrator deadletters {plan_file} --dataset {dataset}"
    )


def compaction_lines(results: list[DatasetCompaction], retention: bool) -> Iterator[str]:
    """One line per dataset; with Object Lock retention, where the deleted records still are."""
    for r in results:
        if r.generation is None:
            what = "nothing to fold (every shard's chain is one base)"
        else:
            what = (
                f"generation {r.generation}: {len(r.shards_compacted)} shards folded into new"
                f" bases ({r.chunks_written} chunks, {format_size(r.bytes_written)})"
            )
        yield (
            f"compacted {r.name}: {what}; deleted {r.objects_deleted} old objects and"
            f" {r.records_deleted} older generation records ({r.seconds:.1f} s)"
        )
        if r.records_deleted and retention:
            yield (
                f"  {r.name}: the deleted generation records stay stored as locked noncurrent"
                " versions until their Object Lock retention lapses (destination.retention)"
            )
