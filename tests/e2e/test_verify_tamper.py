"""Damage a migrated destination and check `verify` names each bad object and what is wrong.

One pristine migration is made per module; each test damages its own copy of it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from migrator.codec.chunk import ChunkEncoder, read_header
from migrator.codec.manifest import ShardManifest, open_manifest, seal_manifest
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import load_data_key
from migrator.plan.model import Plan, load_plan
from migrator.read.verify import Verifier
from migrator.repository.chunks import chunk_identity, read_chunk
from migrator.repository.names import manifest_key
from migrator.stores.local import LocalStore
from migrator.wiring import open_key_provider, open_state
from tests.planfiles import (
    METADATA,
    PROFILES,
    VIDEOS,
    flip_bit,
    run_cli,
    write_metadata_csv,
    write_objects,
    write_plan,
    write_profiles,
)

SPARSE = """\
  - {name: sparse, kind: records, format: jsonl, source: {kind: local, path: data/sparse},
     key: user_id, shards: 5}
"""
DATASETS = {"profiles": 4, "metadata": 3, "videos": 3, "sparse": 5}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    write_profiles(root / "data/profiles", 4000)  # about four 64KiB chunks a shard
    write_metadata_csv(root / "data/metadata", 40)
    write_objects(root / "data/videos", [0, 1000, 150_000, 70_000, 200_000])
    write_profiles(root / "data/sparse", 2, files=1)  # most shards stay empty
    write_plan(root, datasets=PROFILES + METADATA + VIDEOS + SPARSE)
    done = run_cli("run", "plan.yaml", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def site(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the pristine migration: plan, KEK, state, sources and destination."""
    copy = tmp_path / "site"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


def obj(site: Path, key: str) -> Path:
    return site / "dest" / "t" / key


def chunk_keys(site: Path, dataset: str, shard: int) -> list[str]:
    prefix = f"{dataset}/g000001/s{shard:05d}/"
    store = LocalStore(site / "dest" / "t")
    return sorted(i.key for i in store.list(prefix) if not i.key.endswith("/manifest.mgc"))


