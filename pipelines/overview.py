"""`migration_overview`: the migration at a glance, on one asset page of the plan's group.

An external asset that no run materializes: a sensor (on by default, every
MIGRATOR_OVERVIEW_INTERVAL seconds, default 30) reads the deployment's state store
(migrator.read.overview: aggregate queries, no source listing) and Dagster's failures, and
reports a materialization whenever a figure changed, during a backfill or a shard run of hours
as much as at their end. Each carries readable figures ("1.2 GiB of 4.0 GiB", "35.0 MiB/s",
the ETA), numeric ones for the asset's plots (in MiB, MiB/s and minutes, whatever the size),
and a table per dataset and of the failed shards with the runbook step for each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from migrator.errors import MigratorError
from migrator.plan.model import Plan
from migrator.read.cutover_integrity import failed_checks
from migrator.read.overview import (
    DatasetOverview,
    PlanOverview,
    amount,
    eta_text,
    place,
    plan_overview,
    rate_text,
)
from migrator.repository.names import dagster_dry_run_dir, dry_run_state_dir
from pipelines.assets import python_name
from pipelines.overview_failures import FailedShard, failed_shards
from pipelines.resources import PlanResource, StandInTarget, TargetResource

DEFAULT_INTERVAL_SECONDS = 30
SHOWN_FAILURES = 50  # rows of the failed shards table; the count is always exact
MiB = 1024 * 1024


def overview_key(spec: Plan) -> AssetKey:
    return AssetKey([spec.name, "migration_overview"])


def overview_spec(spec: Plan) -> AssetSpec:
    return AssetSpec(
        overview_key(spec),
        group_name=python_name(spec.name),
        kinds={"overview"},
        description="The migration at a glance: per dataset and for the plan, bytes and"
        " records or objects moved against the expected totals, throughput, ETA, failed"
        " shards with the runbook step for each; dry run or production, source and"
        f" destination. Reported by the sensor {python_name(spec.name)}_overview.",
    )


def overview_sensor(spec: Plan, interval: int | None = None) -> SensorDefinition:
    @sensor(
        name=f"{python_name(spec.name)}_overview",
        minimum_interval_seconds=interval or DEFAULT_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Reports {spec.name}'s migration_overview whenever a figure changed.",
    )
    def report_overview(
        context: SensorEvaluationContext, plan: PlanResource, target: TargetResource
    ) -> SensorResult | SkipReason:
        loaded = plan.load()
        dry_run = isinstance(target, StandInTarget)
        try:
            with target.read_state(loaded) as state:
                figures = plan_overview(
                    loaded,
                    state,
                    runs_state_dir(loaded, dry_run),
                    destination=destination(loaded, dry_run),
                )
                names = [ds.name for ds in loaded.datasets]
                verdicts = failed_checks(state, names) if state is not None else []
        except MigratorError as exc:
            return SkipReason(f"cannot read the state store: {exc}")
        failed = failed_shards(context.instance, spec, verdicts)
        seen = fingerprint(figures, failed)
        if seen == context.cursor:
            return SkipReason("no figure changed since the last report")
        event = AssetMaterialization(
            overview_key(spec), metadata=overview_metadata(figures, failed, dry_run)
        )
        return SensorResult(asset_events=[event], cursor=seen)

    return report_overview


def runs_state_dir(plan: Plan, dry_run: bool) -> Path:
    """Where the target's runs keep their routing: the dry run's folder, or the plan's."""
    return dry_run_state_dir(dagster_dry_run_dir(plan.state_dir)) if dry_run else plan.state_dir


def destination(plan: Plan, dry_run: bool) -> str:
    where = place(plan)
    return f"stand-ins for {where} (dry run: nothing reaches it)" if dry_run else where


def fingerprint(o: PlanOverview, failed: list[FailedShard]) -> str:
    """What a new report is made for: moved figures, states, whether work is flowing (so the
    report after the last chunk says it stopped), the failures."""
    parts = [
        f"{d.name}:{d.state}:{d.bytes_moved}:{d.items_moved}:{d.shards_complete}:"
        f"{d.expected.bytes}:{d.rate.bytes > 0}"
        for d in o.datasets
    ]
    parts += [f"{f.dataset}/{f.shard}/{f.what}/{f.run_id}" for f in failed]
    return "|".join(parts)


def overview_metadata(o: PlanOverview, failed: list[FailedShard], dry_run: bool) -> dict[str, Any]:
    expected = o.bytes_expected
    numbers: dict[str, Any] = {
        "moved_mib": round(o.bytes_moved / MiB, 3),
        "throughput_mib_per_s": round(o.rate.per_second / MiB, 3),
        "failed_shards": len(failed),
    }
    if expected is not None:
        numbers["total_mib"] = round(expected / MiB, 3)
        numbers["percent_moved"] = round(100 * o.bytes_moved / expected, 2) if expected else 100.0
    if (eta := o.eta_seconds) is not None:
        numbers["eta_minutes"] = round(eta / 60, 1)
    for d in o.datasets:
        numbers[f"{d.name}_moved_mib"] = round(d.bytes_moved / MiB, 3)
        numbers[f"{d.name}_mib_per_s"] = round(d.rate.per_second / MiB, 3)
    return {
        "mode": "dry run (stand-ins)" if dry_run else "production",
        "moved": amount(o.bytes_moved, expected),
        "throughput": f"{rate_text(o.rate)} (last {o.window / 60:.0f} min)",
        "eta": eta_text(o.eta_seconds),
        "destination": o.destination,
        "datasets": MetadataValue.md(datasets_table(o.datasets)),
        "failed": MetadataValue.md(failures_table(failed)),
        **numbers,
        "dry_run": dry_run,
    }


def datasets_table(datasets: list[DatasetOverview]) -> str:
    rows = [
        "| dataset | state | shards | bytes moved | records / objects | throughput | ETA |"
        " source | expected from |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in datasets:
        rows.append(
            f"| {d.name} | {d.state or '-'} | {d.shards_complete:,}/{d.shards:,} complete"
            f" | {amount(d.bytes_moved, d.expected.bytes)}"
            f" | {amount(d.items_moved, d.expected.items, d.items)}"
            f" | {rate_text(d.rate)} | {eta_text(d.eta_seconds)} | `{d.source}`"
            f" | {d.expected.basis} |"
        )
    return "\n".join(rows)


def failures_table(failed: list[FailedShard]) -> str:
    if not failed:
        return "No failed shards."
    rows = [
        f"{len(failed):,} failed shard(s)",
        "",
        "| dataset | shard | failed | reason | what to do |",
        "|---|---|---|---|---|",
    ]
    for f in failed[:SHOWN_FAILURES]:
        reason = f.reason.replace("|", "\\|")
        rows.append(f"| {f.dataset} | {f.shard} | {f.what} | {reason} | {f.runbook} |")
    if len(failed) > SHOWN_FAILURES:
        rows.append(f"\n{len(failed) - SHOWN_FAILURES:,} more not shown")
    return "\n".join(rows)
