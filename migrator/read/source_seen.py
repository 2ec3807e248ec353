"""Whether a source still lists as the latest committed generation of its dataset read it.

A source sensor turned on after a bulk copy or a sync has no cursor yet: taken as it is, its
first listing counts as a change and starts a sync that finds nothing; taken as the starting
point, it would hide a change made before the sensor was on. So the first listing is compared
with what the state store keeps of the latest committed generation, at the cost of that one
listing, a keyring read and a query or two, whatever the number of shards or generations:

- records: the listing digest the routing checkpoint keeps (xxh3-128 over each file's name,
  size and version, in listing order, as listing.listing_digest computes it) of the last
  committed generation that routed;
- objects: each shard's digest as of that generation (the sum of its objects' xxh3-128 over
  name, size and version, codec.digests.objects_digest), from its newest manifest's row.

Both are sealed under the dataset's key. Whatever cannot be compared (no routing checkpoint, a
shard without a manifest, a state store rebuilt from the destination, which keeps no listing
digest) counts as changed: at worst one sync that finds nothing, never a change missed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import xxhash

from migrator.codec.digests import MOD, object_digest, to_hex
from migrator.keys.keyring import load_keyring
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetKind, DatasetPlan
from migrator.sharding import shard_of
from migrator.sources.base import SourceObject
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore
from migrator.write.listing import last_routed_generation


@dataclass(frozen=True, slots=True)
class ListingDigests:
    """One pass over a listing: the sensor's cursor, and what compares with a generation."""

    cursor: str  # sha256 over each object's name, size and version, in listing order
    listing: str  # records: the routing checkpoint's digest of the same listing
    shards: tuple[int, ...]  # objects: each shard's digest; () for records
    files: int


@dataclass(frozen=True, slots=True)
class GenerationSeen:
    """The source as the latest committed generation read it, as the state store keeps it."""

    generation: int
    kind: DatasetKind
    listing: str | None  # records: the last routing's listing digest; None: not known
    shards: dict[int, str]  # objects: each shard's digest (hex) as of `generation`


def listing_line(obj: SourceObject) -> bytes:
    """An object as both listing digests take it (listing.listing_digest too)."""
    return f"{obj.name}\0{obj.size}\0{obj.version}\n".encode()


def cursor_digest(listing: Iterable[SourceObject]) -> str:
    """sha256 of a listing: the sensor's cursor and the start of its run keys."""
    digest = hashlib.sha256()
    for obj in listing:
        digest.update(listing_line(obj))
    return digest.hexdigest()


def digest_listing(listing: Iterable[SourceObject], ds: DatasetPlan) -> ListingDigests:
    """The cursor and the dataset's comparable digest, in one pass over the listing."""
    cursor, listed = hashlib.sha256(), xxhash.xxh3_128()
    objects = ds.kind is DatasetKind.OBJECTS
    sums = [0] * ds.shards if objects else []
    files = 0
    for obj in listing:
        line = listing_line(obj)
        cursor.update(line)
        listed.update(line)
        if objects:
            sums[shard_of(obj.name.encode(), ds.shards)] += object_digest(
                obj.name, obj.size, obj.version
            )
        files += 1
    return ListingDigests(
        cursor.hexdigest(), listed.hexdigest(), tuple(s % MOD for s in sums), files
    )


def what_changed(seen: GenerationSeen, now: ListingDigests) -> str | None:
    """None when the listing is the one generation `seen` read, else how it differs."""
    gen = seen.generation
    if seen.kind is DatasetKind.RECORDS:
        if seen.listing is None:
            return f"the listing generation {gen} routed is not known"
        if seen.listing != now.listing:
            return f"the listing differs from generation {gen}'s"
        return None
    differ = [s for s, d in enumerate(now.shards) if seen.shards.get(s) != to_hex(d)]
    if not differ:
        return None
    return f"{len(differ)} of {len(now.shards)} shards list other objects than generation {gen}"


def committed_generation(state: StateDB | None, dataset: str) -> int | None:
    """The latest committed generation of `dataset`, None before any (or without a store)."""
    if state is None:
        return None
    done = [row.generation for row in state.generations(dataset) if row.committed]
    return done[-1] if done else None


def generation_seen(state: StateDB, ds: DatasetPlan) -> GenerationSeen | None:
    """What the latest committed generation read (None before any); the dataset's key must be
    bound (state.bind_dataset_key)."""
    latest = committed_generation(state, ds.name)
    if latest is None:
        return None
    if ds.kind is DatasetKind.RECORDS:
        routed = last_routed_generation(state, ds.name)
        checkpoint = None if routed is None else state.route_checkpoint(ds.name, routed)
        # A state rebuilt from the destination keeps the CSV header, not the listing digest.
        listing = checkpoint.inventory_digest if checkpoint is not None else ""
        return GenerationSeen(latest, ds.kind, listing or None, {})
    return GenerationSeen(latest, ds.kind, None, state.head_digests(ds.name, latest))


def last_generation_seen(
    state: StateDB, store: ObjectStore, keys: KeyProvider, plan: str, ds: DatasetPlan
) -> GenerationSeen | None:
    """generation_seen, the dataset's key read from the destination and bound first (not
    read at all before any committed generation)."""
    if committed_generation(state, ds.name) is None:
        return None
    keyring = load_keyring(store, keys, plan, ds.name)
    state.bind_dataset_key(ds.name, keyring.first)
    return generation_seen(state, ds)
