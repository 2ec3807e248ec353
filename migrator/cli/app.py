"""The `migrator` command line. Errors are one line on stderr; --debug adds the traceback.

Exit codes: 0 ok · 1 verification found problems · 2 bad plan or usage · 3 runtime failure
(store, keys, state, source) · 4 integrity error while reading data back · 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from migrator.errors import EXIT_RUNTIME, EXIT_USAGE, EXIT_VERIFY_FAILED, MigratorError, UsageError
from migrator.plan.model import Plan, load_plan
from migrator.sizes import format_size, parse_rate, parse_size

if TYPE_CHECKING:
    from migrator.read.audit_report import AuditReport
    from migrator.read.head_file import ExportedHead
    from migrator.state.store import StateDB
    from migrator.stores.base import ObjectStore

_debug = False

# verify, audit and restore: a head an auditor exported (`audit --export-head`) to hold to
_EXPECT_HEAD = click.option(
    "--expect-head",
    type=click.Path(dir_okay=False),
    help="A head `audit --export-head` wrote earlier: a destination older than it, or whose"
    " record of that generation differs, is reported as a rollback.",
)


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = 160  # pipes and CI logs: wide enough that tables do not wrap
    return console


def _load(
    path: str, *, check_sources: bool = True, allow_loopback: bool = False, rehearsal: bool = False
) -> Plan:
    """The plan, once its residency and FIPS checks pass: every command reads its plan here,
    so none opens a destination, key service or state store the checks refuse (exit 2)."""
    from migrator.residency import enforce_residency, loopback_allowed

    plan = load_plan(path, check_sources=check_sources)
    if allow_loopback:
        plan = loopback_allowed(plan)  # the flag travels with the plan, to wiring's checks too
    enforce_residency(plan, rehearsal=rehearsal)
    return plan


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="migrator")
def cli(debug: bool) -> None:
    """Encrypted, resumable data migration into sovereign clouds."""
    from migrator.console_warnings import show_warnings_on_stderr

    global _debug
    _debug = debug
    show_warnings_on_stderr()


@cli.command("plan")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--allow-loopback",
    is_flag=True,
    help="Let a residency policy accept loopback endpoints (tests and rehearsals).",
)
@click.option(
    "--estimate",
    is_flag=True,
    help="Forecast partitions, requests, time and cost from expected_size; lists only local"
    " sources without one.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="--estimate: migrator processes running shards at once (Dagster runs in the pool).",
)
@click.option(
    "--rate",
    help="--estimate: one worker's end-to-end rate, e.g. 120MB/s; default: measured now"
    " (a few seconds).",
)
def plan_cmd(
    plan_file: str,
    as_json: bool,
    allow_loopback: bool,
    estimate: bool,
    workers: int,
    rate: str | None,
) -> None:
    """Validate PLAN and estimate its chunks and bytes (reads only file sizes).

    With --estimate: also Dagster partitions, requests, time at N workers and cost, from each
    dataset's expected_size (only local sources without one are listed).
    """
    from migrator.cli.display import residency_table
    from migrator.forecast.estimate import estimate_plan
    from migrator.residency import enforce_residency

    if not estimate:
        from click.core import ParameterSource

        given = click.get_current_context().get_parameter_source("workers")
        if rate is not None or given is not ParameterSource.DEFAULT:
            option = "--rate" if rate is not None else "--workers"
            raise click.UsageError(f"{option} is an option of --estimate")
    per_worker = _rate(rate, "--rate")
    plan = _load(plan_file, check_sources=not estimate, allow_loopback=allow_loopback)
    checks = enforce_residency(plan)
    if estimate:
        _plan_estimate(plan, workers, per_worker, as_json)
        if checks and not as_json:
            _console().print(residency_table(checks))
        return
    est = estimate_plan(plan)
    if as_json:
        click.echo(orjson.dumps([asdict(e) for e in est], option=orjson.OPT_INDENT_2).decode())
        return
    t = Table(title=f"plan {plan.name}: valid", title_justify="left")
    for col in ("dataset", "kind", "shards", "files", "bytes", "est. chunks", "est. stored"):
        t.add_column(col, justify="left" if col in ("dataset", "kind") else "right")
    for e in est:
        t.add_row(
            e.dataset,
            e.kind,
            str(e.shards),
            f"{e.files:,}",
            format_size(e.bytes),
            f"{e.chunks:,}",
            format_size(e.stored_bytes),
        )
    t.caption = (
        f"destination {plan.destination.kind}; chunk size {format_size(plan.chunk_size)};"
        f" zstd level {plan.compression_level}; memory budget {format_size(plan.memory_budget)}"
    )
    console = _console()
    console.print(t)
    if checks:
        console.print(residency_table(checks))


def _plan_estimate(plan: Plan, workers: int, rate: int | None, as_json: bool) -> None:
    """`plan --estimate`: sizes first, so a plan that cannot be sized fails before measuring."""
    from migrator.forecast.estimate import (
        MEASURE_BYTES,
        OBJECTS_RATIO,
        RECORDS_RATIO,
        estimate_run,
        given_rates,
        measure_worker_rates,
        size_plan,
    )

    sizes = size_plan(plan)
    if rate is not None:
        rates = given_rates(rate)
    else:
        _console(stderr=True).print(
            f"measuring one worker on this machine: {format_size(MEASURE_BYTES)} each of"
            " synthetic records and videos, local to local ..."
        )
        rates = measure_worker_rates(plan)
    est = estimate_run(plan, sizes, workers, rates)
    if as_json:
        click.echo(orjson.dumps(est.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    console = _console()
    if rates.measured_seconds is not None:
        sample = format_size(rates.sample_bytes)
        records_s, objects_s = (rates.sample_bytes / r for r in (rates.records, rates.objects))
        console.print(
            f"per-worker rate measured just now on this machine ({rates.cpus} CPUs) by"
            f" `migrator run` local to local on {sample} of each kind, a"
            f" {rates.measured_seconds:.1f} s measurement: records"
            f" {rates.records / 1e6:,.0f} MB/s ({records_s:.1f} s),"
            f" objects {rates.objects / 1e6:,.0f} MB/s ({objects_s:.1f} s)",
            soft_wrap=True,
        )
        if rates.contended:
            console.print(
                f"[yellow]note: this machine was busy (1-minute load {rates.load:.1f} on"
                f" {rates.cpus} CPUs), so these rates are likely low; measure when it is idle,"
                " or give --rate[/]",
                soft_wrap=True,
            )
    else:
        console.print(f"per-worker rate given: {rates.records / 1e6:,.0f} MB/s (--rate)")
    t = Table(title=f"plan {plan.name}: estimate", title_justify="left")
    for col in (
        "dataset",
        "kind",
        "size from",
        "source",
        "shards = Dagster partitions",
        "chunks",
        "est. stored",
        "PUT requests",
    ):
        t.add_column(col, justify="left" if col in ("dataset", "kind", "size from") else "right")
    for d in est.datasets:
        t.add_row(
            d.dataset,
            d.kind,
            "expected_size" if d.files is None else f"listed, {d.files:,} files",
            format_size(d.bytes),
            f"{d.shards:,}",
            f"{d.chunks:,}",
            format_size(d.stored_bytes),
            f"{est.puts(d):,}",
        )
    t.caption = (
        f"chunk size {format_size(plan.chunk_size)}; stored assumes zstd {RECORDS_RATIO:g}x on"
        f" records, {OBJECTS_RATIO:g}x on objects; objects sized by expected_size count full"
        " parts only (each file adds at most one more)"
    )
    console.print(t)
    totals = Table(title=f"whole plan at {est.workers} workers", title_justify="left")
    totals.add_column("")
    totals.add_column("", justify="right")
    for name, value in est.summary_rows():
        totals.add_row(name, value)
    totals.caption = est.caption()
    console.print(totals)


@cli.command("run")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
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
@click.option(
    "--allow-loopback",
    is_flag=True,
    help="Let a residency policy accept loopback endpoints (tests and rehearsals).",
)
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
    from migrator.cli.display import RichProgress, run_table
    from migrator.wiring import open_key_provider, open_state, open_store
    from migrator.write.run import MigrationRun

    limit = _rate(bwlimit, "--bwlimit")
    if dry_run:
        _dry_run(plan_file, synthetic, allow_loopback)
        return
    plan = _load(plan_file, allow_loopback=allow_loopback)
    _check_dataset_names(plan, datasets)
    limit = limit or plan.bandwidth_limit
    store = open_store(plan, bandwidth_limit=limit)
    provider = open_key_provider(plan)
    with (
        open_state(plan) as state,
        RichProgress(_console(stderr=True), limit=limit) as progress,
    ):
        report = MigrationRun(plan, store, provider, state, progress).run(
            set(datasets) or None, worker=worker, claim=claim
        )
    report.bandwidth_limit = limit
    _console().print(run_table(report))
    _report_dead_letters(plan, plan_file, [(d.name, d.generation) for d in report.datasets])


def _report_dead_letters(plan: Plan, plan_file: str, runs: list[tuple[str, int]]) -> None:
    """One line per dataset whose run quarantined records (on_bad_record: quarantine)."""
    from migrator.write.deadletter import dead_letter_counts

    for name, generation in runs:
        count = dead_letter_counts(plan.state_dir, name).get(generation, 0)
        if count:
            click.echo(
                f"{name}: {count:,} bad records quarantined in generation {generation}, not"
                f" migrated; read them with: migrator deadletters {plan_file} --dataset {name}"
            )


def _readers() -> int:
    """Threads for commands that read the destination back: I/O bound, so twice the cores."""
    return max(4, (os.cpu_count() or 1) * 2)


@contextlib.contextmanager
def _existing_state(plan: Plan) -> Iterator[StateDB | None]:
    """The plan's state store if it has one: readers work from the destination without it."""
    from migrator.wiring import open_existing_state

    state = open_existing_state(plan)
    try:
        yield state
    finally:
        if state is not None:
            state.close()


