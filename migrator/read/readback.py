"""Reading stored chunks back: fetch, check the stored digest, decrypt, check the plaintext digest.

Shared by verify and restore so both apply exactly the same checks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import xxhash

from migrator.codec.chunk import decode_chunk
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import TamperedError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, key_for
from migrator.stores.base import ObjectStore

T = TypeVar("T")
R = TypeVar("R")


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


def ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[R]:
    """fn over items on the pool, results in input order, at most `window` in flight."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
