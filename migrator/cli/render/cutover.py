"""What `migrator cutover` prints: per shard, source against destination, then the verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from migrator.cli.render.tables import report_table
from migrator.sizes import format_size

if TYPE_CHECKING:
    from migrator.read.cutover import CutoverReport


CUTOVER_ROWS = 64  # more shards than this: only the mismatched ones are listed


def cutover_tables(report: CutoverReport) -> list[Table | str]:
    out: list[Table | str] = []
    for d in report.datasets:
        if d.problem is not None:
            out.append(f"[bold red]{d.name}: NOT READY[/] — {d.problem}")
            if not d.shards:
                continue
        shown = d.shards if len(d.shards) <= CUTOVER_ROWS else d.mismatched
        landed = any(s.landed_digest is not None for s in d.shards)
        columns: tuple[str, ...] = ("shard", "source digest", "destination digest")
        columns += ("landed digest",) if landed else ()
        t = report_table(
            f"{d.name} ({d.kind}): generation {d.generation}, last sync {d.last_sync}",
            (*columns, "match", "entries", "lag"),
            right=("shard", "entries"),
        )
        for s in shown:
            lag = (
                "unknown (no state)"
                if s.pending_upserts is None
                else f"+{s.pending_upserts:,} −{s.pending_deletes:,} "
                f"({format_size(s.pending_bytes or 0)})"
            )
            digests = [s.source_digest[:16], (s.destination_digest or "-")[:16]]
            entries = f"{s.source_entries:,} / {s.destination_entries:,}"
            if landed:
                digests.append((s.landed_digest or "-")[:16])
                entries += f" / {s.landed_entries or 0:,}"
            t.add_row(
                str(s.shard),
                *digests,
                "[green]yes[/]" if s.match else "[bold red]NO[/]",
                entries,
                s.problem or s.integrity_problem or s.landing_problem or lag,
            )
        if len(shown) < len(d.shards):
            t.caption = f"{len(d.shards) - len(shown)} matching shards not listed"
        out.append(t)
        verdict = (
            "[green]ready[/]" if d.ready else f"[bold red]{len(d.mismatched)} shards not ready[/]"
        )
        out.append(f"{d.name}: {verdict}; {d.summary}")
    f = report.freeze
    if f.seconds is None:
        out.append(f"write freeze: cannot estimate yet ({f.method})")
    else:
        out.append(f"write freeze estimate: {f.seconds:.1f} s (final sync + this gate; {f.method})")
    out.append(
        "[bold green]CUTOVER READY[/]: every shard matches"
        if report.ready
        else "[bold red]NOT READY[/]: act on each reason above (sync, verify, repair, land),"
        " then re-run the gate"
    )
    return out
