"""A local destination keeps nothing a killed write left, and never takes a live writer's file.

Temporaries name their writer (host, boot and process namespace) and process: on the same host
a dead process's are removed by the next write or delete in their folder; another host's, and
those of older releases, once unchanged for `stale_after` seconds. The engine also clears the
prefixes it owns before writing there (abort_orphaned_uploads), sidecars of objects that never
appeared included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.errors import StoreError
from migrator.state.db import StateDB
from migrator.stores import local
from migrator.stores.base import UnfinishedWrites
from migrator.stores.local import LocalStore
from migrator.stores.memory import MemoryStore
from migrator.stores.wrappers import ThrottledStore, TokenBucket
from migrator.write.upload import abort_orphaned_uploads

HOUR = 3600.0


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process of this host that is running (another writer, say)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def temp_of(folder: Path, name: str, pid: int, writer: str = local._WRITER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.{writer}-{pid}-{uuid.uuid4().hex[:16]}.tmp"
    path.write_bytes(b"half written")
    return path


def aged(path: Path, seconds: float) -> Path:
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))
    return path


def test_the_next_write_in_a_folder_removes_dead_writers_temporaries(
    tmp_path: Path, dead_pid: int, live_pid: int
) -> None:
    folder = tmp_path / "ds" / "g000001" / "s00000" / "r"
    dead = temp_of(folder, "00000003.mgc", dead_pid)
    alive = temp_of(folder, "00000004.mgc", live_pid)
    elsewhere = temp_of(folder, "00000005.mgc", dead_pid, writer="0123456789ab")
    elsewhere_old = aged(temp_of(folder, "00000006.mgc", dead_pid, writer="0123456789ab"), HOUR)
    older_release = folder / f".00000007.mgc.{uuid.uuid4().hex}.tmp"
    older_release.write_bytes(b"x")
    older_release_old = folder / f".00000008.mgc.{uuid.uuid4().hex}.tmp"
    older_release_old.write_bytes(b"x")
    aged(older_release_old, HOUR)

    store = LocalStore(tmp_path, stale_after=HOUR - 60)
    store.put("ds/g000001/s00000/r/00000000.mgc", b"sealed")

    left = {p.name for p in folder.iterdir()}
    assert dead.name not in left and elsewhere_old.name not in left
    assert older_release_old.name not in left
    # a live writer here, and writers that cannot be asked until they are stale, keep theirs
    assert {alive.name, elsewhere.name, older_release.name} <= left
    assert store.get("ds/g000001/s00000/r/00000000.mgc") == b"sealed"


def test_a_delete_clears_its_folder_too(tmp_path: Path, dead_pid: int) -> None:
    store = LocalStore(tmp_path)
    store.put("ds/old/a", b"1")
    leftover = temp_of(tmp_path / "ds" / "old", "b", dead_pid)
    LocalStore(tmp_path).delete("ds/old/a")
    assert not leftover.exists()


def test_a_writer_whose_process_has_our_pid_but_is_not_us_is_dead(tmp_path: Path) -> None:
    """A pid comes back after its process died: a temporary with our pid that this process is
    not writing is a killed writer's."""
    stale = temp_of(tmp_path / "d", "x", os.getpid())
    LocalStore(tmp_path).put("d/y", b"1")
    assert not stale.exists()


def test_another_threads_write_in_flight_is_never_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two store objects of one process share a folder: one sweeps while the other's data is
    written but not yet renamed into place."""
    writing, release = threading.Event(), threading.Event()
    real = LocalStore.publish

    def slow_publish(self: LocalStore, temp: Path, path: Path) -> None:
        if path.name == "slow":
            writing.set()
            assert release.wait(10)
        real(self, temp, path)

    monkeypatch.setattr(LocalStore, "publish", slow_publish)
    failures: list[BaseException] = []

    def put_slow() -> None:
        try:
            LocalStore(tmp_path).put("d/slow", b"in flight")
        except BaseException as exc:  # reported below
            failures.append(exc)

    thread = threading.Thread(target=put_slow)
    thread.start()
    assert writing.wait(10)
    other = LocalStore(tmp_path)
    other.put("d/fast", b"done")
    assert other.remove_unfinished_writes("d/") == 0
    release.set()
    thread.join(10)
    assert failures == []
    assert other.get("d/slow") == b"in flight"


def test_removing_a_prefixs_unfinished_writes(tmp_path: Path, dead_pid: int, live_pid: int) -> None:
    store = LocalStore(tmp_path)
    store.put("ds/g000002/s00001/o/aa/000000.mgc", b"part", {"k": "v"})
    store.put("ds/g000001/s00001/r/00000000.mgc", b"older generation")
    gen = tmp_path / "ds" / "g000002"
    meta = tmp_path / local.META_DIR / "ds" / "g000002"
    removed = [
        temp_of(gen / "s00001" / "o" / "bb", "000000.mgc", dead_pid),  # a part of a gone object
        temp_of(meta / "s00001" / "o" / "bb", "000000.mgc.json", dead_pid),
        temp_of(gen / "s00002" / "r", "00000000.mgc", dead_pid),
    ]
    orphan = meta / "s00001" / "o" / "cc" / "000000.mgc.json"  # killed between the renames
    orphan.parent.mkdir(parents=True)
    orphan.write_text("{}")
    kept = [
        temp_of(gen / "s00002" / "r", "00000001.mgc", live_pid),
        meta / "s00001" / "o" / "aa" / "000000.mgc.json",  # its object is there
        temp_of(tmp_path / "ds" / "g000001" / "s00001" / "r", "x.mgc", dead_pid),  # not below
    ]

    assert store.remove_unfinished_writes("ds/g000002/") == len(removed) + 1
    assert not any(p.exists() for p in [*removed, orphan])
    assert all(p.exists() for p in kept)
    with pytest.raises(StoreError):
        store.remove_unfinished_writes("")


def test_the_engine_clears_a_local_prefix_as_it_aborts_orphaned_uploads(
    tmp_path: Path, dead_pid: int
) -> None:
    """Through a bandwidth-limited wrapper too; a store without such files has none."""
    leftover = temp_of(tmp_path / "ds" / "g000001" / "s00000", "manifest.mgc", dead_pid)
    throttled = ThrottledStore(LocalStore(tmp_path), TokenBucket(1 << 30))
    assert isinstance(throttled, UnfinishedWrites)
    assert ThrottledStore(MemoryStore(), TokenBucket(1 << 30)).remove_unfinished_writes("ds/") == 0
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        assert abort_orphaned_uploads(throttled, state, "ds/g000001/") == 1
        assert abort_orphaned_uploads(MemoryStore(), state, "ds/g000001/") == 0
    assert not leftover.exists()


@pytest.mark.parametrize(
    "segment",
    [
        ".b.0123456789ab-123-0123456789abcdef.tmp",
        ".b.0123456789abcdef0123456789abcdef.tmp",
    ],
)
def test_a_key_shaped_like_a_temporary_is_refused(tmp_path: Path, segment: str) -> None:
    with pytest.raises(StoreError, match="invalid object key"):
        LocalStore(tmp_path).put(f"a/{segment}", b"x")