def _show(doc: Any, parts: Iterable[Any], as_json: bool, *, ok: bool) -> None:
    """A report as JSON or as tables; exit 1 when it found something."""
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        console = _console()
        for part in parts:
            console.print(part)
    if not ok:
        raise SystemExit(EXIT_VERIFY_FAILED)


def _rate(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _dry_run(plan_file: str, synthetic: str, allow_loopback: bool) -> None:
    from migrator.cli.display import RichProgress, dry_run_tables
    from migrator.rehearsal import Rehearsal

    try:
        size = parse_size(synthetic)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--synthetic") from None
    plan = _load(plan_file, check_sources=False, allow_loopback=allow_loopback, rehearsal=True)
    with RichProgress(_console(stderr=True)) as progress:
        report = Rehearsal(
            plan, synthetic_size=size, allow_loopback=allow_loopback, progress=progress
        ).run()
    console = _console()
    for item in dry_run_tables(report):
        console.print(item)
    if report.verify is not None and not report.verify.ok:
        raise SystemExit(EXIT_VERIFY_FAILED)


@cli.command("status")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(plan_file: str, as_json: bool) -> None:
    """Per-dataset and per-shard progress, from the state store."""
    from migrator.cli.display import generations_table, status_table
    from migrator.wiring import describe_state, open_existing_state
    from migrator.write.deadletter import dead_letter_counts

    plan = _load(plan_file, check_sources=False)
    opened = open_existing_state(plan)
    if opened is None:
        if as_json:
            click.echo(orjson.dumps({"plan": plan.name, "started": False, "datasets": []}).decode())
        else:
            click.echo(f"plan {plan.name}: not started (no state in {describe_state(plan)})")
        return
    with opened as state:
        gens = {ds.name: state.generations(ds.name) for ds in plan.datasets}
        latest = {name: rows[-1].generation if rows else 1 for name, rows in gens.items()}
        per_ds = [(ds, state.shard_progress(ds.name, latest[ds.name])) for ds in plan.datasets]
        leases = {ds.name: state.lease_holders(ds.name) for ds in plan.datasets}
    if as_json:
        doc: dict[str, Any] = {"plan": plan.name, "started": True, "datasets": []}
        for ds, shards in per_ds:
            doc["datasets"].append(
                {
                    "name": ds.name,
                    "generation": latest[ds.name],
                    "generations": [
                        {
                            "generation": g.generation,
                            "kind": g.kind,
                            "status": g.status,
                            "started_at": g.started_at,
                            "finished_at": g.finished_at,
                            "seconds": round(g.seconds, 3),
                            "changed_records": g.changed_records,
                            "changed_bytes": g.changed_bytes,
                        }
                        for g in gens[ds.name]
                    ],
                    "kind": ds.kind,
                    "dead_letters": [
                        {"generation": g, "records": n}
                        for g, n in dead_letter_counts(plan.state_dir, ds.name).items()
                    ],
                    "shards": ds.shards,
                    "shards_complete": sum(1 for s in shards if s.status.value == "complete"),
                    "chunks": sum(s.chunks for s in shards),
                    "records": sum(s.records for s in shards),
                    "plain_bytes": sum(s.plain_bytes for s in shards),
                    "stored_bytes": sum(s.stored_bytes for s in shards),
                    "per_shard": [
                        {
                            "shard": s.shard,
                            "status": s.status.value,
                            "worker": leases[ds.name].get(s.shard, (None, 0.0))[0],
                            "lease_seconds_left": round(
                                leases[ds.name].get(s.shard, ("", 0.0))[1], 1
                            ),
                            "chunks": s.chunks,
                            "records": s.records,
                            "plain_bytes": s.plain_bytes,
                            "stored_bytes": s.stored_bytes,
                        }
                        for s in shards
                    ],
                }
            )
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    console = _console()
    for ds, shards in per_ds:
        console.print(generations_table(ds.name, gens[ds.name]))
        console.print(status_table(ds.name, ds.shards, shards, latest[ds.name], leases[ds.name]))
        if counts := dead_letter_counts(plan.state_dir, ds.name):
            by_gen = ", ".join(f"generation {g}: {n:,}" for g, n in counts.items())
            console.print(f"{ds.name}: records quarantined (dead letters): {by_gen}")


@cli.command("verify")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option(
    "--sample",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Fraction of chunks to read back (at least one a shard).",
)
@click.option("--seed", type=int, default=None, help="Seed for the sample, to repeat it.")
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
@click.option(
    "--quick",
    is_flag=True,
    help="HEAD each object (presence, size, recorded digest) instead of reading it.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_EXPECT_HEAD
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
    from migrator.cli.display import verify_json, verify_summary, verify_table
    from migrator.read.verify import Verifier
    from migrator.wiring import open_key_provider, open_store

    plan = _load(plan_file, check_sources=False)
    _check_dataset_names(plan, datasets)
    head = _expected_head(plan, expect_head)
    store = open_store(plan)
    provider = open_key_provider(plan)
    with _existing_state(plan) as state:
        workers = _readers()
        report = Verifier(
            plan,
            store,
            provider,
            state,
            sample=sample,
            seed=seed,
            workers=workers,
            quick=quick,
            head=head,
        ).verify(set(datasets) or None)
    if as_json:
        click.echo(orjson.dumps(verify_json(report), option=orjson.OPT_INDENT_2).decode())
    else:
        console = _console()
        if report.problems:
            console.print(verify_table(report))
        console.print(verify_summary(report))
    if not report.ok:
        raise SystemExit(EXIT_VERIFY_FAILED)


@cli.command("compact")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
def compact_cmd(plan_file: str, datasets: Sequence[str]) -> None:
    """Fold every shard's chain of sync generations into a new base, so restore cost stays
    bounded; old generations are deleted only after the new bases read back intact."""
    from migrator.maintain.compact import Compactor
    from migrator.wiring import open_key_provider, open_state, open_store

    plan = _load(plan_file, check_sources=False)
    _check_dataset_names(plan, datasets)
    with open_state(plan) as state:
        results = Compactor(
            plan,
            open_store(plan),
            open_key_provider(plan),
            state,
            workers=_readers(),
        ).compact(set(datasets) or None)
    for r in results:
        if r.generation is None:
            what = "nothing to fold (every shard's chain is one base)"
        else:
            what = (
                f"generation {r.generation}: {len(r.shards_compacted)} shards folded into new"
                f" bases ({r.chunks_written} chunks, {format_size(r.bytes_written)})"
            )
        click.echo(
            f"compacted {r.name}: {what}; deleted {r.objects_deleted} old objects and"
            f" {r.records_deleted} older generation records ({r.seconds:.1f} s)"
        )
        if r.records_deleted and plan.destination.retention is not None:
            click.echo(
                f"  {r.name}: the deleted generation records stay stored as locked noncurrent"
                " versions until their Object Lock retention lapses (destination.retention)"
            )


@cli.command("cutover")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cutover_cmd(plan_file: str, datasets: Sequence[str], as_json: bool) -> None:
    """The cutover gate: per shard, the source's order-independent digest against the
    destination's (from manifests, no data read back), the pending lag and the last sync; an
    estimate of the write freeze. Exits 0 only when every shard matches."""
    from migrator.cli.display import cutover_tables
    from migrator.read.cutover import CutoverGate
    from migrator.wiring import open_key_provider, open_store

    plan = _load(plan_file)
    _check_dataset_names(plan, datasets)
    with _existing_state(plan) as state:
        report = CutoverGate(plan, open_store(plan), open_key_provider(plan), state).check(
            set(datasets) or None
        )
    _show(report.to_json(), cutover_tables(report), as_json, ok=report.ready)


@cli.command("audit")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--full", is_flag=True, help="Also read every stored data object back and compare its xxh3."
)
@click.option(
    "--audit-key-file",
    type=click.Path(dir_okay=False),
    help="Check with the signing keys `migrator keys audit-key` exported (public keys only): no"
    " KEK or key service needed (the manifests, sealed under the data keys, are then not opened).",
)
@_EXPECT_HEAD
@click.option(
    "--export-head",
    type=click.Path(dir_okay=False),
    help="After a clean audit, write each dataset's head (newest generation, SHA-256 of its"
    " record, ledger heads) to FILE, for later --expect-head; keep it where the destination's"
    " writers cannot change it.",
)
def audit_cmd(
    plan_file: str,
    datasets: Sequence[str],
    as_json: bool,
    full: bool,
    audit_key_file: str | None,
    expect_head: str | None,
    export_head: str | None,
) -> None:
    """Check every shard's audit ledger: the chain whole (no gap, reorder, alteration or
    forgery), through the heads the state store and the manifests bind, and explaining every
    stored data object. Exits 0 only when nothing is found."""
    from migrator.cli.audit_tables import audit_tables
    from migrator.read.audit import Auditor
    from migrator.read.audit_key import read_audit_key_file
    from migrator.wiring import open_key_provider, open_store

    plan = _load(plan_file, check_sources=False)
    _check_dataset_names(plan, datasets)
    only = set(datasets) or None
    audit_keys = None
    if audit_key_file is not None:
        audit_keys = read_audit_key_file(Path(audit_key_file), plan.name)
    head = _expected_head(plan, expect_head)
    store = open_store(plan)
    with _existing_state(plan) as state:
        report = Auditor(
            plan,
            store,
            provider=None if audit_keys is not None else open_key_provider(plan),
            audit_keys=audit_keys,
            state=state,
            full=full,
            workers=_readers(),
            expected=head,
        ).audit(only)
    if export_head is not None:
        _export_head(plan, store, report, Path(export_head))
    _show(report.to_json(), audit_tables(report), as_json, ok=report.ok)


def _export_head(plan: Plan, store: ObjectStore, report: AuditReport, path: Path) -> None:
    """What a clean audit saw, for a later --expect-head; a damaged destination's head would
    anchor the damage, so none is written then."""
    from migrator.read.head_file import LedgerMark, dataset_head, head_document

    if not report.ok:
        click.echo(
            f"migrator: {path}: head not written: the audit found {report.findings} problems",
            err=True,
        )
        return
    heads = {
        d.dataset: dataset_head(
            store, d.dataset, {s.shard: LedgerMark(*s.head) for s in d.shards if s.head}
        )
        for d in report.datasets
    }
    try:
        path.write_bytes(head_document(plan.name, store.describe(), heads))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the head file ({exc.strerror})") from None
    click.echo(
        f"head exported to {path}: keep it where the destination's writers cannot change it",
        err=True,
    )


@cli.command("restore")
@click.argument("plan_file", type=click.Path(dir_okay=False))
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
@_EXPECT_HEAD
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
    from migrator.read.restore import Restorer
    from migrator.wiring import open_key_provider, open_store

    plan = _load(plan_file, check_sources=False)
    head = _expected_head(plan, expect_head)
    with _existing_state(plan) as state:
        report = Restorer(
            plan,
            open_store(plan),
            open_key_provider(plan),
            workers=_readers(),
            state=state,
            expected=head,
            allow_rollback=allow_rollback,
        ).restore(dataset, Path(out_dir), generation)
    for message in report.rollbacks:
        click.echo(f"migrator: warning: {message} (restored anyway: --allow-rollback)", err=True)
    click.echo(
        f"restored {report.dataset}: {report.files} files, {report.records:,} records,"
        f" {format_size(report.bytes)} into {out_dir} (generation {report.generation})"
    )


@cli.command("deadletters")
@click.argument("plan_file", type=click.Path(dir_okay=False))
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deadletters_cmd(
    plan_file: str, dataset: str, generation: int | None, out_dir: str | None, as_json: bool
) -> None:
    """The records a dataset with on_bad_record: quarantine set aside, read back from its
    encrypted dead-letter area: file, line, byte offset and reason of each; with --out, the
    records themselves, to fix and feed back."""
    import base64

    from migrator.keys.keyring import load_keyring
    from migrator.wiring import open_key_provider, open_store
    from migrator.write.deadletter import (
        dead_letter_generations,
        open_dead_letters,
        write_dead_letters,
    )

    plan = _load(plan_file, check_sources=False)
    _check_dataset_names(plan, [dataset])
    store = open_store(plan)
    gens = dead_letter_generations(store, dataset)
    if generation is None and not gens:
        if as_json:
            click.echo(
                orjson.dumps({"dataset": dataset, "generation": None, "records": 0}).decode()
            )
        else:
            click.echo(f"dataset {dataset} has no dead letters at {store.describe()}")
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
    what = f"dataset {dataset} generation {generation}: {info.records:,} records quarantined"
    if out_dir is not None:
        files = write_dead_letters(info, letters, Path(out_dir))
        files_written = f"{files} file" + ("" if files == 1 else "s")
        click.echo(f"{what}, written byte for byte into {files_written} under {out_dir}")
    elif as_json:
        doc = {
            "dataset": dataset,
            "generation": generation,
            "records": info.records,
            "csv_header": info.csv_header,
            "dead_letters": [
                {
                    "file": d.file,
                    "line": d.line,
                    "offset": d.offset,
                    "reason": d.reason,
                    "data_base64": base64.b64encode(d.data).decode(),
                }
                for d in letters
            ],
        }
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        for d in letters:
            click.echo(f"{d.file}:{d.line}: {d.reason}; the record starts at byte {d.offset}")
        click.echo(what)


@cli.command("demo")
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

    try:
        nbytes = parse_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None
    ok = run_demo(Path(workdir), nbytes, _console(), _console(stderr=True))
    if not ok:
        raise SystemExit(EXIT_VERIFY_FAILED)


@cli.group("state")
def state_group() -> None:
    """The local state store (an index of the destination)."""


@state_group.command("rebuild")
@click.argument("plan_file", type=click.Path(dir_okay=False))
def state_rebuild_cmd(plan_file: str) -> None:
    """Rebuild a lost state store from the destination: generations, shard chains, chunks,
    and the inventories the next sync diffs against (records chunks are read back)."""
    from migrator.maintain.rebuild import StateRebuilder
    from migrator.wiring import describe_state, open_key_provider, open_state, open_store

    plan = _load(plan_file, check_sources=False)
    with _existing_state(plan) as existing:
        found = existing is not None
    if found:
        raise UsageError(
            f"{describe_state(plan)} exists; move it aside (or give the plan an empty database)"
            " to rebuild the state store"
        )
    with open_state(plan) as state:
        reports = StateRebuilder(
            plan,
            open_store(plan),
            open_key_provider(plan),
            state,
            workers=_readers(),
        ).rebuild()
    for r in reports:
        gens = f"generations {r.generations[0]}..{r.generations[-1]}" if r.generations else "none"
        click.echo(
            f"rebuilt {r.dataset}: {gens}, {r.shards} shards, {r.chunks:,} chunks,"
            f" {r.records_read:,} live records read back for its inventories"
        )


@cli.group("keys")
def keys_group() -> None:
    """Key management."""


@keys_group.command("init")
@click.argument("path", type=click.Path(dir_okay=False))
def keys_init_cmd(path: str) -> None:
    """Create a new local KEK file (mode 0600), and the signing key file beside it if there is
    none; never overwrites an existing file."""
    from migrator.keys.local import init_kek_file
    from migrator.keys.local_signing import default_signing_key_file, init_signing_key_file

    kek_id = init_kek_file(Path(path))
    click.echo(f"created KEK {path} (id {kek_id}); keep it secret and back it up")
    signing = default_signing_key_file(Path(path))
    existed = signing.exists()
    signing_id = init_signing_key_file(signing, exist_ok=True)
    what = "kept the signing key" if existed else "created signing key"
    click.echo(
        f"{what} {signing} (id {signing_id}): it signs keyrings and the audit ledger; keep it"
        " secret, back it up, and give the KEK without it to whoever only restores"
    )


@keys_group.command("audit-key")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The file to write (public keys only: nothing in it is secret).",
)
def keys_audit_key_cmd(plan_file: str, datasets: Sequence[str], out_file: str) -> None:
    """Export the plan's audit key: the public keys of every signing key its keyrings and
    ledgers were signed with (the current one, and the earlier ones each dataset's keyring
    lists). With it, `migrator audit PLAN --audit-key-file FILE` checks the ledgers without
    the KEK or the key service; it can neither decrypt nor sign anything."""
    from migrator.errors import MissingObjectError
    from migrator.keys.keyring import plan_trust, read_keyring
    from migrator.read.audit_key import audit_key_document
    from migrator.wiring import open_key_provider, open_store

    plan = _load(plan_file, check_sources=False)
    _check_dataset_names(plan, datasets)
    store = open_store(plan)
    provider = open_key_provider(plan)
    current = provider.signer.public_key()
    keys = {current.key_id: current}
    for ds in plan.datasets:
        if datasets and ds.name not in datasets:
            continue
        try:
            stored = read_keyring(store, plan.name, ds.name)
        except MissingObjectError:
            continue  # never migrated: nothing signed yet
        for key in stored.trusted_signers(plan_trust(provider)).keys:
            keys.setdefault(key.key_id, key)
    out = Path(out_file)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(audit_key_document(plan.name, list(keys.values())))
    tmp.replace(out)
    for key in keys.values():
        click.echo(f"signing key {key.key_id} ({key.source})")
    click.echo(f"wrote {out_file}: give it to auditors with the plan file and read access")


