"""`migrator land`: apply the archive's committed generations to the plan's landing targets,
then prove, per shard and from the targets themselves, that they hold what the archive does.
`--dry-run` rehearses a run and its landing against stand-ins (rehearsal.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from migrator.cli.opening import checked_plan, reader_threads
from migrator.cli.options import (
    ALLOW_LOOPBACK,
    DATASETS,
    PLAN_FILE,
    check_dataset_names,
    shard_set,
)
from migrator.cli.render.output import console
from migrator.errors import EXIT_VERIFY_FAILED

if TYPE_CHECKING:
    from migrator.landing.engine import LandReport
    from migrator.landing.proof import LandedShard
    from migrator.landing.targets import DatasetTargets
    from migrator.plan.model import DatasetPlan, Plan


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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Rehearse: run into stand-ins as `run --dry-run` does, land into stand-ins too (moto,"
    " Azurite, a private PostgreSQL on 127.0.0.1) and check; nothing reaches the plan's clouds"
    " or databases.",
)
@click.option(
    "--tables-as-files",
    is_flag=True,
    help="With --dry-run: land tables' records as per-shard files, without PostgreSQL.",
)
@ALLOW_LOOPBACK
def land_cmd(
    plan_file: str,
    datasets: Sequence[str],
    shards: str | None,
    worker: bool,
    check_only: bool,
    dry_run: bool,
    tables_as_files: bool,
    allow_loopback: bool,
) -> None:
    """Land every dataset of PLAN that has a `landing` (rerun to resume), then check it: exit 1
    if a shard's landed content differs from the archive's."""
    from migrator.cli.render.land import land_table, mismatch_lines
    from migrator.landing.engine import Lander
    from migrator.landing.proof import check_landing
    from migrator.landing.targets import open_targets
    from migrator.wiring import open_key_provider, open_state, open_store

    if dry_run:
        if shards or worker or check_only:
            raise click.UsageError(
                "--dry-run lands every shard: no --shards, --worker, --check-only"
            )
        _dry_run(plan_file, datasets, allow_loopback=allow_loopback, tables=not tables_as_files)
        return
    if tables_as_files:
        raise click.UsageError("--tables-as-files goes with --dry-run")
    plan = checked_plan(plan_file, allow_loopback=allow_loopback)
    check_dataset_names(plan, datasets)
    chosen = shard_set(shards)
    selected = None if chosen is None else set(chosen)
    store = open_store(plan)
    provider = open_key_provider(plan)
    reports: list[LandReport] = []
    opened: dict[str, DatasetTargets] = {}

    def targets(plan: Plan, ds: DatasetPlan) -> DatasetTargets:
        """Each dataset's targets opened once: landing and its check share their clients."""
        if ds.name not in opened:
            opened[ds.name] = open_targets(plan, ds)
        return opened[ds.name]

    only = set(datasets) or None
    with open_state(plan) as state:
        if not check_only:
            lander = Lander(plan, store, provider, state, targets, workers=reader_threads())
            reports = lander.land(only, selected, worker=worker)
            console().print(land_table(reports))
        checked: list[LandedShard] = []
        for report in check_landing(plan, store, provider, only, selected, state, targets):
            checked.extend(report)
    bad = [s for s in checked if not s.match]
    for line in mismatch_lines(checked):
        click.echo(line)
    if bad:
        raise SystemExit(EXIT_VERIFY_FAILED)


def _dry_run(
    plan_file: str, datasets: Sequence[str], *, allow_loopback: bool, tables: bool
) -> None:
    """The rehearsal's run, then its landing into stand-ins and the landing's proof; what
    stood in for what first. The dry run's emulators, and its archive, end with the command."""
    from migrator.cli.render.land import land_table, mismatch_lines
    from migrator.cli.render.progress import RichProgress
    from migrator.cli.render.verify import verify_summary, verify_table
    from migrator.rehearsal import Rehearsal

    plan = checked_plan(
        plan_file, check_sources=False, allow_loopback=allow_loopback, rehearsal=True
    )
    check_dataset_names(plan, datasets)
    with RichProgress(console(stderr=True)) as progress:
        rehearsal = Rehearsal(
            plan,
            allow_loopback=allow_loopback,
            progress=progress,
            land=set(datasets),
            tables=tables,
        )
        report = rehearsal.run()
    out = console()
    click.echo(
        f"dry run of plan {report.plan}: landed into stand-ins, nothing sent to the real clouds"
        " or databases"
    )
    for line in [*report.substitutions, *(f"note: {n}" for n in report.notes)]:
        click.echo(f"  {line}")
    if report.verify is not None:
        out.print(verify_summary(report.verify))
        if not report.verify.ok:
            out.print(verify_table(report.verify))
            raise SystemExit(EXIT_VERIFY_FAILED)
    out.print(land_table(report.landed))
    for line in mismatch_lines(report.landing):
        click.echo(line)
    if any(not s.match for s in report.landing):
        raise SystemExit(EXIT_VERIFY_FAILED)
