"""A generation's first landing attempt sends each object without looking it up first (it cannot
be there yet); an attempt that may find its objects landed (resumed, or a replacing base) looks
each up and sends only what is missing."""

from __future__ import annotations

import dataclasses

from migrator.landing.bucket import BucketObjects
from migrator.stores.memory import MemoryStore
from tests.unit.test_land_bucket import CHUNK, SHARDS, changes, check_landed, source

NAMES = ["a.bin", "b/c.bin", "big/video.mov", "empty"]


def test_a_first_attempt_sends_without_a_lookup_and_a_resumed_one_looks_first() -> None:
    store = MemoryStore()
    target = BucketObjects(store, dataset="videos", part_size=10 * CHUNK, shards=SHARDS)
    src = source(dict.fromkeys(NAMES, "v1"))
    for change in changes(None, src, 1):
        target.apply(dataclasses.replace(change, may_hold=False))
    assert store.requests["head"] == 0
    assert store.requests["put"] == len(NAMES)
    check_landed(target, store, src)
    heads, puts = store.requests["head"], store.requests["put"]
    for change in changes(None, src, 1):  # the same generation again, as a resumed attempt
        target.apply(change)
    assert store.requests["head"] == heads + len(NAMES)
    assert store.requests["put"] == puts  # all there already: nothing sent
