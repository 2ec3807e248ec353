"""Sealed documents at the destination (generation records, manifests): stored under a kind,
read back and opened with the key that sealed them, with the digest of what was stored.

Every such document is fetched, its key picked, opened and its stored bytes hashed the same
way; one place does it, so the digest a chain links to is always of the bytes opened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import xxhash

from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, key_for
from migrator.stores.base import ObjectStore

T = TypeVar("T")


def put_sealed(store: ObjectStore, object_key: str, sealed: bytes, kind: str) -> str:
    """Store sealed bytes, tagged with what kind of object they are. Returns the object key."""
    store.put(object_key, sealed, {"migrator-kind": kind})
    return object_key


def open_stored(
    store: ObjectStore,
    object_key: str,
    key: DataKey | Keyring,
    opener: Callable[[bytes, DataKey], T],
) -> tuple[T, str]:
    """The document stored at `object_key`, opened by `opener(data, data key)`, and the
    xxh3-128 of its stored bytes."""
    data = store.get(object_key)
    return opener(data, key_for(key, data, object_key)), xxhash.xxh3_128_hexdigest(data)
