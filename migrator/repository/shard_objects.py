"""The objects under a shard's folder at the destination: store a chunk whole, list them,
read one's stored bytes, delete them.

The chunk writer (write/upload.py) decides between one put and a journaled multipart upload;
manifests are stored by manifests.py. What removes objects again (a run dropping stale parts,
compaction sweeping replaced generations) and what must look at them as stored goes through
here.
"""

from __future__ import annotations

from collections.abc import Iterable

from migrator.repository.names import shard_prefix
from migrator.stores.base import Buffer, ObjectInfo, ObjectStore


def put_chunk(
    store: ObjectStore, object_key: str, sealed: Buffer, metadata: dict[str, str]
) -> None:
    """Store a sealed chunk in one request; write/upload.py sends larger ones in parts."""
    store.put(object_key, sealed, metadata)


def list_shard_objects(
    store: ObjectStore, dataset: str, generation: int, shard: int
) -> list[ObjectInfo]:
    """Every object one shard of one generation left at the destination: chunks, its manifest,
    and anything else found under its prefix."""
    return list(store.list(shard_prefix(dataset, generation, shard)))


def read_stored(store: ObjectStore, object_key: str) -> bytes:
    """An object's bytes as stored (sealed): what the ledger digests when it records one."""
    return store.get(object_key)


def delete_objects(store: ObjectStore, object_keys: Iterable[str]) -> int:
    """Delete the objects one by one, in order; how many were deleted."""
    deleted = 0
    for okey in object_keys:
        store.delete(okey)
        deleted += 1
    return deleted
