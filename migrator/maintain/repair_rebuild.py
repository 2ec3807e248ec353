"""A shard's damaged chunks rebuilt from the source (repair_source.py), in chain order, so a
delta's rebuilding reads the chunks before it as repaired."""

from __future__ import annotations

from migrator.codec.generation import GenerationKind
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import FormatError, SourceError
from migrator.keys.keyring import Keyring
from migrator.maintain.repair_lines import REFUSED_HINT, REFUSED_PART_HINT, Damaged
from migrator.maintain.repair_source import (
    RoutedShard,
    SourceObjects,
    Unrepairable,
    records_chunk,
    route_shard,
)
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.repository.chunks import read_chunk
from migrator.sources.factory import open_source
from migrator.stores.base import ObjectStore


class NeedsOther(Unrepairable):
    """Rebuilding the chunk reads another damaged chunk of the shard: once that one is
    rebuilt, this one may be."""


class ShardRebuilder:
    """Plaintexts of a shard's damaged chunks from the source, each source read at most once."""

    def __init__(
        self,
        plan: Plan,
        store: ObjectStore,
        ds: DatasetPlan,
        keyring: Keyring,
        chain: list[ShardManifest],
        kinds: dict[int, GenerationKind],
        shard: int,
    ) -> None:
        self.plan, self.store, self.ds = plan, store, ds
        self.keyring, self.chain = keyring, chain
        self.kinds, self.shard = kinds, shard
        self.source = open_source(ds)
        is_objects = ds.kind is DatasetKind.OBJECTS
        self.hint = REFUSED_PART_HINT if is_objects else REFUSED_HINT  # what to do if refused
        self.rebuilt: dict[str, bytes] = {}  # object key -> plaintext, for later deltas
        self._routed: RoutedShard | None = None
        self._objects = SourceObjects(plan, ds, self.source)

    def plaintext(self, d: Damaged) -> bytes:
        m = d.link.manifest
        try:
            if self.ds.kind is DatasetKind.OBJECTS:
                plain = self._objects.part(m, d.ref)
            else:
                plain = self._records(d)
        except SourceError as exc:
            raise Unrepairable(f"the source cannot be read again: {exc}") from exc
        self.rebuilt[d.ref.object_key] = plain
        return plain

    def _records(self, d: Damaged) -> bytes:
        m = d.link.manifest
        if m.records_layout is None:
            raise Unrepairable(
                f"generation {m.generation}'s manifest was written by an earlier version"
                " (manifest version 2): repair re-seals only version-3 manifests"
            )
        if m.is_base and self.kinds.get(m.generation) is GenerationKind.COMPACT:
            raise Unrepairable(
                f"generation {m.generation} is a compaction: its records were re-sealed from"
                " older generations in their order, not routed from the source, so the source"
                " cannot give this chunk back"
            )
        if self._routed is None:
            self._routed = route_shard(self.plan, self.ds, self.source, self.shard)
        return records_chunk(self.ds, self._routed, self.chain, d.index, d.ref, self._read)

    def _read(self, manifest: ShardManifest, ref: ChunkRef) -> bytes:
        if ref.object_key in self.rebuilt:
            return self.rebuilt[ref.object_key]
        try:
            return read_chunk(self.store, manifest, ref, self.keyring)
        except FormatError as exc:
            raise NeedsOther(
                f"another chunk of the shard, {ref.object_key}, is damaged too and could not"
                f" be rebuilt ({type(exc).__name__})"
            ) from exc
