"""The stages and syncs of a forecast (`plan --estimate`, the dry run): a sync part by part,
and every rate and cost the forecast rests on, measured, given or assumed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from migrator.cli.render.tables import report_table
from migrator.forecast.stage_forecast import PART_COLUMNS, share

if TYPE_CHECKING:
    from migrator.forecast.stage_forecast import StageForecast


def sync_parts_table(stages: StageForecast) -> Table:
    t = report_table(
        f"a sync at {share(stages.change)} change {stages.at}, part by part",
        PART_COLUMNS,
        left=("dataset",),
    )
    for row in stages.part_rows():
        t.add_row(*row)
    t.caption = (
        "changed: bytes in new or changed files (forecast.sync_change); records count every"
        " record of a changed file as written again, an upper bound; the listing is the whole"
        " source's, on one worker. The final sync inside the write freeze is a sync of the"
        f" change since the last sync (up to {share(stages.change)}), then the cutover gate,"
        " which lists the source once more"
    )
    return t


def figures_table(stages: StageForecast) -> Table:
    t = report_table(
        "rates and costs the forecast rests on",
        ("figure", "value", "how", "on what"),
        right=("value",),
    )
    for row in stages.figure_rows():
        t.add_row(*row)
    return t
