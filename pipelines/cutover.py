"""`cutover_readiness`: the cutover gate (`migrator.cutover`) as an asset behind every dataset.

The gate's verdict is the asset's blocking check, not an exception: a "not yet" is a normal
answer during the syncs, so each materialization records it (lag, freeze estimate, which shards
differ) for the history, while the failed check keeps anything downstream from starting.
"""

from dataclasses import asdict
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

import migrator
from migrator import CutoverReport
from migrator.plan.model import Plan
from pipelines.assets import MigrationConfig, dataset_key, landed_key, python_name
from pipelines.checks import SHOWN_PROBLEMS
from pipelines.resources import PlanResource, TargetResource

CUTOVER_CHECK = "all_shards_match"
SUMMARY_FIELDS = (
    "name",
    "kind",
    "ready",
    "generation",
    "last_sync",
    "problem",
    "shards_mismatched",
    "pending_upserts",
    "pending_deletes",
    "pending_bytes",
)


def cutover_key(spec: Plan) -> AssetKey:
    return AssetKey([spec.name, "cutover_readiness"])


def _problems(report: CutoverReport) -> list[dict[str, Any]]:
    """Every dataset the gate could not compare, and every shard whose digests differ."""
    out: list[dict[str, Any]] = []
    for d in report.datasets:
        if d.problem is not None:
            out.append({"dataset": d.name, "shard": None, "problem": d.problem})
        for s in d.mismatched:
            shard = asdict(s)
            # The archive behind the source comes first; a landing lag only once it caught up.
            landed = s.landing_problem if s.source_digest == s.destination_digest else None
            differs = "the source's digest differs from the destination's"
            shard["problem"] = s.problem or landed or differs
            out.append({"dataset": d.name, **shard})
    return out


def cutover_asset(spec: Plan) -> AssetsDefinition:
    key = cutover_key(spec)

    @asset(
        key=key,
        deps=[dataset_key(spec, ds) for ds in spec.datasets]
        + [landed_key(spec, ds) for ds in spec.datasets if ds.landing is not None],
        group_name=python_name(spec.name),
        check_specs=[
            AssetCheckSpec(
                CUTOVER_CHECK,
                asset=key,
                blocking=True,
                description="Every shard's source digest equals the destination's, taken from"
                " its authenticated manifest chain: switching now loses nothing.",
            )
        ],
        description="The cutover gate: source against destination shard by shard, the lag a"
        " sync would still write, and an estimate of the write freeze.",
    )
    def cutover_readiness(
        config: MigrationConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
        # Bare: Dagster reads MaterializeResult[None] as the op's one output and then refuses
        # the check output beside it, so its own generic cannot be spelled here.
    ) -> MaterializeResult:  # type: ignore[type-arg]
        """Never raises on "not ready": the verdict is history worth keeping, and the
        blocking check is what stops the run."""
        with (dry_run_target if config.dry_run else target).open(plan.load()) as io:
            report = migrator.cutover(io.connection)
            destination, dry_run = io.destination, io.dry_run
        doc = report.to_json()
        summary = [{name: d[name] for name in SUMMARY_FIELDS} for d in doc["datasets"]]
        freeze = report.freeze.seconds
        problems = _problems(report)
        return MaterializeResult(
            metadata={
                "ready": report.ready,
                **({"freeze_estimate_seconds": freeze} if freeze is not None else {}),
                "freeze_estimate_method": report.freeze.method,
                "datasets_ready": sum(d.ready for d in report.datasets),
                "shards_mismatched": sum(len(d.mismatched) for d in report.datasets),
                "datasets": MetadataValue.json(summary),
                "checked_at": report.checked_at,
                "destination": destination,
                "dry_run": dry_run,
            },
            check_results=[
                AssetCheckResult(
                    check_name=CUTOVER_CHECK,
                    passed=report.ready,
                    metadata={
                        "problem_count": len(problems),
                        "mismatched": MetadataValue.json(problems[:SHOWN_PROBLEMS]),
                    },
                )
            ],
        )

    return cutover_readiness
