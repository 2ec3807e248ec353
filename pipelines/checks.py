"""The integrity gate: blocking checks per dataset and shard, and `migration_complete` behind them.

One `migrator.verify` pass yields both checks: the shard manifests (authentic, every listed
chunk present, nothing unlisted, not fewer chunks than were committed) and a sampled read-back
that decrypts chunks and compares their digests. A failure stops the assets downstream in the run.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    Config,
    DagsterInstance,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset_check,
)
from pydantic import Field

import migrator
from migrator import Problem, VerifyReport, is_manifest_problem
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.sizes import format_size
from pipelines.assets import (
    MigrationConfig,
    config_from,
    dataset_key,
    python_name,
    shard_partitions,
)
from pipelines.resources import PlanResource, TargetResource

MANIFEST_CHECK = "manifests_authentic_and_complete"
READBACK_CHECK = "sampled_readback_decrypts"
LISTING_ERRORS = frozenset({"MissingObjectError", "UnexpectedObjectError"})
SHOWN_PROBLEMS = 20  # the metadata names this many bad objects; the count is always exact


class ReadbackConfig(Config):
    sample: float = Field(0.02, ge=0, le=1, description="Chunks read back; at least one a shard")
    seed: int | None = Field(None, description="Seed of the sample, to repeat one")


def _result(key: AssetKey, name: str, problems: list[Problem], shards: int) -> AssetCheckResult:
    shown = [asdict(problem) for problem in problems[:SHOWN_PROBLEMS]]
    return AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=not problems,
        metadata={"shards": shards, "problem_count": len(problems), "problems": shown},
    )


def split_problems(problems: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    """(the manifest check's, the read-back check's). A manifest's problem (or the data key's)
    fails both: nothing it lists can be trusted."""
    listing = [p for p in problems if is_manifest_problem(p) or p.error in LISTING_ERRORS]
    reading = [p for p in problems if is_manifest_problem(p) or p.error not in LISTING_ERRORS]
    return listing, reading


def shard_verdicts(
    key: AssetKey, report: VerifyReport, shards: Iterable[int], *, blocking: bool = False
) -> tuple[list[AssetCheckEvaluation], list[str]]:
    """Each shard's two check results on its own partition, and a line per failed shard (its
    first problem, and how many more): what a run over several shards, or a check-only job,
    reports so no partition reads "skipped"."""
    events, failed = [], []
    for shard in sorted(shards):
        mine = [p for p in report.problems if p.shard in (shard, None)]
        listing, reading = split_problems(mine)
        for name, found in ((MANIFEST_CHECK, listing), (READBACK_CHECK, reading)):
            shown = [f"{p.error}: {p.message}" for p in found[:SHOWN_PROBLEMS]]
            events.append(
                AssetCheckEvaluation(
                    asset_key=key,
                    check_name=name,
                    passed=not found,
                    partition=str(shard),
                    blocking=blocking,
                    metadata={"problem_count": len(found), "problems": shown},
                )
            )
        if mine:
            first = mine[0]
            more = f" (and {len(mine) - 1} more)" if len(mine) > 1 else ""
            key_ = first.object_key
            where = f" {key_}" if key_ and key_ not in first.message else ""
            failed.append(f"shard {shard}: {first.error}{where}: {first.message}{more}")
    return events, failed


def written_by_dry_run(instance: DagsterInstance, key: AssetKey, partitions: Sequence[str]) -> bool:
    """Where the partitions' latest materializations say they wrote: their `dry_run` metadata
    (none: not a dry run)."""
    seen: set[bool] = set()
    for partition in partitions:
        found = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        event = found[0].asset_materialization if found else None
        flag = event.metadata.get("dry_run") if event is not None else None
        seen.add(flag is not None and flag.value is True)
    if len(seen) > 1:
        raise Failure("these shards were written by dry and real runs: check them apart")
    return seen == {True}


def dataset_checks(spec: Plan, ds: DatasetPlan) -> AssetChecksDefinition:
    key = dataset_key(spec, ds)
    partitions = shard_partitions(ds)
    about = {
        MANIFEST_CHECK: "The shard's sealed manifest opens under the data key, lists every stored"
        " chunk and no other, and not fewer chunks than were committed.",
        READBACK_CHECK: "A sample of the shard's chunks reads back, decrypts, and matches the"
        " manifest's digests.",
    }
    specs = [
        AssetCheckSpec(name, asset=key, blocking=True, partitions_def=partitions, description=text)
        for name, text in about.items()
    ]

    @multi_asset_check(specs=specs, name=f"{key.to_python_identifier()}_integrity")
    def integrity(
        context: AssetCheckExecutionContext,
        config: ReadbackConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> Iterator[AssetCheckResult | AssetCheckEvaluation]:
        shards = {int(partition) for partition in context.partition_keys}
        dry = written_by_dry_run(context.instance, key, context.partition_keys)
        chosen = dry_run_target if dry else target
        with chosen.open(plan.load()) as io:
            report = migrator.verify(
                io.connection, {ds.name}, shards, sample=config.sample, seed=config.seed
            )
        if len(shards) > 1:  # a run of several shards: each partition gets its own verdict
            yield from shard_verdicts(key, report, shards, blocking=True)[0]
        listing, reading = split_problems(report.problems)
        yield _result(key, MANIFEST_CHECK, listing, len(shards))
        yield _result(key, READBACK_CHECK, reading, len(shards))

    return integrity


def completion_asset(
    spec: Plan, config_type: type[MigrationConfig] = MigrationConfig
) -> AssetsDefinition:
    @asset(
        key=AssetKey([spec.name, "migration_complete"]),
        deps=[dataset_key(spec, ds) for ds in spec.datasets],
        group_name=python_name(spec.name),
        description="Every shard of every dataset committed, with its sealed manifest.",
    )
    @config_from(config_type)
    def migration_complete(
        config: MigrationConfig,
        plan: PlanResource,
        target: TargetResource,
        dry_run_target: TargetResource,
    ) -> MaterializeResult[None]:
        with (dry_run_target if config.dry_run else target).open(plan.load()) as io:
            where = migrator.progress(io.connection)
            destination, dry_run = io.destination, io.dry_run
        # Complete once the bulk generation is committed; later syncs and compactions keep it
        # so (a compaction forgets the bulk's per-shard rows, not the commitment).
        committed = {ds.name: where.committed(ds.name) for ds in spec.datasets}
        bulk = {
            ds.name: where.shards_complete(ds.name)
            for ds in spec.datasets
            if not committed[ds.name]
        }
        records = sum(where.live_records(ds.name) for ds in spec.datasets)
        place: dict[str, str | bool] = {"destination": destination, "dry_run": dry_run}
        if any(not committed[ds.name] for ds in spec.datasets):
            short = "; ".join(
                f"{ds.name}: {bulk[ds.name]} of {ds.shards}"
                for ds in spec.datasets
                if not committed[ds.name]
            )
            raise Failure(f"shards complete: {short}", allow_retries=False)
        # Source bytes every committed generation wrote: what the migration has moved so far.
        moved = {ds.name: sum(g.changed_bytes for g in committed[ds.name]) for ds in spec.datasets}
        rows = ["| dataset | kind | generations | live records | source bytes moved |"]
        rows += ["|---|---|---|---|---|"]
        for ds in spec.datasets:
            live = f"{where.live_records(ds.name):,}" if ds.kind is DatasetKind.RECORDS else "-"
            rows.append(
                f"| {ds.name} | {ds.kind} | {len(committed[ds.name])} | {live} |"
                f" {format_size(moved[ds.name])} |"
            )
        return MaterializeResult(
            metadata={
                "datasets": len(spec.datasets),
                "shards": sum(ds.shards for ds in spec.datasets),
                "records": records,
                "bytes_moved": sum(moved.values()),
                "moved": format_size(sum(moved.values())),
                "per_dataset": MetadataValue.md("\n".join(rows) + "\n"),
                "generations": {ds.name: committed[ds.name][-1].generation for ds in spec.datasets},
                **place,
            }
        )

    return migration_complete
