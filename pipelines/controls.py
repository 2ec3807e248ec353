"""The operator's buttons besides migrating: `verify_<dataset>` runs the integrity checks alone,
`sync_now_<dataset>` syncs the dataset at once in one run.

Both are op jobs, not asset jobs: a verify writes nothing (its verdicts are logged as the
dataset asset's per-shard check results, and kept in the state store for the cutover gate), and
"sync now" needs no partition picked in the launchpad. A sync now is `migrator run` for the
dataset in one run process (routing, then every changed shard, then its commit), each shard it
wrote reported on its partition and read back by a sample; for a dataset too big for one run,
the schedule's fan-out over many runs is the way (pipelines/schedules.py).
"""

from collections.abc import Iterable, Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    Config,
    Failure,
    JobDefinition,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

import migrator
from migrator.plan.model import DatasetPlan, Plan
from migrator.read.shard_numbers import shard_numbers
from pipelines.assets import LoggedProgress, dataset_key, python_name, shard_metadata
from pipelines.checks import shard_verdicts
from pipelines.resources import Opened, PlanResource, TargetResource


class VerifyConfig(Config):
    shards: list[int] = Field(default_factory=list, description="Shards to check; empty: all")
    sample: float = Field(0.02, ge=0, le=1, description="Chunks read back; at least one a shard")
    seed: int | None = Field(None, description="Seed of the sample, to repeat one")
    dry_run: bool = Field(default=False, description="Check the stand-ins, not the plan's clouds")


class SyncNowConfig(Config):
    sample: float = Field(0.02, ge=0, le=1, description="Read back this share of what it wrote")
    dry_run: bool = Field(default=False, description="Sync into the stand-ins, not the clouds")


def check_shards(
    io: Opened,
    ds: DatasetPlan,
    shards: Iterable[int],
    sample: float,
    seed: int | None = None,
) -> tuple[list[AssetCheckEvaluation], list[str]]:
    """Verify `shards`: each one's two check results on its partition, and a line per failed
    shard (the first problem and how many more). The op yields the results before it fails:
    events logged by a step that raises are lost."""
    chosen = sorted(shards)
    report = migrator.verify(io.connection, {ds.name}, chosen, sample=sample, seed=seed)
    return shard_verdicts(dataset_key(io.connection.plan, ds), report, chosen)


def _failed(ds: DatasetPlan, failed: list[str], checked: int) -> Failure:
    fix = f"repair: docs/REPAIR.md (the repair_{python_name(ds.name)} job or `migrator repair`)"
    return Failure(
        f"{ds.name}: integrity check failed in {len(failed)} of {checked} shards — {failed[0]};"
        f" {fix}",
        metadata={"failed_shards": "\n".join(failed)},
        allow_retries=False,
    )


def verify_job(spec: Plan, ds: DatasetPlan) -> JobDefinition:
    name = f"verify_{python_name(ds.name)}"

    @op(name=f"{name}_op", out={}, description=f"Read {ds.name} back and check it; writes nothing.")
    def verify_shards(
        context: OpExecutionContext,
        config: VerifyConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> Iterator[AssetCheckEvaluation]:
        shards = config.shards or list(range(ds.shards))
        if bad := sorted(s for s in shards if not 0 <= s < ds.shards):
            raise Failure(f"{ds.name} has shards 0-{ds.shards - 1}, not {bad[0]}")
        with (dry_run_target if config.dry_run else target).open(plan.load()) as io:
            events, failed = check_shards(io, ds, shards, config.sample, config.seed)
        yield from events
        if failed:
            raise _failed(ds, failed, len(shards))
        context.log.info(f"{ds.name}: {len(shards)} shards checked, none failed")

    @job(
        name=name,
        tags={"migrator/mode": "verify"},
        description=f"{ds.name}: the integrity checks alone (manifests, a sampled read-back),"
        " for the chosen shards or all; what the cutover gate requires of every shard's head.",
    )
    def verify() -> None:
        verify_shards()

    return verify


def sync_now_job(spec: Plan, ds: DatasetPlan) -> JobDefinition:
    name = f"sync_now_{python_name(ds.name)}"

    @op(name=f"{name}_op", out={}, description=f"Sync {ds.name} now, in this run, then check.")
    def sync_now(
        context: OpExecutionContext,
        config: SyncNowConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
        with (dry_run_target if config.dry_run else target).open(plan.load()) as io:
            run = migrator.run(io.connection, {ds.name}, progress=LoggedProgress(context.log))
            report = run.datasets[0]
            state = io.connection.state
            assert state is not None  # migrator.run made it
            shards = list(range(ds.shards))
            own = shard_numbers(state, ds.name, ds.kind, report.generation, shards)
            written = [s for s in shards if own[s].wrote_manifest]
            key = dataset_key(spec, ds)
            for shard in written:
                uri = io.object_uri(own[shard].manifest_key)
                yield AssetMaterialization(
                    asset_key=key,
                    partition=str(shard),
                    metadata=shard_metadata(ds, own[shard], uri)
                    | {"generation": report.generation, "dry_run": io.dry_run},
                )
            events, failed = check_shards(io, ds, written, config.sample)
        yield from events
        context.log.info(
            f"{ds.name}: generation {report.generation} ({report.generation_kind})"
            f" {'committed' if report.committed else 'open'}; {len(written)} shards written,"
            f" {report.replaced:,} replaced, {report.removed:,} removed"
        )
        if failed:
            raise _failed(ds, failed, len(written))

    @job(
        name=name,
        tags={"migrator/mode": "sync-now"},
        description=f"{ds.name}: a sync at once, in one run (no partition to pick), then the"
        " integrity checks of the shards it wrote.",
    )
    def sync_now_job() -> None:
        sync_now()

    return sync_now_job
