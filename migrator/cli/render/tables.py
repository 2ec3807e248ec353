"""The one way a report's table is laid out: titled at the left, text columns to the left and
numbers to the right, so every command's tables line up alike."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from rich.table import Table


def report_table(
    title: str,
    columns: Iterable[str],
    *,
    left: Collection[str] | None = None,
    right: Collection[str] | None = None,
) -> Table:
    """Name the columns of one side, whichever are fewer: `left` puts the rest right, `right`
    puts the rest left."""
    t = Table(title=title, title_justify="left")
    for col in columns:
        if right is not None:
            t.add_column(col, justify="right" if col in right else "left")
        else:
            t.add_column(col, justify="left" if left is not None and col in left else "right")
    return t