@keys_group.command("rotate")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
@click.option(
    "--new-data-key",
    is_flag=True,
    help="Also add a fresh data key and make it current: later generations are sealed under it.",
)
@click.option(
    "--allow-loopback",
    is_flag=True,
    help="Let a residency policy accept loopback endpoints (tests and rehearsals).",
)
def keys_rotate_cmd(
    plan_file: str, datasets: Sequence[str], new_data_key: bool, allow_loopback: bool
) -> None:
    """Re-wrap every data key under the plan's KEK (`keys`), each unwrapped with whichever KEK
    wrapped it (`keys` or `keys.previous`); nothing is re-encrypted. Rerun to finish an
    interrupted rotation; a rerun with nothing to do changes nothing."""
    from migrator.maintain.rotate import KeyRotation
    from migrator.wiring import open_key_provider, open_store

    plan = _load(plan_file, check_sources=False, allow_loopback=allow_loopback)
    _check_dataset_names(plan, datasets)
    rotation = KeyRotation(plan, open_store(plan), open_key_provider(plan))
    kek = rotation.chain.current.describe()
    results = rotation.rotate(set(datasets) or None, new_data_key=new_data_key)
    for r in results:
        if r.revision is None:
            click.echo(f"{r.dataset}: no data key yet (its first run creates one under {kek})")
            continue
        if r.written is None:
            what = f"{r.keys} data key(s), all wrapped under {kek}; current {r.current}"
            if r.kept_unused:
                what += " has sealed nothing yet: no other data key added"
        else:
            what = f"re-wrapped {r.rewrapped} of {r.keys} data key(s) under {kek}"
            if r.new_key is not None:
                what += (
                    f"; added data key {r.new_key}, now current (it seals generation"
                    f" {r.new_key_from} on)"
                )
            if r.resigned:
                what += f"; signed by signing key {r.signed_by}"
            what += f"; wrote {r.written}"
            if r.kept_unused:
                what += f"; current data key {r.current} has sealed nothing yet: no other added"
        if r.removed:
            what += f"; removed {len(r.removed)} superseded key object(s)"
        elif r.written is None:
            what += "; nothing to do"
        click.echo(f"{r.dataset}: {what}")
        if r.open_generation is not None and r.open_generation_key != r.current:
            click.echo(
                f"  generation {r.open_generation} is under way: it finishes under data key"
                f" {r.open_generation_key}; later generations are sealed under {r.current}"
            )
    if plan.keys.previous and not datasets:
        click.echo(
            "every data key is wrapped under keys, every keyring signed by its signing key:"
            " once no other copy of the plan still needs them, remove keys.previous from the"
            " plan and retire those KEKs (the keyrings keep the public keys of their signing"
            " keys, for audits of what those signed)"
        )


