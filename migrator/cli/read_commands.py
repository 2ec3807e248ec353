"""The commands that read the destination back: `verify` it, `restore` a dataset from it, read
the `deadletters` a run set aside."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from migrator.cli.opening import checked_plan, existing_state, expected_head, reader_threads
from migrator.cli.options import AS_JSON, DATASETS, EXPECT_HEAD, PLAN_FILE, check_dataset_names
from migrator.cli.render.output import console, echo_json, echo_lines
from migrator.errors import EXIT_VERIFY_FAILED, UsageError


@click.command("verify")
@PLAN_FILE
@click.option(
    "--sample",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Fraction of chunks to read back (at least one a shard).",
)
@click.option("--seed", type=int, default=None, help="Seed for the sample, to repeat it.")
@DATASETS
@click.option(
    "--quick",
    is_flag=True,
    help="HEAD each object (presence, size, recorded digest) instead of reading it.",
)
@AS_JSON
@EXPECT_HEAD
def verify_cmd(
    plan_file: str,
    sample: float,
    seed: int | None,
    datasets: Sequence[str],
    quick: bool,
    as_json: bool,
    expect_head: str | None,
) -> None:
    """Read the destination back and check every tag and digest against the manifests."""
    from migrator.cli.render.verify import verify_json, verify_summary, verify_table
    from migrator.read.verify import Verifier
    from migrator.wiring import open_key_provider, open_store

    plan = checked_plan(plan_file, check_sources=False)
    check_dataset_names(plan, datasets)
    head = expected_head(plan, expect_head)
    store = open_store(plan)
    provider = open_key_provider(plan)
    with existing_state(plan) as state:
        report = Verifier(
            plan,
            store,
            provider,
            state,
            sample=sample,
            seed=seed,
            workers=reader_threads(),
            quick=quick,
            head=head,
        ).verify(set(datasets) or None)
    if as_json:
        echo_json(verify_json(report))
    else:
        out = console()
        if report.problems:
            out.print(verify_table(report))
        out.print(verify_summary(report))
    if not report.ok:
        raise SystemExit(EXIT_VERIFY_FAILED)


@click.command("restore")
@PLAN_FILE
@click.option("--dataset", required=True, help="Dataset to restore.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write into.",
)
@click.option(
    "--generation",
    type=click.IntRange(min=1),
    default=None,
    help="Restore as of this generation (default: the latest committed one).",
)
@EXPECT_HEAD
@click.option(
    "--allow-rollback",
    is_flag=True,
    help="Restore the destination's newest generation even when the state store or"
    " --expect-head knows a newer one was committed (the rollback is still reported).",
)
def restore_cmd(
    plan_file: str,
    dataset: str,
    out_dir: str,
    generation: int | None,
    expect_head: str | None,
    allow_rollback: bool,
) -> None:
    """Rebuild a dataset from the destination: records as JSONL/CSV, objects at their paths,
    as of its latest sync (or --generation): base, then every delta in order. Refuses a
    destination older than what the state store or --expect-head knows committed. Exits 3
    naming every object it could not write at its name (the others are written)."""
    from migrator.cli.render.restore import restored_line, rollback_warning
    from migrator.read.restore import Restorer
    from migrator.wiring import open_key_provider, open_store

    plan = checked_plan(plan_file, check_sources=False)
    head = expected_head(plan, expect_head)
    with existing_state(plan) as state:
        report = Restorer(
            plan,
            open_store(plan),
            open_key_provider(plan),
            workers=reader_threads(),
            state=state,
            expected=head,
            allow_rollback=allow_rollback,
        ).restore(dataset, Path(out_dir), generation)
    for message in report.rollbacks:
        click.echo(rollback_warning(message), err=True)
    click.echo(restored_line(report, out_dir))


@click.command("deadletters")
@PLAN_FILE
@click.option("--dataset", required=True, help="Dataset whose quarantined records to read.")
@click.option(
    "--generation",
    type=click.IntRange(min=1),
    default=None,
    help="The generation whose routing set them aside (default: the latest).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write each source file's records, byte for byte, to OUT/<file> (CSV: header first).",
)
@AS_JSON
def deadletters_cmd(
    plan_file: str, dataset: str, generation: int | None, out_dir: str | None, as_json: bool
) -> None:
    """The records a dataset with on_bad_record: quarantine set aside, read back from its
    encrypted dead-letter area: file, line, byte offset and reason of each; with --out, the
    records themselves, to fix and feed back."""
    from migrator.cli.render.restore import (
        dead_letter_lines,
        dead_letters_heading,
        dead_letters_json,
        dead_letters_written_line,
        no_dead_letters_line,
    )
    from migrator.keys.keyring import load_keyring
    from migrator.read.deadletter_files import write_dead_letters
    from migrator.repository.dead_letters import dead_letter_generations, open_dead_letters
    from migrator.wiring import open_key_provider, open_store

    plan = checked_plan(plan_file, check_sources=False)
    check_dataset_names(plan, [dataset])
    store = open_store(plan)
    gens = dead_letter_generations(store, dataset)
    if generation is None and not gens:
        if as_json:
            echo_json({"dataset": dataset, "generation": None, "records": 0}, indent=False)
        else:
            click.echo(no_dead_letters_line(dataset, store.describe()))
        return
    if generation is not None and generation not in gens:
        raise UsageError(
            f"dataset {dataset} has no dead letters of generation {generation} (generations"
            f" with dead letters: {', '.join(map(str, gens)) or 'none'})"
        )
    generation = generation or gens[-1]
    # Each chunk opens with the data key its header names (an older set may predate a new key).
    keyring = load_keyring(store, open_key_provider(plan), plan.name, dataset)
    info, letters = open_dead_letters(store, plan.name, dataset, generation, keyring)
    heading = dead_letters_heading(dataset, generation, info.records)
    if out_dir is not None:
        files = write_dead_letters(info, letters, Path(out_dir))
        click.echo(dead_letters_written_line(heading, files, out_dir))
    elif as_json:
        echo_json(dead_letters_json(info, letters))
    else:
        echo_lines(dead_letter_lines(heading, letters))
