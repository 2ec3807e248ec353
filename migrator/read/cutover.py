"""`migrator cutover`: may the platform switch to the destination now?

Per shard it compares the source's order-independent digest (one scan: every record read and
hashed, objects by their listing) with the destination's, taken from the authenticated chain of
manifests alone: no chunk is downloaded. The lag (what a sync would still write) comes from the
state store's inventories; the write freeze is estimated from the durations of recent syncs.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from migrator.codec.chunk import object_tagger
from migrator.codec.digests import (
    ObjectEntry,
    ObjectsMap,
    RecordsMap,
    objects_digest,
    records_digest,
    records_map_from_spool,
    to_hex,
    unpack_objects_map,
    unpack_records_map,
)
from migrator.codec.generation import GenerationKind
from migrator.errors import FormatError, MigratorError, MissingObjectError
from migrator.keys.keyring import load_keyring
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.read.chain import head_chain, live_records, superseded
from migrator.repository.generations import latest_record
from migrator.repository.names import cutover_dir, digests_path
from migrator.sharding import shard_of
from migrator.sources.base import Source, SourceObject
from migrator.sources.factory import open_source
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore
from migrator.write.route import (
    PARALLEL_ROUTING_MIN_CORES,
    RecordsSpec,
    routing_processes,
    scan_digests,
)

RECENT_SYNCS = 5  # the freeze estimate fits this many of the latest syncs


@dataclass
class ShardGate:
    """Digests are shown as keyed tags of the digests (equal exactly when the digests are):
    a bare xxh3 sum of a one-record shard would be that record's plaintext hash."""

    shard: int
    source_digest: str
    destination_digest: str | None  # None: the shard's chain could not be read
    source_entries: int  # records, or objects
    destination_entries: int
    pending_upserts: int | None  # records or objects a sync would write (None: no state)
    pending_deletes: int | None
    pending_bytes: int | None
    problem: str | None = None

    @property
    def match(self) -> bool:
        return (
            self.problem is None
            and self.source_digest == self.destination_digest
            and self.source_entries == self.destination_entries
        )


@dataclass
class DatasetGate:
    name: str
    kind: DatasetKind
    generation: int | None  # the latest committed generation at the destination
    last_sync: str | None  # when it was committed (ISO-8601 UTC)
    scan_seconds: float = 0.0
    shards: list[ShardGate] = field(default_factory=list)
    problem: str | None = None

    @property
    def ready(self) -> bool:
        return self.problem is None and all(s.match for s in self.shards)

    @property
    def mismatched(self) -> list[ShardGate]:
        return [s for s in self.shards if not s.match]


@dataclass
class FreezeEstimate:
    seconds: float | None  # None: no sync has been timed yet
    syncs_used: int
    per_gib_seconds: float  # fitted cost of a changed GiB in a sync (the largest of the datasets)
    fixed_seconds: float  # fitted cost of syncs that change nothing (the scans), all datasets
    method: str


@dataclass
class CutoverReport:
    plan: str
    datasets: list[DatasetGate]
    freeze: FreezeEstimate
    checked_at: str

    @property
    def ready(self) -> bool:
        return all(d.ready for d in self.datasets)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "ready": self.ready,
            "checked_at": self.checked_at,
            "freeze_estimate": asdict(self.freeze),
            "datasets": [
                {
                    "name": d.name,
                    "kind": str(d.kind),
                    "ready": d.ready,
                    "generation": d.generation,
                    "last_sync": d.last_sync,
                    "scan_seconds": round(d.scan_seconds, 3),
                    "problem": d.problem,
                    "shards_mismatched": len(d.mismatched),
                    "pending_upserts": _total(d, "pending_upserts"),
                    "pending_deletes": _total(d, "pending_deletes"),
                    "pending_bytes": _total(d, "pending_bytes"),
                    "shards": [{**asdict(s), "match": s.match} for s in d.shards],
                }
                for d in self.datasets
            ],
        }


def _total(d: DatasetGate, name: str) -> int | None:
    values = [getattr(s, name) for s in d.shards]
    return None if any(v is None for v in values) else sum(values)


