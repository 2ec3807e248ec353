"""The commands that write to the destination: `run` (or its rehearsal, `run --dry-run`),
`compact`, and `demo`, which does the whole round trip on a local stand-in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from migrator.cli.opening import checked_plan, plan_stage
from migrator.cli.options import (
    ALLOW_LOOPBACK,
    DATASETS,
    PLAN_FILE,
    check_dataset_names,
    rate_value,
    size_value,
)
from migrator.cli.render.output import console, echo_lines
from migrator.errors import EXIT_VERIFY_FAILED

if TYPE_CHECKING:
    from migrator.plan.model import Plan


@click.command("run")
@PLAN_FILE
@DATASETS
@click.option("--bwlimit", help="Upload rate cap for this run, e.g. 200MiB/s (overrides the plan).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Rehearse against moto/Azurite on 127.0.0.1; report and forecast.",
)
@click.option(
    "--synthetic",
    default="32MiB",
    show_default=True,
    help="Dry run: sample per dataset whose source is out of reach from here.",
)
@ALLOW_LOOPBACK
@click.option(
    "--worker",
    is_flag=True,
    help="Share the work with other workers of the plan (a shared state store): claim free"
    " shards a few at a time, take over those whose worker died, until the generation is done.",
)
@click.option(
    "--claim",
    type=click.IntRange(min=1),
    help="With --worker: shards claimed at a time (default: a sixteenth of each dataset's).",
)
def run_cmd(
    plan_file: str,
    datasets: Sequence[str],
    bwlimit: str | None,
    dry_run: bool,
    synthetic: str,
    allow_loopback: bool,
    worker: bool,
    claim: int | None,
) -> None:
    """Migrate every dataset of PLAN; rerun to resume after an interruption."""
    from migrator.cli.render.progress import RichProgress
    from migrator.heap import map_large_buffers

    map_large_buffers()
    from migrator.cli.render.run import quarantine_line, run_table
    from migrator.wiring import open_key_provider, open_state, open_store
    from migrator.write.deadletter_seal import dead_letter_counts
    from migrator.write.run import MigrationRun

    limit = rate_value(bwlimit, "--bwlimit")
    if dry_run:
        _dry_run(plan_file, synthetic, allow_loopback)
        return
    plan = checked_plan(plan_file, allow_loopback=allow_loopback)
    check_dataset_names(plan, datasets)
    limit = limit or plan.bandwidth_limit
    store = open_store(plan, bandwidth_limit=limit)
    provider = open_key_provider(plan)
    with (
        open_state(plan) as state,
        RichProgress(console(stderr=True), limit=limit) as progress,
    ):
        report = MigrationRun(plan, store, provider, state, progress).run(
            set(datasets) or None, worker=worker, claim=claim
        )
    report.bandwidth_limit = limit
    console().print(run_table(report))
    # on_bad_record: quarantine: one line per dataset whose run set records aside
    for d in report.datasets:
        count = dead_letter_counts(plan.state_dir, d.name).get(d.generation, 0)
        if count:
            click.echo(quarantine_line(d.name, count, d.generation, plan_file))


def _dry_run(plan_file: str, synthetic: str, allow_loopback: bool) -> None:
    from migrator.cli.render.dry_run import dry_run_tables
    from migrator.cli.render.progress import RichProgress
    from migrator.rehearsal import Rehearsal

    size = size_value(synthetic, "--synthetic")
    plan = checked_plan(
        plan_file, check_sources=False, allow_loopback=allow_loopback, rehearsal=True
    )
    with RichProgress(console(stderr=True)) as progress:
        report = Rehearsal(
            plan, synthetic_size=size, allow_loopback=allow_loopback, progress=progress
        ).run()
    out = console()
    for item in dry_run_tables(report):
        out.print(item)
    if report.verify is not None and not report.verify.ok:
        raise SystemExit(EXIT_VERIFY_FAILED)


@click.command("compact")
@PLAN_FILE
@DATASETS
def compact_cmd(plan_file: str, datasets: Sequence[str]) -> None:
    """Fold every shard's chain of sync generations into a new base, so restore cost stays
    bounded; old generations are deleted only after the new bases read back intact."""
    from migrator.cli.render.run import compaction_lines
    from migrator.maintain.compact import Compactor
    from migrator.wiring import open_state

    plan = checked_plan(plan_file, check_sources=False)
    check_dataset_names(plan, datasets)
    with open_state(plan) as state:
        results = plan_stage(Compactor, plan, state).compact(set(datasets) or None)
    echo_lines(compaction_lines(results, retention=_retained(plan)))


def _retained(plan: Plan) -> bool:
    """Object Lock keeps what compaction deletes, as noncurrent versions, until it lapses."""
    from migrator.plan.model import S3DestinationPlan

    dest = plan.destination
    return isinstance(dest, S3DestinationPlan) and dest.retention is not None


@click.command("demo")
@click.option("--size", default="200MiB", show_default=True, help="Synthetic data to generate.")
@click.option(
    "--workdir",
    default="demo-work",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where data, state and restores go.",
)
def demo_cmd(size: str, workdir: str) -> None:
    """Generate realistic data, migrate it into S3 on a local moto server, verify, restore."""
    from migrator.demo.runner import run_demo

    nbytes = size_value(size, "--size")
    ok = run_demo(Path(workdir), nbytes, console(), console(stderr=True))
    if not ok:
        raise SystemExit(EXIT_VERIFY_FAILED)
