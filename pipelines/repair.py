"""`repair_<dataset>`: the operator's button for an integrity check that failed naming a chunk.

One op (not an asset: a repair materializes nothing new, it puts back what a shard's manifest
already lists) runs `migrator.maintain.repair.repair` over the configured shards and reads them
back. The run fails, without retry (no retry makes the source give other bytes), when a chunk
could not be repaired: its headline names the chunk and why (docs/REPAIR.md).
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckEvaluation,
    Config,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Output,
    job,
    op,
)
from pydantic import Field

from migrator.maintain.repair import repair
from migrator.plan.model import DatasetPlan, Plan
from migrator.read.cutover_integrity import failed_checks
from pipelines.assets import dataset_key, python_name
from pipelines.checks import shard_verdicts
from pipelines.resources import PlanResource, TargetResource


class RepairConfig(Config):
    shards: list[int] = Field(
        default_factory=list,
        description="Shards to read back whole and repair; empty: those whose latest"
        " integrity check failed",
    )
    check_only: bool = Field(
        default=False,
        description="Find the damaged chunks and rebuild them from the source; store nothing",
    )
    dry_run: bool = Field(default=False, description="Repair the stand-ins, not the plan's clouds")


NAME_SHARDS = "name shards in the config to read them back whole and repair what they hold"


def repair_job(spec: Plan, ds: DatasetPlan) -> JobDefinition:
    name = f"repair_{python_name(ds.name)}"

    @op(name=f"{name}_op", description=f"Re-send damaged or missing chunks of {ds.name}.")
    def repair_chunks(
        context: OpExecutionContext,
        config: RepairConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> Iterator[AssetCheckEvaluation | Output[None]]:
        chosen = dry_run_target if config.dry_run else target
        with chosen.open(plan.load()) as io:
            shards: list[int] | None = config.shards or None
            if shards is None:  # the shards whose integrity check failed, not a whole read
                state = io.connection.state
                failed = failed_checks(state, [ds.name]) if state is not None else []
                shards = sorted({shard for _, shard, _ in failed})
            if not shards:
                context.log.info(f"{ds.name}: no shard's integrity check failed; {NAME_SHARDS}")
                yield Output(None, metadata={"shards": 0, "dry_run": io.dry_run})
                return
            report = repair(io.connection, ds.name, shards, dry_run=config.check_only)
            destination, dry_run = io.destination, io.dry_run
        for line in report.lines():
            context.log.info(line)
        if report.verify is not None:  # the shards' new verdicts, on their partitions
            key = dataset_key(spec, ds)
            yield from shard_verdicts(key, report.verify, report.rechecked)[0]
        if report.refused:
            first = report.refused[0].line(ds.name)
            more = f" (and {len(report.refused) - 1} more)" if len(report.refused) > 1 else ""
            raise Failure(f"{first}{more}", allow_retries=False)
        if report.verify is not None and not report.verify.ok:
            p = report.verify.problems[0]
            raise Failure(
                f"read back after the repair: {p.object_key}: {p.error}: {p.message}",
                allow_retries=False,
            )
        verb = "to_repair" if config.check_only else "repaired"
        yield Output(
            None,
            metadata={
                "shards": len(report.shards),
                "chunks_checked": report.chunks_checked,
                f"chunks_{verb}": len(report.repaired),
                "not_repairable": len(report.refused),
                "resumed_shards": str(report.resumed),
                "lines": MetadataValue.md("\n".join(f"- {x}" for x in report.lines()) or "-"),
                "destination": destination,
                "dry_run": dry_run,
            },
        )

    @job(
        name=name,
        description=f"Re-send {ds.name}'s damaged or missing chunks from the source, or name"
        " each one that cannot be and why (docs/REPAIR.md).",
        tags={"migrator/plan": spec.name, "migrator/dataset": ds.name},
    )
    def repair_dataset() -> None:
        repair_chunks()

    return repair_dataset
