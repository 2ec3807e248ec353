"""`migrator land`: bring each shard's landing targets up to the archive's latest generation.

Each shard lands up to its latest stored manifest (land/heads.py: the generation record's, or a
newer one a sync already wrote for the shard), a shard at a time under its lease, so many
workers land one plan together and never one shard twice at once. Per target, a shard resumes
after the last generation it holds: a table says so itself (its checkpoint commits with its
rows); a bucket's objects by the state store's checkpoint, written after a generation's every
object is confirmed (landing it again rewrites the same bytes); a shard's records file by its
own metadata.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from migrator.codec.manifest import ShardManifest
from migrator.errors import UsageError
from migrator.keys.keyring import Keyring, load_keyring
from migrator.keys.provider import KeyProvider
from migrator.landing.changes import (
    ArchiveReader,
    RecordReader,
    live_records,
    objects_generation,
    read_ahead,
    records_generation,
)
from migrator.landing.heads import LandingHeads
from migrator.landing.target import RecordsGeneration
from migrator.landing.targets import DatasetTargets
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.state.db import StateDB
from migrator.state.leases import LeaseKeeper, dead_on_this_host
from migrator.stores.base import ObjectStore
from migrator.write.workers import ShardClaims

T = TypeVar("T")


def lease_name(dataset: str) -> str:
    """Landing leases a dataset's shards apart from its writers: a shard may land while the
    next sync writes it (only committed generations land)."""
    return f"{dataset}#land"


@dataclass
class LandReport:
    dataset: str
    generation: int = 0  # the newest generation landed to (0: nothing written yet)
    shards_landed: list[int] = field(default_factory=list)  # shards this worker brought up
    generations_applied: int = 0  # (shard, generation, target) applications
    records: int = 0  # records handed to targets
    objects: int = 0  # objects landed
    bytes: int = 0  # object bytes landed
    held_by_others: list[int] = field(default_factory=list)  # worker mode: left to them
    seconds: float = 0.0


@dataclass(eq=False)
class Lander:
    plan: Plan
    store: ObjectStore
    provider: KeyProvider
    state: StateDB
    open_targets: Callable[[Plan, DatasetPlan], DatasetTargets]
    workers: int = 4
    worker_id: str | None = None

    def land(
        self,
        only: set[str] | None = None,
        shards: set[int] | None = None,
        *,
        worker: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> list[LandReport]:
        """Every dataset with a landing (or `only` these). A worker lands the shards no other
        worker holds and leaves the rest to them; otherwise every shard is waited for."""
        datasets = [d for d in self.plan.datasets if d.landing is not None]
        if only:
            unknown = only - {d.name for d in self.plan.datasets}
            if unknown:
                raise UsageError(f"no dataset {sorted(unknown)[0]!r} in the plan")
            without = sorted(n for n in only if n not in {d.name for d in datasets})
            if without:
                raise UsageError(f"dataset {without[0]} has no landing in the plan")
            datasets = [d for d in datasets if d.name in only]
        reports = []
        keeper = LeaseKeeper(self.state, self.plan.lease_seconds, self.worker_id)
        try:
            for ds in datasets:
                reports.append(self._land_dataset(ds, keeper, shards, worker, progress))
        finally:
            keeper.close()
            keeper.release_all()
        return reports

    def _land_dataset(
        self,
        ds: DatasetPlan,
        keeper: LeaseKeeper,
        shards: set[int] | None,
        worker: bool,
        progress: Callable[[str, int], None] | None,
    ) -> LandReport:
        started = time.monotonic()
        report = LandReport(ds.name)
        if shards is not None and (bad := sorted(s for s in shards if not 0 <= s < ds.shards)):
            raise UsageError(f"dataset {ds.name} has shards 0..{ds.shards - 1}, not {bad}")
        key = load_keyring(self.store, self.provider, self.plan.name, ds.name)
        self.state.bind_dataset_key(ds.name, key.first)  # its state rows are sealed
        heads = LandingHeads.read(self.store, self.plan.name, ds, key, self.state)
        report.generation = heads.generation
        ready = set(heads.shards())
        pending = sorted(ready if shards is None else ready & shards)
        name = lease_name(ds.name)
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="land") as pool,
            self.open_targets(self.plan, ds) as targets,
        ):
            reader = ArchiveReader(self.store, key, pool, _read_ahead(self.plan, ds))
            shard_lander = _ShardLander(self, ds, key, reader, targets)
            claims = ShardClaims(self.plan, self.state, keeper)
            while pending:
                got = keeper.claim_many(name, pending, skip_held=True, limit=1)
                got = got or self._take_over(keeper, name, pending)
                if not got:
                    if worker:
                        report.held_by_others = list(pending)
                        break
                    claims.pause()  # until its holder finishes, or its lease lapses
                    continue
                claims.progressed()
                shard = got[0]
                try:
                    keeper.check(name, shard)
                    still_ours = functools.partial(keeper.check, name, shard)
                    if shard_lander.land(shard, heads.chain(shard), report, still_ours):
                        report.shards_landed.append(shard)
                finally:
                    keeper.release(name, [shard])
                pending.remove(shard)
                if progress is not None:
                    progress(ds.name, shard)
        report.seconds = time.monotonic() - started
        return report

    def _take_over(self, keeper: LeaseKeeper, name: str, pending: list[int]) -> list[int]:
        """A pending shard whose holder was a process of this host that is gone (killed while
        landing it): taken over now rather than when its lease lapses."""
        holders = self.state.lease_holders(name)
        for shard in pending:
            holder = holders.get(shard)
            if holder is None or holder[0] == keeper.owner or not dead_on_this_host(holder[0]):
                continue
            if keeper.claim(name, shard, steal_from=holder[0]):
                return [shard]
        return []


@dataclass(eq=False)
class _ShardLander:
    lander: Lander
    ds: DatasetPlan
    key: Keyring
    reader: ArchiveReader
    targets: DatasetTargets
    prepared: bool = False

    def land(
        self,
        shard: int,
        chain: list[ShardManifest],
        report: LandReport,
        still_ours: Callable[[], None],
    ) -> bool:
        """Bring every target of the shard up to its chain's head; True if anything was
        applied."""
        if not chain:
            return False
        applied = False
        state, dataset, head = self.lander.state, self.ds.name, chain[-1].generation
        if self.targets.table is not None:
            table = self.targets.table
            records = RecordReader(self.ds, chain)
            if not self.prepared:
                table.prepare(records.header)
                self.prepared = True
            for m in _after(chain, table.landed_generation(shard)):
                still_ours()
                table.apply(_counted(records_generation(self.reader, records, m), report))
                report.generations_applied += 1
                applied = True
        if self.targets.files is not None:
            files = self.targets.files
            if (files.landed_generation(shard) or 0) < head:
                still_ours()
                records = RecordReader(self.ds, chain)
                files.write_shard(
                    shard,
                    head,
                    records.header,
                    _counting(live_records(self.reader, records, chain), report),
                )
                report.generations_applied += 1
                applied = True
        if self.targets.objects is not None:
            objects, target = self.targets.objects, self.targets.objects_name
            landed = state.landed_generations(dataset, target).get(shard)
            todo = _after(chain, landed)
            # Landed before from a chain that no longer holds that generation (compacted
            # since): the base replaces whatever the shard's objects were.
            replace = landed is not None and bool(todo) and todo[0].is_base
            attempts = f"{target}#attempt"  # a generation whose landing began
            began = state.landed_generations(dataset, attempts).get(shard) if todo else None
            for m in todo:
                still_ours()
                # Only an attempt cut short (or a replacing base) can find the generation's
                # objects landed already: a first attempt sends each without looking first.
                may_hold = replace or began == m.generation
                if not may_hold:
                    state.set_landed(dataset, attempts, shard, m.generation)
                change = objects_generation(self.reader, m, replace=replace, may_hold=may_hold)
                objects.apply(change)
                state.set_landed(dataset, target, shard, m.generation)
                report.objects += sum(1 for _ in change.objects)
                report.bytes += sum(o.size for o in change.objects)
                report.generations_applied += 1
                applied = True
        return applied


def _read_ahead(plan: Plan, ds: DatasetPlan) -> int:
    chunk = ds.part_size or plan.chunk_size if ds.kind is DatasetKind.OBJECTS else plan.chunk_size
    return read_ahead(plan.memory_budget, chunk)


def _after(chain: Sequence[ShardManifest], landed: int | None) -> list[ShardManifest]:
    """The generations of the chain a target holding `landed` still needs: those after it, or
    the whole chain from its base when `landed` is not one of the chain's generations."""
    if landed is None:
        return list(chain)
    gens = [m.generation for m in chain]
    if landed in gens:
        return list(chain[gens.index(landed) + 1 :])
    if landed > gens[-1]:
        return []  # the target is ahead of the archive's record: a rollback, refused elsewhere
    return list(chain)


def _counted(change: RecordsGeneration, report: LandReport) -> RecordsGeneration:
    """The generation with its records counted into `report` as the target consumes them."""
    return replace(change, records=_counting(change.records, report))


def _counting(records: Iterable[T], report: LandReport) -> Iterator[T]:
    for record in records:
        report.records += 1
        yield record
