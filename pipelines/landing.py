"""The landed copy: one asset per dataset with a `landing`, partitioned by shard, downstream of
the dataset's asset; each partition is `migrator.land(..., {dataset}, {shard})`, followed by a
blocking check that the shard's landed digest, read from the targets, equals the archive's.

A shard's landing is leased apart from its writing. A sync's shard run lands its shards as soon
as their manifests are stored, before the last shard commits the generation
(migrator/landing/heads.py). Batches follow the dataset asset's (`shards_per_run`): a job over
both assets runs them in one backfill policy.

A dry run lands the dry run's archive into the stand-ins (pipelines/resources.py). The landed
asset lands dry when configured so or when its shards were last written by a dry run (a dry
sync's run configures only the dataset's op); its check follows where the landing went.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    asset,
    multi_asset_check,
)

import migrator
from migrator.plan.model import DatasetPlan, Plan
from pipelines.assets import (
    SHARD_RETRY_POLICY,
    MigrationConfig,
    config_from,
    dataset_key,
    landed_key,
    python_name,
    shard_partitions,
)
from pipelines.checks import written_by_dry_run
from pipelines.resources import PlanResource, TargetResource

LANDED_CHECK = "landed_digest_matches_archive"
SHOWN = 20


def landed_asset(
    spec: Plan,
    ds: DatasetPlan,
    shards_per_run: int = 1,
    config_type: type[MigrationConfig] = MigrationConfig,
) -> AssetsDefinition:
    @asset(
        key=landed_key(spec, ds),
        deps=[dataset_key(spec, ds)],
        partitions_def=shard_partitions(ds),
        backfill_policy=None
        if shards_per_run == 1
        else BackfillPolicy.multi_run(max_partitions_per_run=shards_per_run),
        retry_policy=SHARD_RETRY_POLICY,
        group_name=python_name(spec.name),
        kinds={"landing"},
        description=f"{ds.name} landed where the new platform serves it (plain objects, table"
        " rows or per-shard files), applied generation by generation from the archive.",
    )
    @config_from(config_type)
    def land_shards(
        context: AssetExecutionContext,
        config: MigrationConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> MaterializeResult[None]:
        shards = sorted(int(key) for key in context.partition_keys)
        upstream = written_by_dry_run(
            context.instance, dataset_key(spec, ds), context.partition_keys
        )
        chosen = dry_run_target if config.dry_run or upstream else target
        with chosen.open(plan.load()) as io:
            [report] = migrator.land(io.connection, {ds.name}, shards)
            dry_run = io.dry_run
        return MaterializeResult(
            metadata={
                "shards": f"{shards[0]}-{shards[-1]}" if len(shards) > 1 else str(shards[0]),
                "generation": report.generation,
                "generations_applied": report.generations_applied,
                "records": report.records,
                "objects": report.objects,
                "bytes": report.bytes,
                "seconds": round(report.seconds, 3),
                "dry_run": dry_run,
            }
        )

    return land_shards


def landed_checks(spec: Plan, ds: DatasetPlan) -> AssetChecksDefinition:
    key = landed_key(spec, ds)
    check = AssetCheckSpec(
        LANDED_CHECK,
        asset=key,
        blocking=True,
        partitions_def=shard_partitions(ds),
        description="Each landing target's digest and count for the shard, computed from the"
        " target itself, equal the archive's head manifest.",
    )

    @multi_asset_check(specs=[check], name=f"{key.to_python_identifier()}_proof")
    def landed_proof(
        context: AssetCheckExecutionContext,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> AssetCheckResult:
        shards = {int(partition) for partition in context.partition_keys}
        dry = written_by_dry_run(context.instance, key, context.partition_keys)
        chosen = dry_run_target if dry else target
        with chosen.open(plan.load()) as io:
            checked = migrator.check_landing(io.connection, {ds.name}, shards)
        bad = [s for s in checked if not s.match]
        return AssetCheckResult(
            asset_key=key,
            check_name=LANDED_CHECK,
            passed=not bad,
            metadata={
                "shard_landings": len(checked),
                "mismatched": len(bad),
                "lagging_or_changed": [f"shard {s.shard} {s.target}: {s.why()}" for s in bad][
                    :SHOWN
                ],
            },
        )

    return landed_proof
