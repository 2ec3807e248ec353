"""What `migrator land` prints: what it landed, then every shard whose landed copy differs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from rich.table import Table

from migrator.cli.render.tables import report_table
from migrator.sizes import format_size

if TYPE_CHECKING:
    from migrator.landing.engine import LandReport
    from migrator.landing.proof import LandedShard


def land_table(reports: Sequence[LandReport]) -> Table:
    t = report_table(
        "landed",
        ("dataset", "generation", "shards landed", "applied", "records", "objects", "bytes", "s"),
        left=("dataset",),
    )
    for r in reports:
        t.add_row(
            r.dataset,
            str(r.generation) if r.generation else "none committed",
            f"{len(r.shards_landed):,}"
            + (f" ({len(r.held_by_others):,} left to others)" if r.held_by_others else ""),
            f"{r.generations_applied:,}",
            f"{r.records:,}",
            f"{r.objects:,}",
            format_size(r.bytes),
            f"{r.seconds:.1f}",
        )
    return t


def mismatch_lines(checked: Sequence[LandedShard]) -> Iterator[str]:
    """One line per shard and target that differs, then the verdict."""
    bad = [s for s in checked if not s.match]
    for s in bad:
        yield f"shard {s.shard} of {s.target}: {s.why()}"
    targets = len({s.target for s in checked})
    if bad:
        yield (
            f"landing check: {len(bad)} of {len(checked)} shard landings differ from the archive"
            " (run `migrator land` again to catch up; a shard changed behind its back is named)"
        )
    else:
        yield (
            f"landing check: all {len(checked)} shard landings ({targets} targets) hold what the"
            " archive holds"
        )
