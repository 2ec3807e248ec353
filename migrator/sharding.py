"""Stable shard routing: the same key lands in the same shard on every run and every machine."""

from __future__ import annotations

import xxhash


def shard_of(key: bytes, shards: int) -> int:
    """xxh3-64 of the key bytes mod N: fast, seedless and stable across releases."""
    return xxhash.xxh3_64_intdigest(key) % shards
