"""Local state is the owner's alone: state_dir 0700, the state store (with its -wal and -shm),
spools, locks and markers 0600, whatever the umask; state an older release left open is
tightened when it is opened again."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.cli import main
from migrator.keys.datakey import DataKey
from migrator.plan.model import load_plan
from migrator.sources.local import LocalSource
from migrator.state.db import StateDB
from migrator.state.private import open_private, private_dir, private_sqlite
from migrator.wiring import open_state
from migrator.write.route import RecordsSpec, spool_source
from tests.planfiles import write_plan, write_profiles

DATASET = """\
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 3, on_bad_record: quarantine}
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The usual umask: what a user's shell gives, under which files come out 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_run_keeps_its_state_private(tmp_path: Path) -> None:
    write_profiles(tmp_path / "data" / "profiles", 300)
    with (tmp_path / "data" / "profiles" / "bad.jsonl").open("wb") as fh:
        fh.write(b'{"no key": 1}\n')  # one record set aside: a dead-letter spool and marker
    plan = write_plan(tmp_path, datasets=DATASET)
    with pytest.raises(SystemExit) as done:
        main(["run", str(plan)])
    assert done.value.code == 0
    state = tmp_path / "state"
    assert mode(state) == 0o700
    with StateDB.sqlite_file(state / "state.sqlite") as store:
        store.generations("profiles")  # SQLite's -wal and -shm exist while it is open
        files = [p for p in state.rglob("*") if p.is_file()]
        modes = {p.relative_to(state).as_posix(): oct(mode(p)) for p in files}
    names = {p.name for p in files}
    assert {"state.sqlite", "state.sqlite-wal", "state.sqlite-shm"} <= names
    assert any(p.suffix == ".lock" for p in files) and any(p.suffix == ".json" for p in files)
    assert {name: m for name, m in modes.items() if m != oct(0o600)} == {}


def test_spools_are_private_while_they_exist(tmp_path: Path) -> None:
    """Spools hold routed records in plain: 0600 from the first byte."""
    records = write_profiles(tmp_path / "src", 200)
    spec = RecordsSpec("d", 1, "jsonl", "user_id", 4, LocalSource(tmp_path / "src"))
    state_dir = private_dir(tmp_path / "state")
    with StateDB.sqlite_file(state_dir / "state.sqlite") as state:
        state.bind_dataset_key("d", DataKey(bytes(32)))
        spool_source(spec, state_dir / "spool", buffer_budget=1 << 20)
    spools = sorted((state_dir / "spool").iterdir())
    assert len(spools) == 8  # a record spool and a digest spool a shard
    assert sum(p.stat().st_size for p in spools if p.suffix == ".spool") == sum(
        len(r) + 1 for r in records
    )
    assert {oct(mode(p)) for p in spools} == {oct(0o600)}


def test_state_an_older_release_left_open_is_tightened(tmp_path: Path) -> None:
    write_profiles(tmp_path / "data" / "profiles", 10)
    plan = load_plan(write_plan(tmp_path, datasets=DATASET))
    state = tmp_path / "state"
    spool = state / "spool" / "profiles" / "g000001"
    spool.mkdir(parents=True, mode=0o755)
    state.chmod(0o755)
    left = [state / f"state.sqlite{end}" for end in ("", "-wal", "-shm")]
    left.append(spool / "s00000.spool")
    for path in left:
        path.write_bytes(b"")
        path.chmod(0o644)
    with StateDB.sqlite_file(state / "state.sqlite"):
        # opening the store tightened it and its companions (gone again once it is closed)
        assert [oct(mode(p)) for p in left[:3]] == [oct(0o600)] * 3
    assert mode(state) == 0o700
    with open_private(left[3]):  # as routing reopens a spool to resume
        pass
    assert mode(left[3]) == 0o600
    open_state(plan).close()
    assert mode(state) == 0o700


def test_a_new_state_store_is_never_readable_by_others(tmp_path: Path) -> None:
    """The database file exists 0600 before SQLite first writes to it."""
    path = tmp_path / "deep" / "state" / "state.sqlite"
    private_sqlite(path)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert path.stat().st_size == 0
