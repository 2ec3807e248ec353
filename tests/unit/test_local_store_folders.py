"""LocalStore makes each folder durable once: a put into a known folder does not look for it
again, puts racing into a new folder wait for the one making it, and a folder removed behind
the store's back is made again."""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest

from migrator.stores import local
from migrator.stores.local import META_DIR, LocalStore


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """The folders fsynced, and how often."""
    counts: Counter[Path] = Counter()
    real = local._fsync_dir

    def counting(directory: Path) -> None:
        counts[Path(directory)] += 1
        real(directory)

    monkeypatch.setattr(local, "_fsync_dir", counting)
    return counts


def test_each_new_folder_is_synced_in_its_parent_once(
    tmp_path: Path, synced: Counter[Path]
) -> None:
    store = LocalStore(tmp_path / "dest")
    store.put("ds/g1/s1/o/tag/000000.mgc", b"part 0", {"n": "0"})
    store.put("ds/g1/s1/o/tag/000001.mgc", b"part 1", {"n": "1"})
    root = tmp_path / "dest"
    # Each part: its folder after the rename, once for the sidecar and once for the data.
    assert synced[root / "ds/g1/s1/o/tag"] == 2
    assert synced[root / META_DIR / "ds/g1/s1/o/tag"] == 2
    # Each folder made: its parent, once.
    for folder in ("ds", "ds/g1", "ds/g1/s1", "ds/g1/s1/o"):
        assert synced[root / folder] == 1, folder
        assert synced[root / META_DIR / folder] == 1, folder
    assert store.head("ds/g1/s1/o/tag/000001.mgc") is not None


def test_puts_racing_into_one_new_folder_sync_it_once(
    tmp_path: Path, synced: Counter[Path]
) -> None:
    store = LocalStore(tmp_path / "dest")
    start = threading.Barrier(8)

    def put(n: int) -> None:
        start.wait()
        store.put(f"ds/s1/o/tag/{n:06d}.mgc", b"x" * n, {"n": str(n)})

    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    root = tmp_path / "dest"
    assert synced[root / "ds/s1/o"] == 1  # the parent of the new folder "tag"
    assert synced[root / META_DIR / "ds/s1/o"] == 1
    assert sorted(i.key for i in store.list("ds/")) == [
        f"ds/s1/o/tag/{n:06d}.mgc" for n in range(8)
    ]


def test_a_folder_found_made_is_synced_in_its_parent_before_the_first_put_returns(
    tmp_path: Path, synced: Counter[Path]
) -> None:
    """Another writer may have made it a moment ago and not synced it yet."""
    root = tmp_path / "dest"
    (root / "ds" / "s1").mkdir(parents=True)
    store = LocalStore(root)
    store.put("ds/s1/a", b"a")
    store.put("ds/s1/b", b"b")
    assert synced[root / "ds"] == 1  # for s1, found made
    assert synced[root] == 2  # for ds, found made, and for the sidecars' folder, made


def test_a_folder_removed_behind_the_store_is_made_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "dest")
    store.put("ds/s1/o/tag/000000.mgc", b"first", {"k": "v"})
    shutil.rmtree(tmp_path / "dest" / "ds")
    shutil.rmtree(tmp_path / "dest" / META_DIR)
    store.put("ds/s1/o/tag/000001.mgc", b"second", {"k": "w"})
    info = store.head("ds/s1/o/tag/000001.mgc")
    assert info is not None and info.metadata == {"k": "w"}
    assert store.get("ds/s1/o/tag/000001.mgc") == b"second"


def test_a_folder_this_store_made_is_not_swept(tmp_path: Path) -> None:
    """A new folder holds no write a killed process left: it is not listed for one."""
    store = LocalStore(tmp_path / "dest")
    scanned: list[str] = []
    real = os.scandir

    def scandir(path: str | os.PathLike[str]) -> object:
        scanned.append(os.fspath(path))
        return real(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "scandir", scandir)
        store.put("ds/s1/o/tag/000000.mgc", b"data", {"k": "v"})
    assert scanned == []
