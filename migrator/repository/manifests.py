"""Shard manifests at the destination: store and open them."""

from __future__ import annotations

from dataclasses import dataclass

from migrator.codec.manifest import ShardManifest, open_manifest
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring
from migrator.repository.names import manifest_key
from migrator.repository.sealed import open_stored, put_sealed
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
    return put_sealed(store, manifest_key(dataset, generation, shard), sealed, "manifest")


def load_manifest(
    store: ObjectStore, plan: str, dataset: str, generation: int, shard: int, key: DataKey | Keyring
) -> StoredManifest:
    mkey = manifest_key(dataset, generation, shard)

    def opened(data: bytes, data_key: DataKey) -> ShardManifest:
        return open_manifest(
            data,
            plan=plan,
            dataset=dataset,
            generation=generation,
            shard=shard,
            key=data_key,
            object_key=mkey,
        )

    manifest, stored_xxh3 = open_stored(store, mkey, key, opened)
    return StoredManifest(manifest, mkey, stored_xxh3)
