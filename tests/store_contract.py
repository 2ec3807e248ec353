"""Behaviour every `ObjectStore` must share. Each check takes an empty store.

Test modules parametrize over `CONTRACT_CHECKS` so each store runs the same checks.
Metadata uses lowercase ASCII names and values: S3 lowercases names and allows only ASCII.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import ObjectInfo, ObjectStore

ALL_BYTES = bytes(range(256)) * 3


def listed(store: ObjectStore, prefix: str = "") -> list[tuple[str, int]]:
    return [(info.key, info.size) for info in store.list(prefix)]


def check_is_an_object_store(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.describe()


def check_put_get_round_trip(store: ObjectStore) -> None:
    store.put("chunks/0001", ALL_BYTES)
    store.put("empty", b"")
    assert store.get("chunks/0001") == ALL_BYTES
    assert store.get("empty") == b""


def check_head(store: ObjectStore) -> None:
    store.put("a/b/object", b"12345", {"sequence": "7"})
    assert store.head("a/b/object") == ObjectInfo("a/b/object", 5, {"sequence": "7"})
    assert store.head("a/b/absent") is None
    assert store.head("a/b") is None  # a "directory" of other keys is not an object


def check_metadata_round_trip(store: ObjectStore) -> None:
    metadata = {"digest": "9f86d081884c7d65", "record-count": "1024", "format": "1"}
    store.put("with-meta", b"x", metadata)
    store.put("without-meta", b"y")
    with_meta = store.head("with-meta")
    without_meta = store.head("without-meta")
    assert with_meta is not None and with_meta.metadata == metadata
    assert without_meta is not None and without_meta.metadata == {}


def check_overwrite_replaces_data_and_metadata(store: ObjectStore) -> None:
    store.put("key", b"first version", {"attempt": "1"})
    store.put("key", b"second", {"attempt": "2"})
    assert store.get("key") == b"second"
    assert store.head("key") == ObjectInfo("key", 6, {"attempt": "2"})
    store.put("key", b"third")
    assert store.head("key") == ObjectInfo("key", 5, {})
    assert listed(store) == [("key", 5)]


def check_get_missing_raises(store: ObjectStore) -> None:
    store.put("present", b"x")
    with pytest.raises(MissingObjectError) as caught:
        store.get("absent/object")
    assert caught.value.object_key == "absent/object"
    assert "absent/object" in str(caught.value)


def check_delete(store: ObjectStore) -> None:
    store.put("keep", b"1", {"k": "v"})
    store.put("drop", b"2", {"k": "v"})
    store.delete("drop")
    store.delete("drop")  # absent is not an error
    store.delete("never/existed")
    assert store.head("drop") is None
    with pytest.raises(MissingObjectError):
        store.get("drop")
    assert listed(store) == [("keep", 1)]
    store.put("drop", b"again")
    assert store.head("drop") == ObjectInfo("drop", 5, {})


def check_list_in_key_order_with_prefix(store: ObjectStore) -> None:
    # "a-c" sorts before "a/x/1" ("-" < "/"), which a naive directory walk gets wrong.
    keys = ["b", "a/x/2", "a/x/1", "a-c", "a/y", "ab", "c/d/e/f", "a/x10", "é/1", "z"]
    for index, key in enumerate(keys):
        store.put(key, b"x" * index)
    sizes = {key: index for index, key in enumerate(keys)}
    assert listed(store) == [(key, sizes[key]) for key in sorted(keys)]
    assert [key for key, _ in listed(store, "a/")] == ["a/x/1", "a/x/2", "a/x10", "a/y"]
    assert [key for key, _ in listed(store, "a")] == [
        "a-c",
        "a/x/1",
        "a/x/2",
        "a/x10",
        "a/y",
        "ab",
    ]
    assert [key for key, _ in listed(store, "a/x")] == ["a/x/1", "a/x/2", "a/x10"]
    assert [key for key, _ in listed(store, "a/x/")] == ["a/x/1", "a/x/2"]
    assert [key for key, _ in listed(store, "c/d/e/f")] == ["c/d/e/f"]
    assert listed(store, "nothing-here") == []


def check_list_is_lazy(store: ObjectStore) -> None:
    store.put("one", b"1")
    listing = store.list()
    assert iter(listing) is listing  # an iterator, consumed as it goes
    assert [info.key for info in listing] == ["one"]


def check_list_of_empty_store(store: ObjectStore) -> None:
    assert listed(store) == []


def check_empty_key_rejected(store: ObjectStore) -> None:
    with pytest.raises(StoreError):
        store.put("", b"x")


def check_concurrent_puts(store: ObjectStore) -> None:
    keys = [f"parallel/{index:03d}" for index in range(64)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: store.put(key, key.encode(), {"key": key[-3:]}), keys))
    assert [info.key for info in store.list("parallel/")] == keys
    for key in keys[::9]:
        assert store.get(key) == key.encode()
        assert store.head(key) == ObjectInfo(key, len(key), {"key": key[-3:]})


CONTRACT_CHECKS: list[Callable[[ObjectStore], None]] = [
    check_is_an_object_store,
    check_put_get_round_trip,
    check_head,
    check_metadata_round_trip,
    check_overwrite_replaces_data_and_metadata,
    check_get_missing_raises,
    check_delete,
    check_list_in_key_order_with_prefix,
    check_list_is_lazy,
    check_list_of_empty_store,
    check_empty_key_rejected,
    check_concurrent_puts,
]


def check_id(check: Callable[[ObjectStore], None]) -> str:
    return check.__name__.removeprefix("check_")
