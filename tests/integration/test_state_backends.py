"""The state store behaves the same on SQLite and on a real PostgreSQL server: progress,
generations, migrations from earlier schemas, locks between processes, and shard leases."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from migrator.errors import StateError
from migrator.keys.datakey import DataKey
from migrator.state import migrate
from migrator.state.db import StateDB
from migrator.state.leases import LeaseKeeper, LeaseLostError
from migrator.state.model import (
    CommittedChunk,
    LedgerHead,
    LedgerMove,
    RouteCheckpoint,
    ShardStatus,
    UploadEntry,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'state.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


KEY = DataKey(bytes(range(32)))  # the datasets' first data key: names, digests are sealed


def keyed(store: StateDB, *datasets: str) -> StateDB:
    for dataset in datasets or ("profiles",):
        store.bind_dataset_key(dataset, KEY)
    return store


@pytest.fixture
def state(url: str) -> Iterator[StateDB]:
    with StateDB(url) as store:
        yield keyed(store, "profiles", "k")


def chunk(shard: int, seq: int, *, gen: int = 1, size: int = 1000) -> CommittedChunk:
    return CommittedChunk(
        "profiles",
        gen,
        shard,
        f"profiles/g{gen:06d}/s{shard:05d}/c{seq:08d}.mgc",
        seq,
        None,
        10,
        size,
        size // 2,
        "a" * 32,
        "b" * 32,
        (seq + 1) * size,
        "",
    )


def test_progress_generations_and_journal_round_trip(state: StateDB) -> None:
    state.open_generation("profiles", 1, "bulk")
    state.open_generation("profiles", 1, "bulk")  # a second worker joins, nothing changes
    state.set_shard_status("profiles", 1, 0, ShardStatus.RUNNING)
    state.commit_chunks([chunk(0, 0), chunk(0, 1), chunk(1, 0, size=3 * 2**40)])  # 3 TiB
    state.commit_chunks([chunk(0, 1)])  # a resumed worker commits the same chunk again
    assert state.chunk_count("profiles", 1, 0) == 2
    assert [c.sequence for c in state.shard_chunks("profiles", 1, 0)] == [0, 1]
    big = chunk(1, 0, size=3 * 2**40)
    assert state.committed_chunk("profiles", 1, big.object_key) == big
    state.complete_shard(
        "profiles", 1, 0, manifest_key="m0", manifest_xxh3="c" * 32, base=True,
        inventory=b"\x00inventory", live_records=20, digest="d" * 32,
    )  # fmt: skip
    with pytest.raises(StateError, match="cannot move from complete"):
        state.set_shard_status("profiles", 1, 0, ShardStatus.RUNNING)
    progress = {p.shard: p for p in state.shard_progress("profiles", 1)}
    assert progress[0].status is ShardStatus.COMPLETE and progress[0].records == 20
    assert progress[0].plain_bytes == 2000
    assert state.shard_inventory("profiles", 0, 2) == b"\x00inventory"
    assert [h.generation for h in state.shard_heads("profiles", 0)] == [1]
    state.commit_generation(
        "profiles", 1, changed_records=20, changed_bytes=2000, record_xxh3="e" * 32,
        finished_at=time.time(),
    )  # fmt: skip
    assert state.latest_generation("profiles").committed  # type: ignore[union-attr]
    cp = RouteCheckpoint(3, "f" * 32, (1, 2**40, 0), b"id,name", True)
    state.save_route_checkpoint("profiles", 1, cp)
    assert state.route_checkpoint("profiles", 1) == cp
    assert state.last_csv_header("profiles", 2) == b"id,name"
    entry = UploadEntry("k", "upload-1", b"\x01" * 32, b"\x02" * 16, b"\x03" * 16, 5 * 2**30)
    state.journal_upload(entry)
    assert state.journaled_upload("k") == entry and state.journaled_uploads() == [entry]
    state.forget_upload("k")
    assert state.journaled_uploads() == []


def test_a_store_serves_one_plan(state: StateDB) -> None:
    state.claim_for_plan("alpha")
    state.claim_for_plan("alpha")
    with pytest.raises(StateError, match="belongs to plan 'alpha', not 'beta'"):
        state.claim_for_plan("beta")


def test_leases_exclude_lapse_and_fence_writers(url: str) -> None:
    with StateDB(url) as a_store, StateDB(url) as b_store:
        keyed(a_store), keyed(b_store)
        a = LeaseKeeper(a_store, ttl=1.0, owner="host-a:1:aa")
        b = LeaseKeeper(b_store, ttl=1.0, owner="host-b:2:bb")
        try:
            assert a.claim("profiles", 3)
            assert not b.claim("profiles", 3)  # held
            assert b.claim("profiles", 4)  # another shard is free
            a_store.commit_chunks([chunk(3, 0)], fence=a.fence())
            with pytest.raises(LeaseLostError, match="shard 3"):
                b_store.commit_chunks([chunk(3, 1)], fence=b.fence())
            a.close()  # a stops renewing (as a stalled or dead worker would)
            time.sleep(1.3)
            with pytest.raises(LeaseLostError, match="could not renew"):
                a.check("profiles", 3)  # a's own deadline passed before the lease lapsed
            assert b.claim("profiles", 3)  # lapsed: b takes over with a higher token
            with pytest.raises(LeaseLostError, match="another worker took the shard over"):
                a_store.commit_chunks([chunk(3, 1)], fence=a.fence())
            with pytest.raises(LeaseLostError):
                a_store.complete_shard("profiles", 1, 3, manifest_key="m", fence=a.fence())
            b_store.commit_chunks([chunk(3, 1)], fence=b.fence())
            assert a_store.renew_leases(a.fence().values(), 1.0) == list(a.fence().values())
            assert a_store.chunk_count("profiles", 1, 3) == 2
        finally:
            a.close()
            b.close()


def test_a_renewed_lease_does_not_lapse(url: str) -> None:
    with StateDB(url) as a_store, StateDB(url) as b_store:
        a = LeaseKeeper(a_store, ttl=0.6, owner="host-a:1:aa")
        b = LeaseKeeper(b_store, ttl=0.6, owner="host-b:2:bb")
        try:
            assert a.claim("videos", 0)
            for _ in range(6):  # 1.8 s: three ttls, renewed every 0.2 s in the background
                time.sleep(0.3)
                a.check("videos", 0)
                assert not b.claim("videos", 0)
            a.release("videos", [0])
            assert b.claim("videos", 0)
            assert set(b_store.lease_holders("videos")) == {0}
        finally:
            a.close()
            b.close()


def test_only_one_of_many_racing_claimants_gets_a_shard(url: str) -> None:
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        with StateDB(url) as store:
            barrier.wait()
            lease = store.claim_shard("profiles", 7, f"w{i}:1:x", 30.0)
            if lease is not None:
                winners.append(lease.owner)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


LOCK_HOLDER = """
import sys, time
from migrator.state.db import StateDB
store = StateDB(sys.argv[1])
with store.lock("profiles.generation"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_lock_held_by_a_killed_process_is_released(url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with StateDB(url) as store:
            got = threading.Event()

            def take() -> None:
                with store.lock("profiles.generation"):
                    got.set()

            t = threading.Thread(target=take, daemon=True)
            t.start()
            assert not got.wait(0.5)  # the other process holds it
            holder.kill()  # kill -9: no unlock ever runs
            assert got.wait(15)
            t.join()
    finally:
        holder.kill()
        holder.wait()


# The schema the first releases created by hand (their `meta.schema` 2), kept verbatim.
LEGACY_V2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE routes (dataset TEXT NOT NULL, generation INTEGER NOT NULL,
  next_file INTEGER NOT NULL, inventory_digest TEXT NOT NULL, spool_sizes BLOB NOT NULL,
  csv_header BLOB, complete INTEGER NOT NULL, PRIMARY KEY (dataset, generation));
CREATE TABLE shards (dataset TEXT NOT NULL, generation INTEGER NOT NULL, shard INTEGER NOT NULL,
  status TEXT NOT NULL, manifest_key TEXT, updated_at REAL NOT NULL, manifest_xxh3 TEXT,
  base INTEGER NOT NULL DEFAULT 0, live_records INTEGER NOT NULL DEFAULT 0, digest TEXT,
  removed_records INTEGER NOT NULL DEFAULT 0, chunks_n INTEGER NOT NULL DEFAULT 0,
  records_n INTEGER NOT NULL DEFAULT 0, plain_n INTEGER NOT NULL DEFAULT 0,
  stored_n INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (dataset, generation, shard));
CREATE TABLE generations (dataset TEXT NOT NULL, generation INTEGER NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL,
  changed_records INTEGER NOT NULL DEFAULT 0, changed_bytes INTEGER NOT NULL DEFAULT 0,
  record_xxh3 TEXT, PRIMARY KEY (dataset, generation));
CREATE TABLE shard_maps (dataset TEXT NOT NULL, shard INTEGER NOT NULL,
  generation INTEGER NOT NULL, blob BLOB NOT NULL, PRIMARY KEY (dataset, shard, generation));
CREATE TABLE chunks (dataset TEXT NOT NULL, generation INTEGER NOT NULL,
  object_key TEXT NOT NULL, shard INTEGER NOT NULL, sequence INTEGER NOT NULL, name TEXT,
  records INTEGER NOT NULL, plain_size INTEGER NOT NULL, stored_size INTEGER NOT NULL,
  plain_xxh3 TEXT NOT NULL, stored_xxh3 TEXT NOT NULL, source_end INTEGER NOT NULL,
  source_version TEXT NOT NULL, committed_at REAL NOT NULL,
  PRIMARY KEY (dataset, generation, object_key));
CREATE INDEX chunks_by_shard ON chunks (dataset, generation, shard, sequence);
CREATE TABLE uploads (object_key TEXT PRIMARY KEY, upload_id TEXT NOT NULL, salt BLOB NOT NULL,
  plain_xxh3 BLOB NOT NULL, stored_xxh3 BLOB NOT NULL, stored_size INTEGER NOT NULL,
  started_at REAL NOT NULL);
INSERT INTO meta VALUES ('schema', '2');
INSERT INTO generations VALUES ('profiles', 1, 'bulk', 'committed', 1.0, 2.0, 5, 50, 'ab');
"""


def test_a_store_of_the_first_releases_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(LEGACY_V2)
    with StateDB(f"sqlite:///{db}") as state:
        assert [g.generation for g in state.generations("profiles")] == [1]  # kept
        assert state.claim_shard("profiles", 0, "w:1:x", 10.0) is not None  # leases added
        with state.engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.HEAD


def test_a_store_at_an_earlier_revision_is_upgraded(url: str) -> None:
    engine = create_engine(url)
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "migrator.state:migrations")
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.commit()
        assert "leases" not in _tables(conn)
    engine.dispose()
    with StateDB(url) as state:
        assert state.claim_shard("profiles", 0, "w:1:x", 10.0) is not None


def test_a_store_from_a_newer_release_is_refused(url: str) -> None:
    StateDB(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StateError, match="0099 is unknown to this release"):
        StateDB(url)


def test_many_processes_open_a_new_store_at_once(url: str) -> None:
    """The first migrates; the others wait for it and find the schema done."""
    code = "import sys; from migrator.state.db import StateDB; StateDB(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err


def test_errors_name_the_store_and_never_a_password(tmp_path: Path) -> None:
    with pytest.raises(StateError) as caught:
        StateDB("postgresql://migrator:hunter2-secret@127.0.0.1:1/nowhere")
    assert "hunter2-secret" not in str(caught.value) and "127.0.0.1:1/nowhere" in str(caught.value)


def _tables(conn: object) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(conn).get_table_names())


def test_ledger_heads_move_with_their_chunks_and_only_forward(state: StateDB) -> None:
    def head(segment: int, entries: int, shard: int = 0) -> LedgerHead:
        return LedgerHead("profiles", shard, segment, entries, f"{segment:x}" * 64)

    assert state.ledger_heads("profiles", [0, 1]) == {} and not state.ledger_begun("profiles")
    state.commit_chunks([chunk(0, 0), chunk(1, 0)], ledger=[
        LedgerMove(0, head(1, 1)), LedgerMove(0, head(1, 1, shard=1))
    ])  # fmt: skip
    state.commit_chunks([chunk(0, 1)], ledger=[LedgerMove(1, head(2, 2))])
    assert state.ledger_head("profiles", 0) == head(2, 2) and state.ledger_begun("profiles")
    # A writer that started from a head that has moved since records nothing of its batch.
    with pytest.raises(StateError, match="moved past segment 1"):
        state.commit_chunks([chunk(0, 2)], ledger=[LedgerMove(1, head(2, 3))])
    with pytest.raises(StateError, match="moved past segment 0"):
        state.forget_chunks("profiles", 1, [chunk(1, 0).object_key], ledger=[
            LedgerMove(0, head(1, 2, shard=1))
        ])  # fmt: skip
    assert state.chunk_count("profiles", 1, 0) == 2 and state.chunk_count("profiles", 1, 1) == 1
    state.forget_chunks("profiles", 1, [chunk(1, 0).object_key], ledger=[
        LedgerMove(1, head(2, 2, shard=1))
    ])  # fmt: skip
    state.forget_shard_generations("profiles", 0, [1], ledger=[LedgerMove(2, head(3, 4))])
    assert state.chunk_count("profiles", 1, 0) == 0
    assert state.ledger_heads("profiles", range(4)) == {0: head(3, 4), 1: head(2, 2, shard=1)}
    state.set_ledger_head(head(7, 9))  # a rebuild sets it as the destination shows it
    assert state.ledger_head("profiles", 0) == head(7, 9)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://migrator@127.0.0.1:1/nowhere?password=hunter2-secret",
        "postgresql://migrator:hunter2@secret@127.0.0.1:1/nowhere",  # an unescaped @
    ],
)
def test_no_form_of_a_password_reaches_a_message(url: str) -> None:
    with pytest.raises(StateError) as caught:
        StateDB(url)
    assert "hunter2" not in str(caught.value) and "secret" not in str(caught.value)


def test_a_missing_driver_names_the_extra_to_install() -> None:
    with pytest.raises(StateError, match=r"not installed .*`postgres` extra"):
        StateDB("postgresql+pg8000://migrator@127.0.0.1:1/nowhere")
