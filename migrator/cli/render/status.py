"""What `migrator status` and `migrator state rebuild` print: from the state store, per
dataset its generations and its latest generation's shards."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.table import Table

from migrator.cli.render.tables import report_table
from migrator.sizes import format_size
from migrator.state.model import ShardStatus

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


def status_table(d: DatasetStatus, every: bool = False) -> Table:
    """Per-shard progress; with leases, who works a shard and how long its lease has left.
    A summary unless `every`: the totals, then only the shards not complete or held by a
    worker (a dataset of thousands of shards is not thousands of lines)."""
    records = sum(p.records for p in d.progress)
    plain = sum(p.plain_bytes for p in d.progress)
    stored = sum(p.stored_bytes for p in d.progress)
    t = Table(
        title=f"{d.name} generation {d.generation}: {d.shards_complete}/{d.shards} shards"
        f" complete; {records:,} records, {format_size(plain)} in, {format_size(stored)} stored",
        title_justify="left",
    )
    for col in ("shard", "status", "chunks", "records", "plain", "stored", "worker"):
        t.add_column(col, justify="right" if col not in ("status", "worker") else "left")
    shown = [
        p
        for p in d.progress
        if every or p.status is not ShardStatus.COMPLETE or p.shard in d.leases
    ]
    untouched = sorted(set(range(d.shards)) - {p.shard for p in d.progress})
    notes = []
    if len(shown) < len(d.progress):
        notes.append(f"{len(d.progress) - len(shown):,} complete shards not listed (--shards)")
    if untouched:
        notes.append(f"not started in this generation: {shard_ranges(untouched)}")
    t.caption = "; ".join(notes) or None
    for p in shown:
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


def shard_ranges(shards: list[int]) -> str:
    """Sorted shard numbers as ranges: 0-15, 20, 22-23."""
    runs: list[list[int]] = []
    for shard in shards:
        if runs and shard == runs[-1][1] + 1:
            runs[-1][1] = shard
        else:
            runs.append([shard, shard])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def status_parts(status: PlanStatus, every: bool = False) -> Iterator[Table | str]:
    """Per dataset: its generations, its latest generation's shards (`every` one, or those not
    complete), its quarantined records."""
    for d in status.datasets:
        yield generations_table(d.name, d.generations)
        yield status_table(d, every)
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
