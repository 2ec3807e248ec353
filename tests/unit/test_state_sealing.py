"""Names and digests in the state store are sealed as the destination keeps them (FORMAT.md §8):
the database file shows no object name, no plaintext digest, no inventory; resume, syncs,
status and state rebuild work as before; a store an older release filled in plain is sealed in
place when the dataset's key is first bound."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import xxhash

from migrator.cli import main
from migrator.errors import StateError
from migrator.keys.datakey import DataKey
from migrator.state.db import StateDB
from migrator.state.model import CommittedChunk, RouteCheckpoint, UploadEntry
from migrator.state.sealed import StateSealer
from tests.planfiles import PROFILES, VIDEOS, write_objects, write_plan, write_profiles

KEY = DataKey(bytes(range(32)))
OTHER = DataKey(bytes(range(1, 33)))
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def cli(*args: str | Path) -> int:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return int(done.value.code or 0)


def test_the_state_store_holds_no_name_and_no_plaintext_digest(tmp_path: Path) -> None:
    records = write_profiles(tmp_path / "data" / "profiles", 400)
    videos = write_objects(tmp_path / "data" / "videos", [0, 10, 5000, 70_000, 150_000])
    plan = write_plan(tmp_path, datasets=PROFILES + VIDEOS)
    assert cli("run", plan) == 0
    (tmp_path / "data" / "videos" / "00" / "v9.mp4").write_bytes(b"a new video")  # a sync
    assert cli("run", plan) == 0

    db = tmp_path / "state" / "state.sqlite"
    raw = db.read_bytes()
    assert not (tmp_path / "state" / "state.sqlite-wal").exists()  # all of it is in `raw`
    shown = [name for name in [*videos, "00/v9.mp4"] if name.encode() in raw]
    assert shown == [], "object names in the state store"
    digests = [xxhash.xxh3_128_hexdigest(data) for data in videos.values() if len(data) < 65536]
    digests += [xxhash.xxh3_128_hexdigest(r) for r in records[:50]]
    assert [d for d in digests if d.encode() in raw] == []
    with sqlite3.connect(db) as conn:
        names = conn.execute("SELECT name FROM chunks WHERE name IS NOT NULL").fetchall()
        plain = conn.execute("SELECT plain_xxh3 FROM chunks").fetchall()
        shard_digests = conn.execute("SELECT digest FROM shards WHERE digest IS NOT NULL")
        blobs = conn.execute("SELECT blob FROM shard_maps").fetchall()
        routes = conn.execute("SELECT inventory_digest FROM routes").fetchall()
        assert names and plain and blobs and routes
        for (value,) in [*names, *plain, *shard_digests.fetchall(), *routes]:
            assert value.startswith("s1:"), value
        assert all(b.startswith(b"MGS1") and ZSTD_MAGIC not in b[:8] for (b,) in blobs)

    # What the state store is for still works on sealed values.
    assert cli("status", plan) == 0
    assert cli("verify", plan) == 0
    assert cli("run", plan) == 0  # nothing changed: a sync that diffs sealed inventories
    db.unlink()
    assert cli("state", "rebuild", plan) == 0
    assert cli("run", plan) == 0
    assert b"v9.mp4" not in db.read_bytes()


def chunk(name: str | None, digest: str) -> CommittedChunk:
    return CommittedChunk(
        "videos", 1, 0, f"videos/g000001/s00000/o/{digest[:8]}/000000.mgc", 0, name, 0, 5, 50,
        digest, "b" * 32, 5, "v1",
    )  # fmt: skip


LEGACY_ROWS = """
INSERT INTO chunks VALUES ('videos', 1, 'videos/g000001/s00000/o/x/000000.mgc', 0, 0,
    'clips/cat.mp4', 0, 5, 50, '0123456789abcdef0123456789abcdef', 'b', 5, 'v1', 1.0);
INSERT INTO shards (dataset, generation, shard, status, manifest_key, updated_at, digest, base)
    VALUES ('videos', 1, 0, 'complete', 'm', 1.0, 'fedcba9876543210fedcba9876543210', 1);
