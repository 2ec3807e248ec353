"""Audit-ledger segments at the destination (docs/FORMAT.md §11): store, list and read them.

Segments are listed by the keys found, not the keys expected, so a reader sees what is really
there: a segment missing from the sequence, or an object under the ledger that is no segment.
"""

from __future__ import annotations

from migrator.codec.ledger import LedgerSegment, open_segment
from migrator.keys.signing import SignatureVerifier
from migrator.repository.names import (
    ledger_prefix,
    ledger_shard_of_key,
    segment_key,
    segment_of_key,
)
from migrator.repository.sealed import put_sealed
from migrator.state.model import LedgerHead
from migrator.stores.base import ObjectStore


def put_segment(store: ObjectStore, dataset: str, shard: int, segment: int, sealed: bytes) -> str:
    """Store a sealed segment under its number (a retry overwrites the same one). Returns its
    object key."""
    return put_sealed(store, segment_key(dataset, shard, segment), sealed, "audit-ledger")


def list_segments(
    store: ObjectStore, dataset: str
) -> tuple[dict[int, list[tuple[int, str]]], list[str]]:
    """Each shard's ledger segments as (number, object key) in number order, and the keys
    under the dataset's ledger prefix that are no segment."""
    prefix = ledger_prefix(dataset)
    shards: dict[int, list[tuple[int, str]]] = {}
    strays: list[str] = []
    for info in store.list(prefix):
        shard = ledger_shard_of_key(info.key, dataset)
        number = segment_of_key(info.key, dataset, shard) if shard is not None else None
        if shard is None or number is None:
            strays.append(info.key)
            continue
        shards.setdefault(shard, []).append((number, info.key))
    for segments in shards.values():
        segments.sort()
    return shards, strays


def shard_segments(store: ObjectStore, dataset: str, shard: int) -> list[tuple[int, str]]:
    """One shard's segments as (number, object key), in listing order."""
    found = []
    for info in store.list(ledger_prefix(dataset, shard)):
        number = segment_of_key(info.key, dataset, shard)
        if number is not None:
            found.append((number, info.key))
    return found


def read_segment(store: ObjectStore, object_key: str) -> bytes:
    """A listed segment's stored bytes, unopened (an audit reports what is wrong with them)."""
    return store.get(object_key)


def open_stored_segment(
    store: ObjectStore,
    object_key: str,
    *,
    plan: str,
    dataset: str,
    shard: int,
    segment: int,
    verifier: SignatureVerifier,
) -> LedgerSegment:
    """A listed segment, authenticated: a forged or damaged one is the FormatError that says
    so."""
    return open_segment(
        store.get(object_key),
        plan=plan,
        dataset=dataset,
        shard=shard,
        segment=segment,
        verifier=verifier,
        object_key=object_key,
    )


def ledger_ends(
    store: ObjectStore,
    plan: str,
    dataset: str,
    segments: dict[int, list[tuple[int, str]]],
    verifier: SignatureVerifier,
) -> list[LedgerHead]:
    """Where each shard's stored ledger ends, from its last segment (authenticated). For a
    state store rebuilt from the destination, so the next writer continues each ledger
    instead of starting it again."""
    heads = []
    for shard, numbered in sorted(segments.items()):
        number, key = numbered[-1]
        seg = open_stored_segment(
            store, key, plan=plan, dataset=dataset, shard=shard, segment=number, verifier=verifier
        )
        heads.append(LedgerHead(dataset, shard, number, seg.first_index + seg.count, seg.head_link))
    return heads