def verify(site: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("verify", "plan.yaml", "--json", *args, cwd=site)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((p["object_key"], p["error"]) for p in doc["problems"])


def assert_only(site: Path, key: str, error: str, *, unread: int = 0) -> dict[str, Any]:
    """verify fails naming exactly this object and error; every other chunk reads back fine."""
    code, doc = verify(site)
    assert code == 1
    assert doc["ok"] is False
    assert problems(doc) == [(key, error)]
    assert key in doc["problems"][0]["message"]
    assert doc["chunks_checked"] == doc["chunks_listed"] - unread
    return doc


class Api:
    """The plan's own store, key provider and data keys, for reading and forging manifests."""

    def __init__(self, site: Path) -> None:
        self.plan: Plan = load_plan(site / "plan.yaml")
        self.store = LocalStore(site / "dest" / "t")
        self.provider = open_key_provider(self.plan)

    def key(self, dataset: str) -> DataKey:
        return load_data_key(self.store, self.provider, self.plan.name, dataset)

    def manifest(self, dataset: str, shard: int) -> ShardManifest:
        mkey = manifest_key(dataset, 1, shard)
        return open_manifest(
            self.store.get(mkey),
            plan=self.plan.name,
            dataset=dataset,
            generation=1,
            shard=shard,
            key=self.key(dataset),
            object_key=mkey,
        )

    def seal(self, manifest: ShardManifest) -> None:
        data = seal_manifest(manifest, self.key(manifest.dataset), ChunkEncoder(3))
        self.store.put(manifest_key(manifest.dataset, 1, manifest.shard), data)


def test_pristine_destination_verifies(site: Path) -> None:
    code, doc = verify(site)
    assert code == 0
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["datasets"] == 4 and doc["shards"] == sum(DATASETS.values())
    assert doc["chunks_checked"] == doc["chunks_listed"]
    for shard in range(4):
        assert len(chunk_keys(site, "profiles", shard)) >= 3


# --- bytes changed in a chunk -------------------------------------------------------------

HEADER_FLIPS = {
    "magic": (0, 0, "TamperedError"),
    "version": (4, 0, "UnknownVersionError"),
    "plan_len": (7, 7, "TruncatedError"),  # points past the end: nothing is decrypted
    "identity": (12, 1, "TamperedError"),  # the checksum catches it before the identity check
    "salt": (80, 3, "TamperedError"),
    "checksum": (-1, 5, "TamperedError"),  # counted from the end of the header
}


@pytest.mark.parametrize("where", sorted(HEADER_FLIPS))
def test_flipped_bit_in_chunk_header(site: Path, where: str) -> None:
    key = chunk_keys(site, "profiles", 1)[0]
    offset, bit, error = HEADER_FLIPS[where]
    if offset < 0:
        offset += read_header(obj(site, key).read_bytes()).header_size
    flip_bit(obj(site, key), offset, bit)
    assert_only(site, key, error)


def test_flipped_bit_in_ciphertext_body(site: Path) -> None:
    key = chunk_keys(site, "profiles", 2)[1]
    header_size = read_header(obj(site, key).read_bytes()).header_size
    flip_bit(obj(site, key), header_size + 100, 2)
    doc = assert_only(site, key, "TamperedError")
    assert "authentication failed" in doc["problems"][0]["message"]


def test_flipped_bit_in_tag(site: Path) -> None:
    key = chunk_keys(site, "metadata", 0)[0]
    flip_bit(obj(site, key), -16, 0)
    flip_bit(obj(site, key), -1, 7)
    assert_only(site, key, "TamperedError")


def test_flipped_bit_in_object_part(site: Path) -> None:
    key = next(k for s in range(3) for k in chunk_keys(site, "videos", s) if k.endswith("01.mgc"))
    flip_bit(obj(site, key), -40, 4)
    assert_only(site, key, "TamperedError")


def test_flipped_bit_in_shard_manifest(site: Path) -> None:
    mkey = manifest_key("profiles", 1, 3)
    flip_bit(obj(site, mkey), -30, 1)
    doc = assert_only(site, mkey, "TamperedError")
    assert doc["problems"][0]["shard"] == 3


# --- valid chunks in the wrong place ------------------------------------------------------


def test_chunk_swapped_between_shards(site: Path) -> None:
    src, dst = chunk_keys(site, "profiles", 0)[0], chunk_keys(site, "profiles", 1)[0]
    shutil.copyfile(obj(site, src), obj(site, dst))
    doc = assert_only(site, dst, "MisplacedChunkError")
    assert "shard=1" in doc["problems"][0]["message"] and "shard=0" in doc["problems"][0]["message"]


def test_chunk_moved_to_another_position(site: Path) -> None:
    first, second = chunk_keys(site, "profiles", 2)[:2]
    shutil.copyfile(obj(site, first), obj(site, second))
    assert_only(site, second, "MisplacedChunkError")


def test_object_part_moved_to_another_part(site: Path) -> None:
    """Part 0 of an object copied over its part 1: same object, wrong position."""
    second = next(
        k for s in range(3) for k in chunk_keys(site, "videos", s) if k.endswith("/000001.mgc")
    )
    first = second.replace("/000001.mgc", "/000000.mgc")
    shutil.copyfile(obj(site, first), obj(site, second))
    doc = assert_only(site, second, "MisplacedChunkError")
    assert "seq=1" in doc["problems"][0]["message"] and "seq=0" in doc["problems"][0]["message"]


def test_chunk_copied_from_another_dataset(site: Path) -> None:
    src, dst = chunk_keys(site, "profiles", 0)[0], chunk_keys(site, "metadata", 0)[0]
    shutil.copyfile(obj(site, src), obj(site, dst))
    doc = assert_only(site, dst, "MisplacedChunkError")
    assert "dataset=profiles" in doc["problems"][0]["message"]


def test_manifest_copied_to_another_shard(site: Path) -> None:
    shutil.copyfile(
        obj(site, manifest_key("metadata", 1, 0)), obj(site, manifest_key("metadata", 1, 2))
    )
    assert_only(site, manifest_key("metadata", 1, 2), "MisplacedChunkError")


# --- chunks cut short, missing, or left over ----------------------------------------------


def test_chunk_cut_short(site: Path) -> None:
    key = chunk_keys(site, "profiles", 3)[1]
    data = obj(site, key).read_bytes()
    obj(site, key).write_bytes(data[:-7])
    assert_only(site, key, "TruncatedError")


def test_chunk_cut_inside_its_header(site: Path) -> None:
    key = chunk_keys(site, "profiles", 3)[0]
    obj(site, key).write_bytes(obj(site, key).read_bytes()[:100])
    assert_only(site, key, "TruncatedError")


def test_chunk_deleted(site: Path) -> None:
    key = chunk_keys(site, "metadata", 1)[0]
    obj(site, key).unlink()
    assert_only(site, key, "MissingObjectError", unread=1)


def test_last_chunk_of_a_shard_deleted(site: Path) -> None:
    key = chunk_keys(site, "profiles", 0)[-1]
    obj(site, key).unlink()
    assert_only(site, key, "MissingObjectError", unread=1)


def test_manifest_deleted(site: Path) -> None:
    mkey = manifest_key("videos", 1, 1)
    obj(site, mkey).unlink()
    assert_only(site, mkey, "MissingObjectError")


def test_manifest_listing_fewer_chunks_than_committed(site: Path) -> None:
    """An older manifest of the shard (sealed under the same key) that lacks its last chunk."""
    api = Api(site)
    full = api.manifest("profiles", 2)
    dropped = full.chunks[-1]
    api.seal(
        dataclasses.replace(
            full,
            chunks=full.chunks[:-1],
            record_count=full.record_count - dropped.records,
            plain_bytes=full.plain_bytes - dropped.plain_size,
            stored_bytes=full.stored_bytes - dropped.stored_size,
        )
    )
    mkey = manifest_key("profiles", 1, 2)
    code, doc = verify(site)
    assert code == 1
    # The state store remembers one chunk more; the chunk itself is still there, unlisted.
    # The generation record names the manifest that was replaced, too, and the records its
    # chunks hold no longer add up to its digest.
    assert problems(doc) == sorted(
        [
            (mkey, "TamperedError"),
            (mkey, "TamperedError"),
            (mkey, "TruncatedError"),
            (dropped.object_key, "UnexpectedObjectError"),
        ]
    )

    # The dropped chunk gone too: only the state store can tell the shard is short.
    obj(site, dropped.object_key).unlink()
    code, doc = verify(site)
    assert code == 1
    assert problems(doc) == [
        (mkey, "TamperedError"),
        (mkey, "TamperedError"),
        (mkey, "TruncatedError"),
    ]
    assert doc["chunks_checked"] == doc["chunks_listed"]


def test_short_manifest_without_state_still_shows_the_unlisted_chunk(site: Path) -> None:
    api = Api(site)
    full = api.manifest("profiles", 1)
    dropped = full.chunks[-1]
    api.seal(
        dataclasses.replace(
            full,
            chunks=full.chunks[:-1],
            record_count=full.record_count - dropped.records,
            plain_bytes=full.plain_bytes - dropped.plain_size,
            stored_bytes=full.stored_bytes - dropped.stored_size,
        )
    )
    shutil.rmtree(site / "state")
    code, doc = verify(site)
    assert code == 1
    # without state, the generation record still tells the manifest was replaced
    mkey = manifest_key("profiles", 1, 1)
    assert problems(doc) == sorted(
        [
            (mkey, "TamperedError"),
            (mkey, "TamperedError"),
            (dropped.object_key, "UnexpectedObjectError"),
        ]
    )


def test_extra_object_under_a_shard_prefix(site: Path) -> None:
    key = "profiles/g000001/s00002/r/00000099.mgc"
    shutil.copyfile(obj(site, chunk_keys(site, "profiles", 2)[0]), obj(site, key))
    assert_only(site, key, "UnexpectedObjectError")
    stray = "videos/g000001/s00000/o/notes.txt"
    obj(site, stray).parent.mkdir(parents=True, exist_ok=True)
    obj(site, stray).write_bytes(b"left behind")
    code, doc = verify(site)
    assert code == 1
    assert problems(doc) == sorted(
        [(key, "UnexpectedObjectError"), (stray, "UnexpectedObjectError")]
    )


# --- valid chunks that are not the ones recorded ----------------------------------------


def test_stale_copy_of_a_chunk(site: Path) -> None:
    """The same plaintext sealed again (a fresh salt): valid, but not what the manifest lists."""
    api = Api(site)
    manifest = api.manifest("profiles", 0)
    ref = manifest.chunks[1]
    key = api.key("profiles")
    plain = read_chunk(api.store, manifest, ref, key)
    again = ChunkEncoder(3).encode(plain, chunk_identity(manifest, ref), key)
    obj(site, ref.object_key).write_bytes(again.data)
    doc = assert_only(site, ref.object_key, "TamperedError")
    assert "stale or replayed" in doc["problems"][0]["message"]


def test_chunk_resealed_with_other_content(site: Path) -> None:
    api = Api(site)
    manifest = api.manifest("metadata", 2)
    ref = manifest.chunks[0]
    key = api.key("metadata")
    plain = read_chunk(api.store, manifest, ref, key).replace(b"clip", b"CLIP")
    forged = ChunkEncoder(3).encode(plain, chunk_identity(manifest, ref), key)
    obj(site, ref.object_key).write_bytes(forged.data)
    assert_only(site, ref.object_key, "DigestMismatchError")


def test_wrapped_data_key_deleted_or_moved(site: Path) -> None:
    obj(site, "videos/_keys/datakey.json").unlink()
    shutil.copyfile(
        obj(site, "profiles/_keys/datakey.json"), obj(site, "sparse/_keys/datakey.json")
    )
    code, doc = verify(site)
    assert code == 1
    assert problems(doc) == [
        ("sparse/_keys/datakey.json", "MisplacedChunkError"),
        ("videos/_keys/datakey.json", "MissingObjectError"),
    ]


# --- keys ---------------------------------------------------------------------------------


def test_wrong_kek(site: Path) -> None:
    (site / "kek.key").unlink()
    made = run_cli("keys", "init", "kek.key", cwd=site)
    assert made.returncode == 0, made.stderr
    code, doc = verify(site)
    assert code == 1
    assert problems(doc) == sorted((f"{ds}/_keys/datakey.json", "WrongKeyError") for ds in DATASETS)
    assert doc["chunks_checked"] == 0

    restored = run_cli("restore", "plan.yaml", "--dataset", "videos", "--out", "out", cwd=site)
    assert restored.returncode == 4
    (line,) = restored.stderr.splitlines()
    assert line.startswith("migrator: error: ")
    assert "kek.key" in line  # names the KEK file the data key does not open with
    assert "Traceback" not in restored.stderr


# --- sampling -----------------------------------------------------------------------------


def test_sample_reads_fewer_chunks_but_every_nonempty_shard(site: Path) -> None:
    _, full = verify(site)
    code, sampled = verify(site, "--sample", "0.5", "--seed", "1")
    assert code == 0 and sampled["problems"] == []
    assert sampled["chunks_listed"] == full["chunks_listed"]
    assert 0 < sampled["chunks_checked"] < full["chunks_checked"]
    _, again = verify(site, "--sample", "0.5", "--seed", "1")
    assert again["chunks_checked"] == sampled["chunks_checked"]  # a seed repeats the sample


class RecordingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.got: list[str] = []

    def get(self, key: str) -> bytes:
        self.got.append(key)
        return super().get(key)


@pytest.mark.parametrize("sample", [0.5, 0.01])
def test_sample_reads_at_least_one_chunk_a_nonempty_shard(site: Path, sample: float) -> None:
    api = Api(site)
    store = RecordingStore(site / "dest" / "t")
    with open_state(api.plan) as state:
        report = Verifier(api.plan, store, api.provider, state, sample=sample, seed=1).verify()
    assert report.ok
    assert report.chunks_checked < report.chunks_listed
    nonempty = 0
    for dataset, shards in DATASETS.items():
        for shard in range(shards):
            listed = {ref.object_key for ref in api.manifest(dataset, shard).chunks}
            read = listed & set(store.got)
            if listed:
                nonempty += 1
                assert read, (dataset, shard)
    assert nonempty < sum(DATASETS.values())  # the plan does have empty shards
    assert report.chunks_checked >= nonempty


# --- restore of damaged data --------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "damage"),
    [("profiles", "flip"), ("metadata", "swap"), ("videos", "flip"), ("profiles", "delete")],
)
def test_restore_of_damaged_dataset_fails_naming_the_object(
    site: Path, dataset: str, damage: str
) -> None:
    key = chunk_keys(site, dataset, 1)[0]
    if damage == "flip":
        flip_bit(obj(site, key), -20)
    elif damage == "swap":
        shutil.copyfile(obj(site, chunk_keys(site, dataset, 0)[0]), obj(site, key))
    else:
        obj(site, key).unlink()
    done = run_cli("restore", "plan.yaml", "--dataset", dataset, "--out", "out", cwd=site)
    assert done.returncode == 4, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"migrator: error: {key}: ")
    assert "Traceback" not in done.stderr
    # Nothing half-written is left behind.
    assert [p.name for p in (site / "out").rglob(".*")] == []

    debug = run_cli(
        "--debug", "restore", "plan.yaml", "--dataset", dataset, "--out", "out2", cwd=site
    )
    assert debug.returncode == 4
    assert "Traceback (most recent call last)" in debug.stderr


def test_table_output_names_the_object_and_the_error(site: Path) -> None:
    key = chunk_keys(site, "profiles", 1)[0]
    flip_bit(obj(site, key), -3)
    done = run_cli("verify", "plan.yaml", cwd=site)
    assert done.returncode == 1
    row = next(line for line in done.stdout.splitlines() if "TamperedError" in line)
    assert key in row and "profiles" in row
    assert "verify FAILED (1 problems)" in done.stdout