INSERT INTO shard_maps VALUES ('videos', 0, 1, x'28b52ffd0001');
INSERT INTO routes VALUES ('videos', 1, 3, 'aaaabbbbccccddddaaaabbbbccccdddd', x'', x'6964', 1);
INSERT INTO uploads VALUES ('videos/g000001/s00000/o/x/000001.mgc', 'u1', x'00',
    x'0123456789abcdef0123456789abcdef', x'01', 9, 1.0);
"""


def test_a_store_an_older_release_filled_in_plain_is_sealed_in_place(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    StateDB.sqlite_file(db).close()
    with sqlite3.connect(db) as conn:
        conn.executescript(LEGACY_ROWS)
    with StateDB.sqlite_file(db) as state:
        with pytest.raises(StateError, match=r"dataset videos: .* sealed under the dataset's key"):
            state.save_route_checkpoint("videos", 2, RouteCheckpoint(0, "", (), None, False))
        state.bind_dataset_key("videos", KEY)
        (read,) = state.shard_chunks("videos", 1, 0)
        assert (read.name, read.plain_xxh3) == ("clips/cat.mp4", "0123456789abcdef" * 2)
        assert state.shard_heads("videos", 0)[0].digest == "fedcba9876543210" * 2
        assert state.shard_inventory("videos", 0, 2) == bytes.fromhex("28b52ffd0001")
        cp = state.route_checkpoint("videos", 1)
        assert cp is not None and cp.inventory_digest == "aaaabbbbccccdddd" * 2
        assert cp.csv_header == b"id"
        (upload,) = state.journaled_uploads()
        assert upload.plain_xxh3 == bytes.fromhex("0123456789abcdef" * 2)
        state.bind_dataset_key("videos", KEY)  # again: nothing left to seal
    raw = db.read_bytes()
    for plain in (b"clips/cat.mp4", b"0123456789abcdef", b"fedcba98", b"aaaabbbb"):
        assert plain not in raw


def test_values_open_only_under_their_dataset_key_and_column(tmp_path: Path) -> None:
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        state.bind_dataset_key("videos", KEY)
        state.commit_chunks([chunk("clips/dog.mp4", "c" * 32)])
        state.journal_upload(UploadEntry("videos/k", "u", b"s" * 32, b"p" * 16, b"q" * 16, 3))
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        with pytest.raises(StateError, match="has not loaded"):
            list(state.shard_chunks("videos", 1, 0))  # sealed: no key bound
        state.bind_dataset_key("videos", OTHER)
        with pytest.raises(StateError, match="does not open under the dataset's key"):
            list(state.shard_chunks("videos", 1, 0))
    sealer = StateSealer("videos", KEY)
    sealed = sealer.seal_text("name", "clips/dog.mp4")
    assert sealed == sealer.seal_text("name", "clips/dog.mp4")  # equal names seal equally
    assert sealer.open_text("name", sealed) == "clips/dog.mp4"
    for other in (StateSealer("photos", KEY), StateSealer("videos", OTHER)):
        with pytest.raises(StateError):
            other.open_text("name", sealed)
    with pytest.raises(StateError):
        sealer.open_text("plain_xxh3", sealed)  # not another column's value either
    assert "videos" in repr(sealer) and KEY.secret.hex() not in repr(sealer)


def test_object_parts_come_back_grouped_by_name_in_part_order(tmp_path: Path) -> None:
    """The database orders sealed names as it likes; the store gives them back in name order."""
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        state.bind_dataset_key("videos", KEY)
        parts = [
            CommittedChunk(
                "videos", 1, 0, f"videos/g000001/s00000/o/{n}/{p:06d}.mgc", p, n, 0, 1, 1,
                "c" * 32, "d" * 32, 1, "",
            )
            for n in ("b", "a", "c", "aa")
            for p in (1, 0)
        ]  # fmt: skip
        state.commit_chunks(parts)
        got = [(c.name, c.sequence) for c in state.shard_chunks("videos", 1, 0)]
    assert got == sorted((c.name or "", c.sequence) for c in parts)
