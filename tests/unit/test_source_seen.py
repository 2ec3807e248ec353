"""A listing compared with what the latest committed generation read (migrator.read.source_seen):
the digests are the ones a sync keeps, a change of any kind shows, and whatever the state store
cannot tell counts as a change; each shard's digest as of a generation comes in one query."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.codec.digests import ObjectEntry, objects_digest, to_hex
from migrator.codec.generation import GenerationKind
from migrator.keys.datakey import DataKey
from migrator.plan.model import DatasetKind, DatasetPlan, LocalSourcePlan, StoreKind
from migrator.read.source_seen import (
    GenerationSeen,
    committed_generation,
    cursor_digest,
    digest_listing,
    generation_seen,
    what_changed,
)
from migrator.sharding import shard_of
from migrator.sources.base import SourceObject
from migrator.state.db import StateDB
from migrator.state.model import RouteCheckpoint
from migrator.write.listing import listing_digest

SOURCE = LocalSourcePlan(kind=StoreKind.LOCAL, path=Path("data"))
VIDEOS = DatasetPlan(name="videos", kind=DatasetKind.OBJECTS, source=SOURCE, shards=4)
PROFILES = DatasetPlan(
    name="profiles", kind=DatasetKind.RECORDS, source=SOURCE, shards=4, format="jsonl", key="id"
)
LISTING = [SourceObject(f"v{i:02d}.mp4", 1000 + i, f"mtime-{i}") for i in range(12)]
KEY = DataKey(bytes(range(32)))


def seen_objects(listing: list[SourceObject], generation: int = 3) -> GenerationSeen:
    """What a sync that read `listing` keeps: each shard's objects digest."""
    maps: list[dict[str, ObjectEntry]] = [{} for _ in range(VIDEOS.shards)]
    for obj in listing:
        maps[shard_of(obj.name.encode(), VIDEOS.shards)][obj.name] = ObjectEntry(
            obj.version, obj.size
        )
    shards = {s: to_hex(objects_digest(m)) for s, m in enumerate(maps)}
    return GenerationSeen(generation, DatasetKind.OBJECTS, None, shards)


def changes() -> dict[str, list[SourceObject]]:
    def edited(name: str, size: int, version: str) -> list[SourceObject]:
        return [SourceObject(name, size, version) if o.name == name else o for o in LISTING]

    new = [*LISTING, SourceObject("v99.mp4", 5, "mtime-99")]
    changed = edited("v03.mp4", LISTING[3].size, "touched")
    resized = edited("v04.mp4", LISTING[4].size + 1, LISTING[4].version)
    removed = [o for o in LISTING if o.name != "v05.mp4"]
    return {"new": new, "changed": changed, "resized": resized, "removed": removed}


def test_the_digests_are_those_a_sync_keeps() -> None:
    records = digest_listing(iter(LISTING), PROFILES)
    assert records.listing == listing_digest(LISTING)  # as the routing checkpoint keeps it
    assert records.cursor == cursor_digest(LISTING) and records.shards == ()
    assert records.files == len(LISTING)
    objects = digest_listing(iter(LISTING), VIDEOS)
    assert [to_hex(d) for d in objects.shards] == list(seen_objects(LISTING).shards.values())
    assert objects.cursor == records.cursor  # the cursor does not depend on the kind


def test_an_unchanged_listing_matches_and_any_change_shows() -> None:
    objects_then = seen_objects(LISTING)
    records_then = GenerationSeen(3, DatasetKind.RECORDS, listing_digest(LISTING), {})
    assert what_changed(objects_then, digest_listing(LISTING, VIDEOS)) is None
    assert what_changed(records_then, digest_listing(LISTING, PROFILES)) is None
    for kind, listing in changes().items():
        objects = what_changed(objects_then, digest_listing(listing, VIDEOS))
        assert objects == "1 of 4 shards list other objects than generation 3", kind
        records = what_changed(records_then, digest_listing(listing, PROFILES))
        assert records == "the listing differs from generation 3's", kind


def test_what_the_state_store_cannot_tell_counts_as_a_change() -> None:
    now = digest_listing(LISTING, VIDEOS)
    full = seen_objects(LISTING)
    missing = dict(full.shards)
    del missing[2]  # a shard without a manifest
    partial = GenerationSeen(3, DatasetKind.OBJECTS, None, missing)
    assert what_changed(partial, now) == "1 of 4 shards list other objects than generation 3"
    rebuilt = GenerationSeen(3, DatasetKind.RECORDS, None, {})  # no listing digest kept
    assert what_changed(rebuilt, digest_listing(LISTING, PROFILES)) is not None
    empty = seen_objects([])
    assert what_changed(empty, digest_listing([], VIDEOS)) is None  # an empty source stays so


def complete(state: StateDB, generation: int, shard: int, digest: str | None) -> None:
    """Shard `shard` complete in `generation`: with a manifest and `digest`, or untouched."""
    manifest = None if digest is None else f"m/g{generation}/s{shard}"
    state.complete_shard("videos", generation, shard, manifest_key=manifest, digest=digest)


def test_each_shards_digest_as_of_a_generation(tmp_path: Path) -> None:
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        state.bind_dataset_key("videos", KEY)
        assert committed_generation(state, "videos") is None
        assert generation_seen(state, VIDEOS) is None  # before any generation
        for gen in (1, 2, 3):
            kind = GenerationKind.BULK if gen == 1 else GenerationKind.SYNC
            state.open_generation("videos", gen, kind)
        for shard in range(4):
            complete(state, 1, shard, f"{shard:032x}")
        complete(state, 2, 0, None)  # untouched in generation 2: its digest is generation 1's
        complete(state, 2, 1, "b" * 32)
        complete(state, 3, 2, "c" * 32)  # generation 3 is not committed
        for gen in (1, 2):
            state.commit_generation(
                "videos", gen, changed_records=0, changed_bytes=0, record_xxh3="", finished_at=0
            )
        assert committed_generation(state, "videos") == 2
        assert state.head_digests("videos", 2) == {
            0: f"{0:032x}",
            1: "b" * 32,
            2: f"{2:032x}",
            3: f"{3:032x}",
        }
        seen = generation_seen(state, VIDEOS)
        assert seen is not None and seen.generation == 2 and seen.shards[1] == "b" * 32


def test_records_compare_with_the_last_routing_checkpoint(tmp_path: Path) -> None:
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        state.bind_dataset_key("profiles", KEY)
        state.open_generation("profiles", 1, GenerationKind.BULK)
        state.commit_generation(
            "profiles", 1, changed_records=0, changed_bytes=0, record_xxh3="", finished_at=0
        )
        seen = generation_seen(state, PROFILES)
        assert seen is not None and seen.listing is None  # no checkpoint: cannot tell
        digest = listing_digest(LISTING)
        state.save_route_checkpoint("profiles", 1, RouteCheckpoint(12, digest, (), None, True))
        seen = generation_seen(state, PROFILES)
        assert seen is not None and seen.listing == digest
        assert what_changed(seen, digest_listing(LISTING, PROFILES)) is None


@pytest.mark.parametrize("kind", ["new", "changed", "resized", "removed"])
def test_the_cursor_moves_with_any_change(kind: str) -> None:
    assert cursor_digest(changes()[kind]) != cursor_digest(LISTING)
