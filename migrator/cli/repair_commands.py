"""`migrator repair`: re-send a dataset's damaged or missing chunks from the source, or say, one
line a chunk, why it cannot (docs/REPAIR.md). `--dry-run` finds and rebuilds them, stores
nothing."""

from __future__ import annotations

import click

from migrator.cli.opening import checked_plan, reader_threads
from migrator.cli.options import ALLOW_LOOPBACK, PLAN_FILE, check_dataset_names, shard_set
from migrator.errors import EXIT_VERIFY_FAILED, UsageError


@click.command("repair")
@PLAN_FILE
@click.option("--dataset", "dataset", required=True, help="The dataset whose chunks to repair.")
@click.option(
    "--shards",
    help="Only these shards, e.g. 3,7 or 0-15 (default: every shard, each read back whole).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read back, find the damaged chunks and rebuild each from the source, comparing it"
    " with its manifest's digest; store nothing.",
)
@ALLOW_LOOPBACK
def repair_cmd(
    plan_file: str, dataset: str, shards: str | None, dry_run: bool, allow_loopback: bool
) -> None:
    """Read DATASET's shards back and re-send each damaged or missing chunk from the source
    under its own identity, then read the repaired shards back again: exit 1 if a chunk could
    not be repaired (each such chunk named, with why and what to do)."""
    from migrator import Connection
    from migrator.maintain.repair import repair
    from migrator.wiring import open_existing_state, open_key_provider, open_store

    plan = checked_plan(plan_file, allow_loopback=allow_loopback)
    check_dataset_names(plan, [dataset])
    selected = shard_set(shards)
    state = open_existing_state(plan)
    if state is None:
        raise UsageError(f"{plan.plan_path}: no state store yet: nothing was migrated to repair")
    with state:
        conn = Connection(plan, open_store(plan), open_key_provider(plan), state)
        report = repair(conn, dataset, selected, dry_run=dry_run, workers=reader_threads())
    what = "dry run: nothing stored; " if dry_run else ""
    click.echo(
        f"{what}dataset {dataset}: {len(report.shards)} shards, {report.chunks_checked} chunks"
        f" read back, {len(report.repaired)} {'to repair' if dry_run else 'repaired'},"
        f" {len(report.refused)} not repairable"
        + (
            f"; finished the repair a crash cut short in shards {report.resumed}"
            if report.resumed
            else ""
        )
    )
    for line in report.lines():
        click.echo(line)
    if report.verify is not None:
        verdict = "passes" if report.verify.ok else "FAILS"
        click.echo(f"read back after the repair: {report.verify.chunks_checked} chunks, {verdict}")
        for p in report.verify.problems:
            click.echo(f"  {p.object_key or p.dataset}: {p.error}: {p.message}")
    if not report.ok:
        raise SystemExit(EXIT_VERIFY_FAILED)
