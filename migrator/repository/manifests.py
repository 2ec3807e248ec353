"""Shard manifests at the destination: store and open them."""

from __future__ import annotations

from dataclasses import dataclass

import xxhash

from migrator.codec.manifest import ShardManifest, open_manifest
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, key_for
from migrator.repository.names import manifest_key
from migrator.stores.base import ObjectStore


@dataclass(frozen=True, slots=True)
class StoredManifest:
    manifest: ShardManifest
    object_key: str
    stored_xxh3: str  # xxh3-128 of the stored bytes: what the next manifest links to


def put_manifest(
    store: ObjectStore, dataset: str, generation: int, shard: int, sealed: bytes
) -> str:
    """Store a sealed manifest: the shard's commit point in its generation. Returns its key."""
    mkey = manifest_key(dataset, generation, shard)
    store.put(mkey, sealed, {"migrator-kind": "manifest"})
    return mkey


def load_manifest(
    store: ObjectStore, plan: str, dataset: str, generation: int, shard: int, key: DataKey | Keyring
) -> StoredManifest:
    mkey = manifest_key(dataset, generation, shard)
    data = store.get(mkey)
    manifest = open_manifest(
        data,
        plan=plan,
        dataset=dataset,
        generation=generation,
        shard=shard,
        key=key_for(key, data, mkey),
        object_key=mkey,
    )
    return StoredManifest(manifest, mkey, xxhash.xxh3_128_hexdigest(data))
