"""What `migrator status` and `migrator state rebuild` print: from the state store, per
dataset its generations and its latest generation's shards."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.table import Table

from migrator.cli.render.tables import report_table
from migrator.sizes import format_size

if TYPE_CHECKING:
    from migrator.maintain.rebuild import RebuildReport
    from migrator.read.status import DatasetStatus, PlanStatus
    from migrator.state.model import GenerationRow


def generations_table(dataset: str, rows: list[GenerationRow]) -> Table:
    columns = ("generation", "kind", "status", "finished", "seconds", "changed", "bytes")
    t = report_table(f"{dataset}: generations", columns, left=("kind", "status", "finished"))
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


def status_table(d: DatasetStatus) -> Table:
    """Per-shard progress; with leases, who works a shard and how long its lease has left."""
    t = Table(
        title=f"{d.name} generation {d.generation}: {d.shards_complete}/{d.shards} shards complete",
        title_justify="left",
    )
    for col in ("shard", "status", "chunks", "records", "plain", "stored", "worker"):
        t.add_column(col, justify="right" if col not in ("status", "worker") else "left")
    for p in d.progress:
        owner, left = d.leases.get(p.shard, ("", 0.0))
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


def status_parts(status: PlanStatus) -> Iterator[Table | str]:
    """Per dataset: its generations, its latest generation's shards, its quarantined records."""
    for d in status.datasets:
        yield generations_table(d.name, d.generations)
        yield status_table(d)
        if d.dead_letters:
            by_gen = ", ".join(f"generation {g}: {n:,}" for g, n in d.dead_letters.items())
            yield f"{d.name}: records quarantined (dead letters): {by_gen}"


def not_started_line(plan: str, state: str) -> str:
    return f"plan {plan}: not started (no state in {state})"


def rebuild_lines(reports: list[RebuildReport]) -> Iterator[str]:
    for r in reports:
        gens = f"generations {r.generations[0]}..{r.generations[-1]}" if r.generations else "none"
        yield (
            f"rebuilt {r.dataset}: {gens}, {r.shards} shards, {r.chunks:,} chunks,"
            f" {r.records_read:,} live records read back for its inventories"
        )