@dataclass(eq=False)
class CutoverGate:
    plan: Plan
    store: ObjectStore
    provider: KeyProvider
    state: StateDB | None

    def check(self, only: set[str] | None = None) -> CutoverReport:
        gates = []
        for ds in self.plan.datasets:
            if only and ds.name not in only:
                continue
            gates.append(self._dataset(ds))
        return CutoverReport(
            self.plan.name,
            gates,
            self._freeze(gates),
            datetime.now(UTC).isoformat(timespec="seconds"),
        )

    # --- one dataset -------------------------------------------------------------------

    def _dataset(self, ds: DatasetPlan) -> DatasetGate:
        gate = DatasetGate(ds.name, ds.kind, None, None)
        nothing = "no committed generation at the destination: run the bulk copy first"
        try:
            key = load_keyring(self.store, self.provider, self.plan.name, ds.name)
            if self.state is not None:
                self.state.bind_dataset_key(ds.name, key.first)  # its inventories are sealed
            record = latest_record(self.store, self.plan.name, ds.name, key)
        except MissingObjectError:
            gate.problem = nothing  # not even a data key yet
            return gate
        except MigratorError as exc:
            gate.problem = f"cannot read the destination: {exc}"
            return gate
        if record is None:
            gate.problem = nothing
            return gate
        if len(record.shards) != ds.shards:
            gate.problem = f"the destination has {len(record.shards)} shards, the plan {ds.shards}"
            return gate
        gate.generation, gate.last_sync = record.generation, record.finished_at
        tag = object_tagger(key.first)  # the dataset's first key: shown digests outlive rotations

        def shown(digest: str) -> str:
            return tag(f"migrator/cutover/digest:{digest}").hex()

        started = time.monotonic()
        source = self._scan(ds)
        gate.scan_seconds = time.monotonic() - started
        for head in record.shards:
            src_digest, src_entries, current = source[head.shard]
            shard = ShardGate(
                head.shard, shown(to_hex(src_digest)), None, src_entries, 0, None, None, None
            )
            try:
                chain = head_chain(self.store, self.plan.name, ds.name, head, key)
            except FormatError as exc:
                shard.problem = f"{type(exc).__name__}: {exc}"
            except MigratorError as exc:
                shard.problem = str(exc)
            else:
                shard.destination_digest = shown(chain[-1].manifest.digest)
                if ds.kind is DatasetKind.RECORDS:
                    shard.destination_entries = live_records(chain)
                else:
                    manifests = [link.manifest for link in chain]
                    shard.destination_entries = len(
                        {
                            ref.name
                            for m, dead in zip(manifests, superseded(manifests), strict=True)
                            for ref in m.chunks
                            if ref.name not in dead
                        }
                    )
            self._lag(ds, record.generation, shard, current)
            gate.shards.append(shard)
        return gate

    def _scan(self, ds: DatasetPlan) -> dict[int, tuple[int, int, RecordsMap | ObjectsMap]]:
        """Per shard: (source digest, records or objects, its inventory)."""
        out: dict[int, tuple[int, int, RecordsMap | ObjectsMap]] = {}
        source = open_source(ds)
        if ds.kind is DatasetKind.OBJECTS:
            maps: list[ObjectsMap] = [{} for _ in range(ds.shards)]
            for obj in source.list():
                maps[shard_of(obj.name.encode(), ds.shards)][obj.name] = ObjectEntry(
                    obj.version, obj.size
                )
            for shard, objects in enumerate(maps):
                out[shard] = (objects_digest(objects), len(objects), objects)
            return out
        settings = ds.records
        folder = cutover_dir(self.plan.state_dir, ds.name)
        spec = RecordsSpec(
            ds.name,
            0,
            settings.format,
            settings.key,
            ds.shards,
            source,
            csv_delimiter=settings.csv_delimiter,
            on_bad_record=settings.on_bad_record,
            max_record_size=self.plan.max_record_size(ds),
        )
        try:
            processes, listing = self._processes(source)
            scan_digests(
                spec,
                folder,
                buffer_budget=self.plan.memory_budget // 4,
                processes=processes,
                listing=listing,
            )
            for shard in range(ds.shards):
                records = records_map_from_spool(digests_path(folder, shard).read_bytes())
                count = sum(e.records for e in records.values())
                out[shard] = (records_digest(records.values()), count, records)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return out

    def _processes(self, source: Source) -> tuple[int, list[SourceObject] | None]:
        """Worker processes for the scan, several once the source is worth their start-up, and
        the listing that sized it, for the scan to go over rather than list the source again
        (small beside the per-record inventories the gate holds). On too few cores there is
        nothing to decide: (1, None), and the scan lists the source itself."""
        if (os.cpu_count() or 1) < PARALLEL_ROUTING_MIN_CORES:
            return 1, None
        listing = list(source.list())
        total = sum(obj.size for obj in listing)
        return routing_processes(total, self.plan.workers or os.cpu_count() or 1), listing

    def _lag(
        self, ds: DatasetPlan, generation: int, shard: ShardGate, current: RecordsMap | ObjectsMap
    ) -> None:
        """What a sync would write now, against the inventory of the last committed one."""
        if self.state is None:
            return
        blob = self.state.shard_inventory(ds.name, shard.shard, generation + 1)
        if blob is None:
            return
        if ds.kind is DatasetKind.RECORDS:
            before_r = unpack_records_map(blob)
            now_r: RecordsMap = current  # type: ignore[assignment]
            changed = [
                e
                for kh, e in now_r.items()
                if (p := before_r.get(kh)) is None or p.digest != e.digest
            ]
            gone = [e for kh, e in before_r.items() if kh not in now_r]
            shard.pending_upserts = sum(e.records for e in changed)
            shard.pending_deletes = sum(e.records for e in gone)
            shard.pending_bytes = sum(e.nbytes for e in changed)
        else:
            before_o = unpack_objects_map(blob)
            now_o: ObjectsMap = current  # type: ignore[assignment]
            sent = [e for name, e in now_o.items() if before_o.get(name) != e]
            shard.pending_upserts = len(sent)
            shard.pending_deletes = sum(1 for name in before_o if name not in now_o)
            shard.pending_bytes = sum(e.size for e in sent)

    # --- the freeze --------------------------------------------------------------------

    def _freeze(self, gates: list[DatasetGate]) -> FreezeEstimate:
        """Final sync ≈ fixed cost + cost per changed GiB, fitted per dataset through its recent
        syncs and applied to its current lag, plus this gate's own scan: writes stay frozen
        through both. Datasets sync one after another, so their estimates add up."""
        total = sum(g.scan_seconds for g in gates)
        used = 0
        slopes: list[float] = []
        fixeds: list[float] = []
        fitted = True
        for gate in gates:
            rows = [] if self.state is None else self.state.generations(gate.name)
            synced = [g for g in rows if g.committed and g.kind is GenerationKind.SYNC]
            syncs = synced[-RECENT_SYNCS:]
            if not syncs:
                return FreezeEstimate(None, 0, 0.0, 0.0, f"{gate.name}: no sync timed yet")
            slope, fixed, ok = _fit(
                [g.changed_bytes / 2**30 for g in syncs], [g.seconds for g in syncs]
            )
            fitted = fitted and ok
            used += len(syncs)
            slopes.append(slope)
            fixeds.append(fixed)
            total += fixed + slope * (_total(gate, "pending_bytes") or 0) / 2**30
        method = (
            "per dataset, least squares of sync seconds on changed GiB over recent syncs"
            if fitted
            else "per dataset, mean of recent syncs where too few sizes differ to fit a slope"
        )
        return FreezeEstimate(
            round(total, 3), used, round(max(slopes, default=0.0), 3), round(sum(fixeds), 3), method
        )


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float, bool]:
    """(slope, intercept, fitted): a line through the points, or their mean if it can't be."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if n < 2 or var == 0:
        return 0.0, mean_y, False
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    slope = max(0.0, slope)
    return slope, max(0.0, mean_y - slope * mean_x), True
