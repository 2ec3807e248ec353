"""`migrator plan`: is the plan valid, how large is it, and with --estimate what will a run of
it take and cost."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from migrator.cli.opening import checked_plan
from migrator.cli.options import ALLOW_LOOPBACK, AS_JSON, PLAN_FILE, rate_value
from migrator.cli.render.output import console, echo_json

if TYPE_CHECKING:
    from migrator.plan.model import Plan


@click.command("plan")
@PLAN_FILE
@AS_JSON
@ALLOW_LOOPBACK
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
    from migrator.cli.render.plan import plan_table, residency_table
    from migrator.forecast.sizing import estimate_plan
    from migrator.residency import enforce_residency

    if not estimate:
        from click.core import ParameterSource

        given = click.get_current_context().get_parameter_source("workers")
        if rate is not None or given is not ParameterSource.DEFAULT:
            option = "--rate" if rate is not None else "--workers"
            raise click.UsageError(f"{option} is an option of --estimate")
    per_worker = rate_value(rate, "--rate")
    plan = checked_plan(plan_file, check_sources=not estimate, allow_loopback=allow_loopback)
    checks = enforce_residency(plan)
    if estimate:
        _estimate(plan, workers, per_worker, as_json)
        if checks and not as_json:
            console().print(residency_table(checks))
        return
    est = estimate_plan(plan)
    if as_json:
        echo_json([asdict(e) for e in est])
        return
    out = console()
    out.print(plan_table(plan, est))
    if checks:
        out.print(residency_table(checks))


def _estimate(plan: Plan, workers: int, rate: int | None, as_json: bool) -> None:
    """`plan --estimate`: sizes first, so a plan that cannot be sized fails before measuring."""
    from migrator.cli.render.plan import measuring_line, print_estimate
    from migrator.forecast.estimate import estimate_run
    from migrator.forecast.sizing import size_plan
    from migrator.forecast.worker import MEASURE_BYTES, given_rates, measure_worker_rates

    sizes = size_plan(plan)
    if rate is not None:
        rates = given_rates(rate)
    else:
        console(stderr=True).print(measuring_line(MEASURE_BYTES))
        rates = measure_worker_rates(plan)
    est = estimate_run(plan, sizes, workers, rates)
    if as_json:
        echo_json(est.as_dict())
        return
    print_estimate(console(), plan, est)
