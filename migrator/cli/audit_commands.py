"""The commands that judge the destination against something else: `audit` its ledgers (and
export the head it saw), and the `cutover` gate against the source."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from migrator.cli.opening import checked_plan, existing_state, expected_head, reader_threads
from migrator.cli.options import AS_JSON, DATASETS, EXPECT_HEAD, PLAN_FILE, check_dataset_names
from migrator.cli.render.output import show_report
from migrator.errors import EXIT_VERIFY_FAILED, UsageError

if TYPE_CHECKING:
    from migrator.plan.model import Plan
    from migrator.read.audit_report import AuditReport
    from migrator.stores.base import ObjectStore


@click.command("cutover")
@PLAN_FILE
@DATASETS
@AS_JSON
@click.option(
    "--rescan",
    is_flag=True,
    help="Read every source record, instead of reusing the digests syncs kept for files whose"
    " name, size and version are unchanged (a file rewritten in place with the same size and"
    " mtime is only seen this way).",
)
def cutover_cmd(plan_file: str, datasets: Sequence[str], as_json: bool, rescan: bool) -> None:
    """The cutover gate: per shard, the source's order-independent digest against the
    destination's (from manifests, no data read back), the pending lag and the last sync; an
    estimate of the write freeze. Exits 0 only when every shard matches."""
    from migrator.cli.render.cutover import cutover_tables
    from migrator.landing.targets import open_targets
    from migrator.read.cutover import CutoverGate
    from migrator.wiring import open_key_provider, open_store

    plan = checked_plan(plan_file)
    check_dataset_names(plan, datasets)
    with existing_state(plan) as state:
        gate = CutoverGate(
            plan,
            open_store(plan),
            open_key_provider(plan),
            state,
            reuse_routed=not rescan,
            open_targets=open_targets,
        )
        report = gate.check(set(datasets) or None)
    show_report(report.to_json(), cutover_tables(report), as_json)
    if not report.ready:
        raise SystemExit(EXIT_VERIFY_FAILED)


@click.command("audit")
@PLAN_FILE
@DATASETS
@AS_JSON
@click.option(
    "--full", is_flag=True, help="Also read every stored data object back and compare its xxh3."
)
@click.option(
    "--audit-key-file",
    type=click.Path(dir_okay=False),
    help="Check with the signing keys `migrator keys audit-key` exported (public keys only): no"
    " KEK or key service needed (the manifests, sealed under the data keys, are then not opened).",
)
@EXPECT_HEAD
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
    from migrator.cli.render.audit import audit_tables
    from migrator.read.audit import Auditor
    from migrator.read.audit_key import read_audit_key_file
    from migrator.wiring import open_key_provider, open_store

    plan = checked_plan(plan_file, check_sources=False)
    check_dataset_names(plan, datasets)
    only = set(datasets) or None
    audit_keys = None
    if audit_key_file is not None:
        audit_keys = read_audit_key_file(Path(audit_key_file), plan.name)
    head = expected_head(plan, expect_head)
    store = open_store(plan)
    with existing_state(plan) as state:
        report = Auditor(
            plan,
            store,
            provider=None if audit_keys is not None else open_key_provider(plan),
            audit_keys=audit_keys,
            state=state,
            full=full,
            workers=reader_threads(),
            expected=head,
        ).audit(only)
    if export_head is not None:
        _export_head(plan, store, report, Path(export_head))
    show_report(report.to_json(), audit_tables(report), as_json)
    if not report.ok:
        raise SystemExit(EXIT_VERIFY_FAILED)


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
