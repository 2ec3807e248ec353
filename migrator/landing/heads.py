"""Which manifest of each shard landing brings its targets up to, and its authenticated chain.

The generation record is the archive's commit point, but a shard whose sync already stored its
manifest need not wait for the other shards: the state store names that manifest and its stored
digest, and the chain from it back to its base is authenticated link by link just the same
(read.chain.follow_chain). So a sync's shard runs land each shard as soon as it is written;
without a state store, the latest generation record decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from migrator.codec.generation import GenerationRecord
from migrator.codec.manifest import ShardManifest
from migrator.errors import UsageError
from migrator.keys.keyring import Keyring
from migrator.plan.model import DatasetKind, DatasetPlan
from migrator.read.chain import follow_chain, head_chain, live_objects
from migrator.repository.generations import latest_record
from migrator.state.db import StateDB
from migrator.state.model import ShardHeadRow
from migrator.stores.base import ObjectStore


@dataclass(eq=False)
class LandingHeads:
    store: ObjectStore
    plan_name: str
    ds: DatasetPlan
    key: Keyring
    record: GenerationRecord | None
    written: dict[int, ShardHeadRow] = field(default_factory=dict)  # newer than the record

    @classmethod
    def read(
        cls,
        store: ObjectStore,
        plan_name: str,
        ds: DatasetPlan,
        key: Keyring,
        state: StateDB | None,
    ) -> LandingHeads:
        record = latest_record(store, plan_name, ds.name, key)
        if record is not None and len(record.shards) != ds.shards:
            raise UsageError(
                f"dataset {ds.name}: generation {record.generation} has {len(record.shards)}"
                f" shards, the plan says {ds.shards}"
            )
        heads = cls(store, plan_name, ds, key, record)
        if state is not None:
            committed = {h.shard: h.head for h in record.shards} if record is not None else {}
            for shard, row in state.latest_heads(ds.name).items():
                if 0 <= shard < ds.shards and row.generation > committed.get(shard, 0):
                    heads.written[shard] = row
        return heads

    @property
    def generation(self) -> int:
        """The newest generation some shard lands to (0: nothing written yet)."""
        newest = self.record.generation if self.record is not None else 0
        return max([newest, *(row.generation for row in self.written.values())])

    def shards(self) -> list[int]:
        """The shards with something to land."""
        if self.record is not None:
            return list(range(self.ds.shards))
        return sorted(self.written)

    def chain(self, shard: int) -> list[ShardManifest]:
        """The shard's chain, base first, authenticated up to its head."""
        row = self.written.get(shard)
        if row is not None:
            links = follow_chain(
                self.store,
                self.plan_name,
                self.ds.name,
                shard,
                row.generation,
                self.key,
                row.manifest_xxh3,
            )
        elif self.record is not None:
            head = self.record.shards[shard]
            links = head_chain(self.store, self.plan_name, self.ds.name, head, self.key)
        else:
            return []
        return [link.manifest for link in links]


def live_count(ds: DatasetPlan, chain: list[ShardManifest]) -> int:
    """Live records (duplicates of a key each counted), or live objects, after the chain."""
    if ds.kind is DatasetKind.RECORDS:
        return sum(m.record_count - m.removed_records for m in chain)
    return live_objects(chain)
