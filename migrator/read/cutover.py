"""`migrator cutover`: may the platform switch to the destination now?

Per shard it compares the source's order-independent digest with the destination's, taken from
the authenticated chain of manifests alone: no chunk is downloaded. The source side lists the
source once: objects by their listing; records from the routed digests the syncs kept of every
file unchanged since (source_digests.py), reading only the new and changed files, whose bytes
are what a final sync would read. The lag (what a sync would still write) is taken against the
state store's inventories; the write freeze is estimated from recent syncs and what changed
(cutover_freeze.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from migrator.codec.chunk import object_tagger
from migrator.codec.digests import (
    ObjectEntry,
    ObjectsMap,
    objects_digest,
    to_hex,
    unpack_objects_map,
)
from migrator.codec.generation import GenerationRecord
from migrator.errors import FormatError, MigratorError, MissingObjectError
from migrator.keys.keyring import Keyring, load_keyring
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.read.chain import head_chain, live_objects, live_records
from migrator.read.cutover_freeze import FreezeEstimate, estimate_freeze
from migrator.read.cutover_integrity import integrity_problems, open_sync_problem
from migrator.read.cutover_landing import landed_digest, landing_problem, landing_sides
from migrator.read.source_digests import records_source
from migrator.repository.generations import latest_record
from migrator.sharding import shard_of
from migrator.sizes import format_size
from migrator.sources.factory import open_source
from migrator.sources.listing import list_source_once
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore

if TYPE_CHECKING:
    from migrator.landing.targets import DatasetTargets

__all__ = ["CutoverGate", "CutoverReport", "DatasetGate", "FreezeEstimate", "ShardGate"]


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
    # A dataset with a landing: the landed copy's digest (shown as the others are), its
    # entries (the fewest any target holds) and what keeps it from matching the archive.
    landed_digest: str | None = None
    landed_entries: int | None = None
    landing_problem: str | None = None
    # The newest integrity check failed, or none passed on this head (cutover_integrity.py).
    integrity_problem: str | None = None

    @property
    def match(self) -> bool:
        return (
            self.problem is None
            and self.landing_problem is None
            and self.integrity_problem is None
            and self.source_digest == self.destination_digest
            and self.source_entries == self.destination_entries
        )


@dataclass
class DatasetGate:
    name: str
    kind: DatasetKind
    generation: int | None  # the latest committed generation at the destination
    last_sync: str | None  # when it was committed (ISO-8601 UTC)
    scan_seconds: float = 0.0  # the source side: listing, reused digests, reading
    shards: list[ShardGate] = field(default_factory=list)
    problem: str | None = None
    files_listed: int = 0  # files (objects) at the source
    files_reused: int = 0  # records: unchanged since the routed table, taken from its digests
    read_seconds: float = 0.0  # records: reading the new and changed files
    routed_table: int | None = None  # records: the generation whose file table was reused
    final_sync_files: int | None = None  # files (objects) a final sync would read now
    final_sync_bytes: int | None = None  # None: unknown (objects without a state store)

    @property
    def ready(self) -> bool:
        return self.problem is None and all(s.match for s in self.shards)

    @property
    def mismatched(self) -> list[ShardGate]:
        return [s for s in self.shards if not s.match]

    @property
    def pending_bytes(self) -> int | None:
        return _total(self, "pending_bytes")

    @property
    def summary(self) -> str:
        """The source side in a line: what it cost, and what a final sync would read."""
        unit = "files" if self.kind is DatasetKind.RECORDS else "objects"
        how = f"source checked in {self.scan_seconds:.1f} s ({self.files_listed:,} {unit}"
        if self.kind is DatasetKind.RECORDS:
            how += f", {self.files_reused:,} unchanged: routed digests reused"
        how += ")"
        if self.final_sync_files is None or self.final_sync_bytes is None:
            return f"{how}; final sync reads: unknown (no state)"
        n, size = self.final_sync_files, format_size(self.final_sync_bytes)
        return f"{how}; final sync reads {n:,} {unit[:-1] if n == 1 else unit}, {size}"


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
                    "read_seconds": round(d.read_seconds, 3),
                    "files_listed": d.files_listed,
                    "files_reused": d.files_reused,
                    "routed_table": d.routed_table,
                    "final_sync_files": d.final_sync_files,
                    "final_sync_bytes": d.final_sync_bytes,
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
    # False: read every source record (as before syncs kept routed digests), e.g. to compare
    reuse_routed: bool = True
    # Datasets with a `landing` are also compared with their landed copy (None: not checked).
    open_targets: Callable[[Plan, DatasetPlan], DatasetTargets] | None = None

    def check(self, only: set[str] | None = None) -> CutoverReport:
        gates = []
        for ds in self.plan.datasets:
            if only and ds.name not in only:
                continue
            gates.append(self._dataset(ds))
        return CutoverReport(
            self.plan.name,
            gates,
            estimate_freeze(gates, self.state),
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
        if ds.kind is DatasetKind.RECORDS:
            sides = self._records(ds, record, gate)
        else:
            sides = self._objects(ds, record, gate)
        gate.scan_seconds = time.monotonic() - started
        for head in record.shards:
            shard = sides[head.shard]
            shard.source_digest = shown(shard.source_digest)
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
                    shard.destination_entries = live_objects([link.manifest for link in chain])
            gate.shards.append(shard)
        if ds.landing is not None and self.open_targets is not None:
            self._landing(ds, key, record, gate, shown)
        if self.state is not None:  # without one, no check was recorded: never ready
            unchecked = integrity_problems(self.state, ds.name, record)
            for shard in gate.shards:
                shard.integrity_problem = unchecked.get(shard.shard)
            gate.problem = gate.problem or open_sync_problem(self.state, ds.name, record.generation)
        else:
            gate.problem = gate.problem or "no state store: no integrity check is on record"
        return gate

    def _landing(
        self,
        ds: DatasetPlan,
        key: Keyring,
        record: GenerationRecord,
        gate: DatasetGate,
        shown: Callable[[str], str],
    ) -> None:
        assert self.open_targets is not None
        sides = landing_sides(self.plan, self.store, ds, key, record, self.open_targets)
        if isinstance(sides, str):
            gate.problem = sides
            return
        for shard in gate.shards:
            landed = sides.get(shard.shard, [])
            shard.landed_digest = shown(landed_digest(landed))
            shard.landed_entries = min((s.count for s in landed), default=0)
            shard.landing_problem = landing_problem(landed)

    def _records(
        self, ds: DatasetPlan, record: GenerationRecord, gate: DatasetGate
    ) -> dict[int, ShardGate]:
        """Per shard the source's side (digest in hex, not yet shown) and its lag."""
        found = records_source(
            self.plan,
            ds,
            open_source(ds),
            self.state,
            record.shards,
            record.generation,
            reuse=self.reuse_routed,
        )
        gate.files_listed, gate.files_reused = found.files, found.reused
        gate.read_seconds, gate.routed_table = found.read_seconds, found.table
        gate.final_sync_files, gate.final_sync_bytes = found.read, found.read_bytes
        out = {}
        for shard, (total, lag) in enumerate(zip(found.shards, found.lags, strict=True)):
            out[shard] = ShardGate(
                shard,
                to_hex(total.digest),
                None,
                total.records,
                0,
                None if lag is None else lag.upserts,
                None if lag is None else lag.deletes,
                None if lag is None else lag.nbytes,
            )
        return out

    def _objects(
        self, ds: DatasetPlan, record: GenerationRecord, gate: DatasetGate
    ) -> dict[int, ShardGate]:
        """Per shard the source's side, from one listing, and what a sync would still send
        against the inventory of the last committed generation."""
        maps: list[ObjectsMap] = [{} for _ in range(ds.shards)]
        listing = list_source_once(open_source(ds))
        for obj in listing:
            maps[shard_of(obj.name.encode(), ds.shards)][obj.name] = ObjectEntry(
                obj.version, obj.size
            )
        gate.files_listed = len(listing)
        out = {}
        for shard, now in enumerate(maps):
            side = ShardGate(
                shard, to_hex(objects_digest(now)), None, len(now), 0, None, None, None
            )
            blob = (
                None
                if self.state is None
                else self.state.shard_inventory(ds.name, shard, record.generation + 1)
            )
            if blob is not None:
                before = unpack_objects_map(blob)
                sent = [e for name, e in now.items() if before.get(name) != e]
                side.pending_upserts = len(sent)
                side.pending_deletes = sum(1 for name in before if name not in now)
                side.pending_bytes = sum(e.size for e in sent)
            out[shard] = side
        if all(s.pending_upserts is not None for s in out.values()):
            gate.final_sync_files = sum(s.pending_upserts or 0 for s in out.values())
            gate.final_sync_bytes = sum(s.pending_bytes or 0 for s in out.values())
        return out
