"""The commands about the state store, the local index of the destination: `status` reads it,
`state rebuild` makes it again from the destination."""

from __future__ import annotations

import click

from migrator.cli.opening import checked_plan, existing_state, plan_stage
from migrator.cli.options import AS_JSON, PLAN_FILE
from migrator.cli.render.output import console, echo_json, echo_lines
from migrator.errors import UsageError


@click.command("status")
@PLAN_FILE
@AS_JSON
@click.option("--shards", "every", is_flag=True, help="List every shard, complete ones too.")
def status_cmd(plan_file: str, as_json: bool, every: bool) -> None:
    """Per-dataset progress from the state store: totals, and the shards not complete."""
    from rich.markup import escape

    from migrator.cli.render.status import not_started_line, status_parts
    from migrator.read.cutover_integrity import failed_checks
    from migrator.read.overview import overview_json, plan_overview, totals_line
    from migrator.read.status import plan_status
    from migrator.wiring import describe_state

    plan = checked_plan(plan_file, check_sources=False)
    with existing_state(plan) as state:
        status = plan_status(plan, state)
        overview = plan_overview(plan, state) if state is not None else None
        names = [ds.name for ds in plan.datasets]
        failed = failed_checks(state, names) if state is not None else []
    if as_json:
        shown = status.to_json() | ({"overview": overview_json(overview)} if overview else {})
        shown["integrity_failed"] = [{"dataset": d, "shard": s, "why": w} for d, s, w in failed]
        echo_json(shown, indent=status.started)  # not started: one line
    elif not status.started or overview is None:
        click.echo(not_started_line(plan.name, describe_state(plan)))
    else:
        out = console()
        out.print(totals_line(overview))
        for part in status_parts(status, every):
            out.print(part)
        for dataset, shard, why in failed:
            out.print(f"[bold red]{dataset} shard {shard}:[/] {escape(why)}", highlight=False)


@click.group("state")
def state_group() -> None:
    """The local state store (an index of the destination)."""


@state_group.command("rebuild")
@PLAN_FILE
def state_rebuild_cmd(plan_file: str) -> None:
    """Rebuild a lost state store from the destination: generations, shard chains, chunks,
    and the inventories the next sync diffs against (records chunks are read back)."""
    from migrator.cli.render.status import rebuild_lines
    from migrator.maintain.rebuild import StateRebuilder
    from migrator.wiring import describe_state, open_state

    plan = checked_plan(plan_file, check_sources=False)
    with existing_state(plan) as existing:
        found = existing is not None
    if found:
        raise UsageError(
            f"{describe_state(plan)} exists; move it aside (or give the plan an empty database)"
            " to rebuild the state store"
        )
    with open_state(plan) as state:
        reports = plan_stage(StateRebuilder, plan, state).rebuild()
    echo_lines(rebuild_lines(reports))
