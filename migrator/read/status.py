"""Where a plan's migration stands, as its state store knows it: the figures `migrator status`
prints and emits as JSON, built here so that other callers (Dagster, tests) get the same ones
without the command line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrator.plan.kinds import DatasetKind
from migrator.state.model import GenerationRow, ShardProgress, ShardStatus
from migrator.write.deadletter_seal import dead_letter_counts

if TYPE_CHECKING:
    from migrator.plan.model import Plan
    from migrator.state.db import StateDB


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    """One dataset: its generations, and its latest generation's shards."""

    name: str
    kind: DatasetKind
    shards: int  # as the plan splits the dataset
    generation: int  # the latest generation (1 before the first run opened one)
    generations: list[GenerationRow]
    progress: list[ShardProgress]  # the latest generation's shards that have a status
    leases: dict[int, tuple[str, float]]  # shard -> (worker, lease seconds left; < 0: lapsed)
    dead_letters: dict[int, int]  # generation -> records quarantined

    @property
    def shards_complete(self) -> int:
        return sum(1 for s in self.progress if s.status is ShardStatus.COMPLETE)

    def to_json(self) -> dict[str, Any]:
        shards = self.progress
        return {
            "name": self.name,
            "generation": self.generation,
            "generations": [
                {
                    "generation": g.generation,
                    "kind": str(g.kind),
                    "status": g.status,
                    "started_at": g.started_at,
                    "finished_at": g.finished_at,
                    "seconds": round(g.seconds, 3),
                    "changed_records": g.changed_records,
                    "changed_bytes": g.changed_bytes,
                }
                for g in self.generations
            ],
            "kind": str(self.kind),
            "dead_letters": [{"generation": g, "records": n} for g, n in self.dead_letters.items()],
            "shards": self.shards,
            "shards_complete": self.shards_complete,
            "chunks": sum(s.chunks for s in shards),
            "records": sum(s.records for s in shards),
            "plain_bytes": sum(s.plain_bytes for s in shards),
            "stored_bytes": sum(s.stored_bytes for s in shards),
            "per_shard": [
                {
                    "shard": s.shard,
                    "status": s.status.value,
                    "worker": self.leases.get(s.shard, (None, 0.0))[0],
                    "lease_seconds_left": round(self.leases.get(s.shard, ("", 0.0))[1], 1),
                    "chunks": s.chunks,
                    "records": s.records,
                    "plain_bytes": s.plain_bytes,
                    "stored_bytes": s.stored_bytes,
                }
                for s in shards
            ],
        }


@dataclass(frozen=True, slots=True)
class PlanStatus:
    """Every dataset of a plan; not started while the plan has no state store yet."""

    plan: str
    started: bool
    datasets: list[DatasetStatus]

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "started": self.started,
            "datasets": [d.to_json() for d in self.datasets],
        }


def plan_status(plan: Plan, state: StateDB | None) -> PlanStatus:
    """The plan's progress from its state store (None: no run has made one yet)."""
    if state is None:
        return PlanStatus(plan.name, False, [])
    datasets = []
    for ds in plan.datasets:
        generations = state.generations(ds.name)
        latest = generations[-1].generation if generations else 1
        datasets.append(
            DatasetStatus(
                name=ds.name,
                kind=ds.kind,
                shards=ds.shards,
                generation=latest,
                generations=generations,
                progress=state.shard_progress(ds.name, latest),
                leases=state.lease_holders(ds.name),
                dead_letters=dead_letter_counts(plan.state_dir, ds.name),
            )
        )
    return PlanStatus(plan.name, True, datasets)
