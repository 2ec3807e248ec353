from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import ObjectInfo, ObjectStore
from migrator.stores.local import LocalStore
from migrator.stores.memory import MemoryStore
from tests.store_contract import CONTRACT_CHECKS, check_id, listed


@pytest.fixture(params=["memory", "local", "local-no-fsync"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "memory":
        return MemoryStore()
    return LocalStore(tmp_path / "store", fsync=request.param == "local")


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=check_id)
def test_contract(store: ObjectStore, check: Callable[[ObjectStore], None]) -> None:
    check(store)


# --- LocalStore ---------------------------------------------------------------------------


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/absolute",
        "../escape",
        "a/../../escape",
        "a/..",
        "..",
        "a\\b",
        "a//b",
        "a/",
        "./a",
        "a/./b",
        "nul\x00byte",
        ".meta/a.json",
        "a/.b.0123456789abcdef0123456789abcdef.tmp",  # the shape of a temporary file
    ],
)
def test_local_rejects_bad_keys(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path)
    for operation in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.head(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(StoreError) as caught:
            operation()
        assert repr(key) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_local_layout_is_one_file_per_key(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("plan/ds/shard-0001/chunk-000001", b"bytes on disk", {"k": "v"})
    assert (tmp_path / "plan/ds/shard-0001/chunk-000001").read_bytes() == b"bytes on disk"
    assert store.describe() == f"local:{tmp_path}"


def test_local_put_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for index in range(5):
        store.put(f"d/{index}", b"data", {"n": str(index)})
        store.put(f"d/{index}", b"data again")
    assert temp_files(tmp_path) == []


def test_local_failed_rename_leaves_no_object_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.put("existing", b"old", {"v": "1"})
    real_replace = os.replace

    def fail_data_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if ".meta" not in Path(dst).parts:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_data_rename)
    with pytest.raises(StoreError, match="new-key"):
        store.put("new-key", b"never visible")
    with pytest.raises(StoreError, match="existing"):
        store.put("existing", b"new")
    monkeypatch.undo()

    assert store.head("new-key") is None
    with pytest.raises(MissingObjectError):
        store.get("new-key")
    assert store.get("existing") == b"old"
    assert listed(store) == [("existing", 3)]
    assert temp_files(tmp_path) == []


def test_local_crash_before_rename_leaves_no_object(tmp_path: Path) -> None:
    """What a killed process leaves behind: metadata in place, data only in a temp file."""
    store = LocalStore(tmp_path)
    store.put("shard/old", b"complete", {"v": "1"})
    crashed_new = tmp_path / "shard" / f".new.{uuid.uuid4().hex}.tmp"
    crashed_new.write_bytes(b"half-writ")
    (tmp_path / ".meta" / "shard" / "new.json").write_text('{"v": "1"}')
    crashed_overwrite = tmp_path / "shard" / f".old.{uuid.uuid4().hex}.tmp"
    crashed_overwrite.write_bytes(b"half")

    assert store.head("shard/new") is None
    with pytest.raises(MissingObjectError):
        store.get("shard/new")
    assert store.get("shard/old") == b"complete"
    assert listed(store) == [("shard/old", 8)]

    store.put("shard/new", b"redone")  # the retry simply overwrites
    assert store.head("shard/new") == ObjectInfo("shard/new", 6, {})


def test_local_list_skips_metadata_and_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a", b"1", {"m": "1"})
    store.put("sub/b", b"22", {"m": "2"})
    (tmp_path / f".a.{uuid.uuid4().hex}.tmp").write_bytes(b"partial")
    assert (tmp_path / ".meta" / "a.json").exists()
    assert listed(store) == [("a", 1), ("sub/b", 2)]
    assert listed(store, ".") == []


def test_local_key_under_an_existing_object_fails_naming_key(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a", b"file")
    with pytest.raises(StoreError, match="a/b"):
        store.put("a/b", b"cannot nest under a file")
    assert store.get("a") == b"file"
    assert store.head("a/b") is None


def test_local_list_of_missing_root_is_empty(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "not-created-yet")
    assert listed(store) == []
    assert store.head("x") is None


# --- MemoryStore --------------------------------------------------------------------------


def test_memory_counts_requests_and_bytes() -> None:
    store = MemoryStore()
    store.put("a", b"123")
    store.put("b", b"45")
    store.get("a")
    store.head("a")
    store.head("missing")
    list(store.list())
    store.delete("a")
    assert store.requests == {"put": 2, "get": 1, "head": 2, "list": 1, "delete": 1}
    assert store.bytes_written == 5


def test_memory_counts_one_list_request_per_page() -> None:
    store = MemoryStore()
    for index in range(2500):
        store.put(f"k{index:05d}", b"")
    assert len(listed(store)) == 2500
    assert store.requests["list"] == 3


def test_memory_fail_puts_fails_the_next_n_puts() -> None:
    store = MemoryStore(fail_puts=2)
    for _ in range(2):
        with pytest.raises(StoreError, match="chunk-1"):
            store.put("chunk-1", b"data")
    assert store.head("chunk-1") is None
    store.put("chunk-1", b"data")
    assert store.get("chunk-1") == b"data"
    assert store.requests["put"] == 3
    assert store.bytes_written == 4

    store.fail_puts = 1  # can be armed again mid-test
    with pytest.raises(StoreError):
        store.put("chunk-2", b"x")
    store.put("chunk-2", b"x")
