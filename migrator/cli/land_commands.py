"""`migrator land`: apply the archive's committed generations to the plan's landing targets,
then prove, per shard and from the targets themselves, that they hold what the archive does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from migrator.cli.opening import checked_plan, reader_threads
from migrator.cli.options import ALLOW_LOOPBACK, DATASETS, PLAN_FILE, check_dataset_names
from migrator.cli.render.output import console
from migrator.errors import EXIT_VERIFY_FAILED

if TYPE_CHECKING:
    from migrator.landing.engine import LandReport
    from migrator.landing.proof import LandedShard


@click.command("land")
@PLAN_FILE
@DATASETS
@click.option(
    "--shards",
    help="Only these shards, e.g. 0-15,20 (one Dagster partition lands one shard).",
)
@click.option(
    "--worker",
    is_flag=True,
    help="Share the landing with other workers of the plan (a shared state store): land the"
    " shards no other worker holds, leave the rest to them.",
)
@click.option(
    "--check-only",
    is_flag=True,
    help="Land nothing: compare each shard's landed digest with the archive's.",
)
@ALLOW_LOOPBACK
def land_cmd(
    plan_file: str,
    datasets: Sequence[str],
    shards: str | None,
    worker: bool,
    check_only: bool,
    allow_loopback: bool,
) -> None:
    """Land every dataset of PLAN that has a `landing` (rerun to resume), then check it: exit 1
    if a shard's landed content differs from the archive's."""
    from migrator.cli.render.land import land_table, mismatch_lines
    from migrator.landing.engine import Lander
    from migrator.landing.proof import check_landing
    from migrator.landing.targets import open_targets
    from migrator.wiring import open_key_provider, open_state, open_store

    plan = checked_plan(plan_file, allow_loopback=allow_loopback)
    check_dataset_names(plan, datasets)
    selected = _shard_set(shards)
    store = open_store(plan)
    provider = open_key_provider(plan)
    reports: list[LandReport] = []
    with open_state(plan) as state:
        if not check_only:
            lander = Lander(
                plan,
                store,
                provider,
                state,
                open_targets,
                workers=reader_threads(),
            )
            reports = lander.land(set(datasets) or None, selected, worker=worker)
            console().print(land_table(reports))
        checked: list[LandedShard] = []
        for report in check_landing(plan, store, provider, set(datasets) or None, selected, state):
            checked.extend(report)
    bad = [s for s in checked if not s.match]
    for line in mismatch_lines(checked):
        click.echo(line)
    if bad:
        raise SystemExit(EXIT_VERIFY_FAILED)


def _shard_set(value: str | None) -> set[int] | None:
    if value is None:
        return None
    out: set[int] = set()
    try:
        for part in value.split(","):
            lo, _, hi = part.strip().partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of shards like 0-15,20") from None
    return out
