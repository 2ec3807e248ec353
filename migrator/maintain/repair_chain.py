"""What re-sealing a chunk changes above it: its manifest, the chain after it, the records.

A chunk sealed again (fresh salt) has new stored bytes, so the manifest listing it pins other
bytes (`stored_xxh3`): it is sealed again with the new entry. Every later manifest of the chain
names the one before it by the digest of its stored bytes (`previous_xxh3`), and each
generation record names a shard's head manifest (`head_xxh3`) and the record before it
(`previous_xxh3`): those are sealed again too, each under the key that sealed it, each with
only those fields changed. Nothing here is stored; the caller journals and stores it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import xxhash

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.generation import open_record, seal_record
from migrator.codec.manifest import ChunkRef, ShardManifest, seal_manifest
from migrator.keys.keyring import Keyring, key_for
from migrator.maintain.repair_source import Unrepairable
from migrator.repository.generations import get_record_bytes, record_generations
from migrator.repository.manifests import StoredManifest
from migrator.repository.names import generation_key
from migrator.repository.shard_objects import read_stored
from migrator.stores.base import ObjectStore


@dataclass(frozen=True, slots=True)
class SealedObject:
    """A manifest or generation record sealed again, to store at `object_key`."""

    object_key: str
    data: bytes
    kind: str  # "manifest" | "generation"

    @property
    def xxh3(self) -> str:
        return xxhash.xxh3_128_hexdigest(self.data)


@dataclass
class Resealed:
    objects: list[SealedObject] = field(default_factory=list)  # manifests first, then records
    manifests: dict[tuple[int, int], str] = field(default_factory=dict)  # (gen, shard) -> xxh3
    records: dict[int, str] = field(default_factory=dict)  # generation -> xxh3


def reseal(
    store: ObjectStore,
    keyring: Keyring,
    encoder: ChunkEncoder,
    chain: Sequence[StoredManifest],
    fixed: Mapping[str, ChunkRef],
) -> Resealed:
    """Manifests from the first that lists a `fixed` chunk (object key -> its new entry) to
    the head, then every generation record from that generation on."""
    out = Resealed()
    first = next(
        (
            i
            for i, link in enumerate(chain)
            if any(r.object_key in fixed for r in link.manifest.chunks)
        ),
        None,
    )
    if first is None:
        return out
    previous_xxh3: str | None = None
    for link in chain[first:]:
        m = link.manifest
        chunks = tuple(fixed.get(r.object_key, r) for r in m.chunks)
        changed = dataclasses.replace(
            m, chunks=chunks, stored_bytes=sum(r.stored_size for r in chunks)
        )
        if previous_xxh3 is not None:
            changed = dataclasses.replace(changed, previous_xxh3=previous_xxh3)
        sealed = SealedObject(
            link.object_key, _seal_manifest(store, keyring, encoder, link, changed), "manifest"
        )
        out.objects.append(sealed)
        out.manifests[(m.generation, m.shard)] = previous_xxh3 = sealed.xxh3
    _records(store, keyring, encoder, chain[first].manifest, out)
    return out


def _seal_manifest(
    store: ObjectStore,
    keyring: Keyring,
    encoder: ChunkEncoder,
    link: StoredManifest,
    manifest: ShardManifest,
) -> bytes:
    """Sealed under the key that sealed the stored one (its header names it)."""
    stored = read_stored(store, link.object_key)
    if xxhash.xxh3_128_hexdigest(stored) != link.stored_xxh3:
        raise Unrepairable(f"manifest {link.object_key} changed while the repair read it")
    return seal_manifest(manifest, key_for(keyring, stored, link.object_key), encoder)


def _records(
    store: ObjectStore,
    keyring: Keyring,
    encoder: ChunkEncoder,
    first: ShardManifest,
    out: Resealed,
) -> None:
    dataset, shard, plan = first.dataset, first.shard, first.plan
    new_heads = {gen: xxh3 for (gen, s), xxh3 in out.manifests.items() if s == shard}
    for gen in record_generations(store, dataset):
        if gen < first.generation:
            continue
        okey = generation_key(dataset, gen)
        data = get_record_bytes(store, dataset, gen)
        key = key_for(keyring, data, okey)
        record = open_record(
            data, plan=plan, dataset=dataset, generation=gen, key=key, object_key=okey
        )
        heads = list(record.shards)
        if shard < len(heads):
            head = heads[shard]
            if head.head in new_heads:
                heads[shard] = dataclasses.replace(head, head_xxh3=new_heads[head.head])
            elif any(g in new_heads for g in head.chain):
                raise Unrepairable(
                    f"generation record {gen} names a chain of shard {shard} ending at"
                    f" generation {head.head}, which the repair does not seal again (a"
                    " compaction left it): the chain cannot be kept whole"
                )
        changed = dataclasses.replace(record, shards=tuple(heads))
        if record.previous in out.records:
            changed = dataclasses.replace(changed, previous_xxh3=out.records[record.previous])
        if changed == record:
            continue
        sealed = SealedObject(okey, seal_record(changed, key, encoder), "generation")
        out.objects.append(sealed)
        out.records[gen] = sealed.xxh3
