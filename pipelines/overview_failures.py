"""Failed shards, as Dagster's instance knows them, each with its reason and the runbook step
for its kind of failure: the overview's "what needs me" table.

A shard is failed when its partition's latest materialization attempt ended in a failed run, or
its latest integrity check failed. Both come from Dagster's indexes (the attempts without a
materialization, the checks' per-partition state), so a tick reads the failures, never every
run of a backfill of thousands; a finished run's reason never changes, so it is read once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from migrator import errors
from migrator.plan.model import Plan
from pipelines.assets import dataset_key
from pipelines.checks import MANIFEST_CHECK, READBACK_CHECK

REASON_CHARS = 300  # a reason's headline; the run's page has the rest
RUN_BATCH = 100  # run ids per look-up


def _names(root: type[Exception]) -> frozenset[str]:
    found, todo = set(), [root]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(found)


BAD_INPUT = _names(errors.SourceError) | _names(errors.PlanError)
INTEGRITY = _names(errors.FormatError)
RUNBOOK = {
    "bad input": "fix the source record the reason names (file, line, byte), then rerun the shard",
    "integrity": "follow docs/REPAIR.md: `migrator repair` re-sends the damaged chunk",
    "runtime": "retry: rerun the shard (store, key service and state errors often pass)",
}


@dataclass(frozen=True, slots=True)
class FailedShard:
    dataset: str
    shard: str  # the partition key
    what: str  # "run" or the failed check's name
    kind: str  # a key of RUNBOOK
    reason: str
    run_id: str

    @property
    def runbook(self) -> str:
        return RUNBOOK[self.kind]


def failure_kind(reason: str, check: bool = False) -> str:
    """What kind of failure a reason is, from the error class that opens it (or that it
    names): a failed integrity check is always one of integrity."""
    if check:
        return "integrity"
    words = {w.strip(":,.()'\"") for w in reason.split()[:4]}
    if words & INTEGRITY:
        return "integrity"
    if words & BAD_INPUT:
        return "bad input"
    return "runtime"


def failed_shards(
    instance: DagsterInstance, spec: Plan, verdicts: Iterable[tuple[str, int, str]] = ()
) -> list[FailedShard]:
    """Every failed shard of every dataset of the plan, in dataset and shard order. `verdicts`:
    the state store's failed integrity checks (dataset, shard, why), which also holds those
    `migrator verify` found outside Dagster; a shard Dagster names already is not repeated."""
    found: list[FailedShard] = []
    for ds in spec.datasets:
        key = dataset_key(spec, ds)
        found.extend(_failed_runs(instance, ds.name, key))
        found.extend(_failed_checks(instance, ds.name, key))
    named = {(f.dataset, f.shard) for f in found if f.kind == "integrity"}
    for dataset, shard, why in verdicts:
        if (dataset, str(shard)) not in named:
            found.append(FailedShard(dataset, str(shard), "integrity check", "integrity", why, ""))
    return sorted(found, key=lambda f: (f.dataset, int(f.shard) if f.shard.isdigit() else -1))


def _failed_runs(instance: DagsterInstance, dataset: str, key: AssetKey) -> Iterator[FailedShard]:
    storage = instance.event_log_storage
    attempts = storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        key
    )
    by_run: dict[str, list[str]] = {}
    for partition, (run_id, _) in attempts.items():
        by_run.setdefault(run_id, []).append(partition)
    ids = list(by_run)
    for lo in range(0, len(ids), RUN_BATCH):
        runs = instance.get_runs(
            RunsFilter(run_ids=ids[lo : lo + RUN_BATCH], statuses=[DagsterRunStatus.FAILURE])
        )
        for run in runs:
            reason = _run_reason(instance, run.run_id)
            for partition in by_run[run.run_id]:
                yield FailedShard(
                    dataset, partition, "run", failure_kind(reason), reason, run.run_id
                )


def _failed_checks(instance: DagsterInstance, dataset: str, key: AssetKey) -> Iterator[FailedShard]:
    checks = [AssetCheckKey(key, name) for name in (MANIFEST_CHECK, READBACK_CHECK)]
    infos = instance.event_log_storage.get_asset_check_partition_info(checks)
    for info in infos:
        if info.latest_execution_status is not AssetCheckExecutionRecordStatus.FAILED:
            continue
        if info.partition_key is None:  # a run's own result over several shards: each has its own
            continue
        partition = info.partition_key
        run_id = info.latest_planned_run_id
        reason = _check_reason(instance, run_id, info.check_key.name, partition)
        yield FailedShard(dataset, partition, info.check_key.name, "integrity", reason, run_id)


@functools.lru_cache(maxsize=4096)
def _run_reason(instance: DagsterInstance, run_id: str) -> str:
    """The failed step's headline: a Failure's description (migrator's errors put their class
    first), else the exception's class and message."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.step_failure_data if event is not None else None
        if data is None:
            continue
        described = data.user_failure_data.description if data.user_failure_data else None
        if described:
            return _headline(described)
        if data.error is not None:
            return _headline(f"{data.error.cls_name}: {data.error.message}")
    return "the run failed before its step (see the run's log)"


def _check_reason(instance: DagsterInstance, run_id: str, check: str, partition: str) -> str:
    """The failed check's first problem: its error and the object it names."""
    found = _check_reasons(instance, run_id)
    return (
        found.get((check, partition)) or found.get((check, "")) or "the check failed (see its run)"
    )


@functools.lru_cache(maxsize=256)
def _check_reasons(instance: DagsterInstance, run_id: str) -> dict[tuple[str, str], str]:
    """Every failed check evaluation of a run, by (check, partition; "" for the run's own),
    read once a run: a verify run over thousands of shards logs two evaluations a shard."""
    out: dict[tuple[str, str], str] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        event = entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if evaluation is None or getattr(evaluation, "passed", True):
            continue
        where = (
            str(getattr(evaluation, "check_name", "")),
            getattr(evaluation, "partition", "") or "",
        )
        out.setdefault(where, _first_problem(getattr(evaluation, "metadata", {}) or {}))
    return out


def _first_problem(metadata: Mapping[str, Any]) -> str:
    problems = metadata.get("problems")
    shown = problems.value if problems is not None else None
    count = metadata.get("problem_count")
    more = f" ({count.value} problems)" if count is not None else ""
    if isinstance(shown, list) and shown and isinstance(shown[0], str):  # "Error: message"
        return _headline(f"{shown[0]}{more}")
    if isinstance(shown, list) and shown and isinstance(shown[0], dict):
        first = shown[0]
        said = first.get("message") or first.get("object_key") or ""
        return _headline(f"{first.get('error', 'problem')}: {said}{more}")
    return "the check failed (see its metadata)"


def _headline(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"