def _expected_head(plan: Plan, path: str | None) -> ExportedHead | None:
    from migrator.read.head_file import read_head_file

    return None if path is None else read_head_file(Path(path), plan)


@cli.command("crypto")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def crypto_cmd(as_json: bool) -> None:
    """The crypto backend every seal and unseal goes through: its OpenSSL, whether it runs in
    FIPS mode (what a plan's `fips: required` demands) and the algorithms it offers."""
    from migrator.residency import crypto_backend
    from migrator.residency.fips import FIPS_HOW_TO

    backend = crypto_backend()
    if as_json:
        click.echo(orjson.dumps(asdict(backend), option=orjson.OPT_INDENT_2).decode())
        return
    t = Table(title="crypto backend", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("library", backend.library)
    t.add_row("OpenSSL", f"{backend.openssl} (0x{backend.openssl_number:08x})")
    t.add_row("FIPS mode", "[green]on[/]" if backend.fips else "[yellow]off[/]")
    t.add_row("TLS (Python's ssl)", backend.tls)
    t.add_row("TLS FIPS mode", "[green]on[/]" if backend.tls_fips else "[yellow]off[/]")
    for name, offered in backend.algorithms.items():
        t.add_row(name, "offered" if offered else "[red]not offered[/]")
    console = _console()
    console.print(t)
    if not (backend.fips and backend.tls_fips):
        console.print(f"plans with fips: required refuse to run here: {FIPS_HOW_TO}")


def _check_dataset_names(plan: Plan, names: Sequence[str]) -> None:
    known = {d.name for d in plan.datasets}
    for name in names:
        if name not in known:
            raise click.BadParameter(
                f"no dataset {name!r} in {plan.plan_path} (it has: {', '.join(sorted(known))})",
                param_hint="--dataset",
            )


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="migrator",
            standalone_mode=False,
        )
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("migrator: interrupted; run the same command again to resume", err=True)
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(EXIT_USAGE) from None
    except MigratorError as exc:
        if _debug:
            traceback.print_exc()
        click.echo(f"migrator: error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    except SystemExit:
        raise
    except Exception as exc:
        if _debug:
            traceback.print_exc()
        click.echo(
            f"migrator: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
            err=True,
        )
        raise SystemExit(EXIT_RUNTIME) from None
    raise SystemExit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
