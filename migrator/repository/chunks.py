"""Data chunks at the destination, as readers find them: read back and checked against the
manifest that lists them, looked at by HEAD alone, or listed across the dataset's shards.

Verify, restore, compaction and a state rebuild read chunks through here, so all of them apply
exactly the same checks. (The write path stores chunks in write/upload.py; shard_objects.py
lists and deletes what lies under one shard's folder.)
"""

from __future__ import annotations

from collections.abc import Iterator

import xxhash

from migrator.codec.chunk import decode_chunk
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import (
    MigratorError,
    MissingObjectError,
    TamperedError,
    TruncatedError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, key_for
from migrator.repository.names import (
    ShardObject,
    data_objects_prefix,
    parse_shard_object,
)
from migrator.stores.base import ObjectInfo, ObjectStore


def chunk_identity(manifest: ShardManifest, ref: ChunkRef) -> ChunkIdentity:
    """Where the manifest says this chunk belongs: decryption fails if it was moved."""
    if ref.name_tag is not None:
        return ChunkIdentity(
            ChunkKind.OBJECT_PART,
            manifest.plan,
            manifest.dataset,
            manifest.generation,
            manifest.shard,
            ref.sequence,
            bytes.fromhex(ref.name_tag),
        )
    return ChunkIdentity(
        ChunkKind.RECORDS,
        manifest.plan,
        manifest.dataset,
        manifest.generation,
        manifest.shard,
        ref.sequence,
    )


def read_chunk(
    store: ObjectStore, manifest: ShardManifest, ref: ChunkRef, key: DataKey | Keyring
) -> bytes:
    """The chunk's plaintext, or the FormatError that says what is wrong with it. With a
    keyring, the chunk is opened with the data key its header names."""
    data = store.get(ref.object_key)
    # Decrypt first: its errors say what happened (moved, wrong key, tampered, truncated).
    plain = decode_chunk(
        data,
        chunk_identity(manifest, ref),
        key_for(key, data, ref.object_key),
        object_key=ref.object_key,
        expected_plain_xxh3=bytes.fromhex(ref.plain_xxh3),
        expected_plain_size=ref.plain_size,
    )
    # A valid chunk that is not the one the manifest recorded: a stale or replayed copy.
    if xxhash.xxh3_128_hexdigest(data) != ref.stored_xxh3:
        raise TamperedError(
            "stored object is not the one its manifest recorded (stale or replayed copy)",
            object_key=ref.object_key,
        )
    return plain


def check_by_head(store: ObjectStore, ref: ChunkRef, key: Keyring) -> MigratorError | None:
    """What a HEAD of the chunk shows wrong, or None: presence, size, and the digest and key id
    recorded in its metadata (which anyone who can write the destination can set: a quick
    check, not a proof)."""
    info = store.head(ref.object_key)
    if info is None:
        return MissingObjectError("listed in the manifest but absent", object_key=ref.object_key)
    if info.size < ref.stored_size:
        return TruncatedError(
            f"stored object is {info.size} bytes, manifest says {ref.stored_size}",
            object_key=ref.object_key,
        )
    recorded = info.metadata.get("migrator-stored-xxh3")
    if recorded is None:
        return TamperedError(
            "object lacks the metadata it was stored with (rewritten by something else?)",
            object_key=ref.object_key,
        )
    if info.size > ref.stored_size or recorded != ref.stored_xxh3:
        return TamperedError(
            "stored object's size or recorded digest differs from its manifest",
            object_key=ref.object_key,
        )
    key_id = info.metadata.get("migrator-key-id")
    if key_id is not None and key_id not in key.key_ids:
        return WrongKeyError(
            "object's metadata names a data key not in the dataset's keyring",
            object_key=ref.object_key,
        )
    return None


def stored_data_objects(
    store: ObjectStore, dataset: str
) -> Iterator[tuple[ShardObject, ObjectInfo]]:
    """Every object under some generation's shard folder of the dataset, taken apart; keys
    outside every shard folder are left out (they are not data)."""
    for info in store.list(data_objects_prefix(dataset)):
        parsed = parse_shard_object(dataset, info.key)
        if parsed is not None:
            yield parsed, info
