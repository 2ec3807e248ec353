"""Landing objects into a bucket: each at its name, whole, resumable, and read back."""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import xxhash

from migrator.codec.digests import MOD, object_digest
from migrator.errors import LandingError, StoreError
from migrator.landing.bucket import (
    META_GENERATION,
    META_SIZE,
    META_VERSION,
    META_XXH3,
    META_XXH3_PARTS,
    BucketObjects,
    part_length,
    recut,
)
from migrator.landing.target import LandedObject, ObjectsGeneration
from migrator.sharding import shard_of
from migrator.stores.base import Buffer, ObjectStore, PartInfo
from migrator.stores.local import LocalStore
from migrator.stores.memory import MemoryStore

SHARDS = 3
CHUNK = 1000  # the archive's plaintext bytes a part
NAMES = ["clip one.mp4", "café/été 2024/ü.bin", "a/b/c/d/e/deep.dat", "empty", "big/video.mov"]


class MultipartMemory(MemoryStore):
    """MemoryStore with S3-like multipart uploads, remembering what each upload was given."""

    multipart_threshold = 2 * CHUNK
    part_size = CHUNK

    def __init__(self) -> None:
        super().__init__()
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.upload_keys: dict[str, str] = {}
        self.begun: dict[str, dict[str, str]] = {}
        self.completed: dict[str, dict[str, str]] = {}
        self.aborted: list[str] = []

    def begin_upload(self, key: str, metadata: dict[str, str]) -> str:
        upload_id = f"u{len(self.uploads) + len(self.aborted)}"
        self.uploads[upload_id] = {}
        self.upload_keys[upload_id] = key
        self.begun[key] = dict(metadata)
        return upload_id

    def uploaded_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        return None

    def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> PartInfo:
        self.requests["part"] += 1
        self.uploads[upload_id][number] = bytes(data)
        return PartInfo(number, len(data), f"etag-{number}")

    def complete_upload(
        self, key: str, upload_id: str, parts: builtins.list[PartInfo], metadata: dict[str, str]
    ) -> None:
        held = self.uploads.pop(upload_id)
        data = b"".join(held[p.number] for p in sorted(parts, key=lambda p: p.number))
        self.completed[key] = dict(metadata)
        self._objects[key] = (data, dict(metadata))

    def abort_upload(self, key: str, upload_id: str) -> None:
        self.aborted.append(upload_id)
        self.uploads.pop(upload_id, None)

    def list_uploads(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        held = [(self.upload_keys[u], u) for u in self.uploads]
        return iter([(key, u) for key, u in held if key.startswith(prefix)])


@pytest.fixture(params=["memory", "multipart", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "multipart":
        return MultipartMemory()
    return LocalStore(tmp_path / "landed", fsync=False)


def content_of(name: str, version: str, size: int) -> bytes:
    seed = hashlib.sha256(f"{name}\0{version}".encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def landed(name: str, version: str, data: bytes, fail_at: int | None = None) -> LandedObject:
    pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]

    def parts() -> Iterator[bytes]:
        for index, piece in enumerate(pieces):
            if index == fail_at:
                raise StoreError("archive unreachable")
            yield piece

    return LandedObject(
        name=name,
        size=len(data),
        version=version,
        parts=parts,
        part_sizes=tuple(map(len, pieces)),
        part_xxh3=tuple(xxhash.xxh3_128_hexdigest(p) for p in pieces),
    )


Source = dict[str, tuple[str, bytes]]  # name: (version, bytes)


def source(versions: dict[str, str]) -> Source:
    sizes = {"empty": 0, "big/video.mov": 5 * CHUNK + 321}
    return {n: (v, content_of(n, v, sizes.get(n, 700))) for n, v in versions.items()}


def changes(
    before: Source | None, after: Source, generation: int, *, replace: bool = False
) -> list[ObjectsGeneration]:
    """One generation for every shard: a base of `after`, or the delta from `before`."""
    out = []
    for shard in range(SHARDS):
        mine = {n: v for n, v in after.items() if shard_of(n.encode(), SHARDS) == shard}
        old = {} if before is None else before
        went = {n for n in old if n not in after and shard_of(n.encode(), SHARDS) == shard}
        came = mine if before is None else {n: v for n, v in mine.items() if old.get(n) != v}
        out.append(
            ObjectsGeneration(
                dataset="videos",
                shard=shard,
                generation=generation,
                base=before is None,
                removed=frozenset(went),
                objects=[landed(n, v, data) for n, (v, data) in sorted(came.items())],
                replace=replace,
            )
        )
    return out


def expected_digests(src: Source) -> dict[int, tuple[int, int]]:
    out = dict.fromkeys(range(SHARDS), (0, 0))
    for name, (version, data) in src.items():
        digest, count = out[shard_of(name.encode(), SHARDS)]
        out[shard_of(name.encode(), SHARDS)] = (
            (digest + object_digest(name, len(data), version)) % MOD,
            count + 1,
        )
    return out


def check_landed(target: BucketObjects, store: ObjectStore, src: Source) -> None:
    assert sorted(info.key for info in store.list()) == sorted(src)
    for name, (version, data) in src.items():
        assert store.get(name) == data, name
        info = store.head(name)
        assert info is not None
        assert info.metadata[META_VERSION] == version
        assert info.metadata[META_SIZE] == str(len(data))
    contents = target.contents(SHARDS)
    for shard, (digest, count) in expected_digests(src).items():
        assert (contents[shard].digest, contents[shard].count) == (digest, count)
        assert contents[shard].problems == []


def land(target: BucketObjects, generations: list[ObjectsGeneration]) -> None:
    for change in generations:
        target.apply(change)


def test_a_base_then_syncs_land_the_source_byte_for_byte(store: ObjectStore) -> None:
    target = BucketObjects(store, dataset="videos", part_size=2 * CHUNK, shards=SHARDS)
    first = source(dict.fromkeys(NAMES, "v1"))
    land(target, changes(None, first, 1))
    check_landed(target, store, first)
    second = source({**dict.fromkeys(NAMES, "v1"), "big/video.mov": "v2", "new/one.txt": "v1"})
    del second["clip one.mp4"]
    land(target, changes(first, second, 2))
    check_landed(target, store, second)
    third = source({n: "v3" for n in second if n != "a/b/c/d/e/deep.dat"})
    land(target, changes(second, third, 3))
    check_landed(target, store, third)


def test_applying_a_generation_twice_sends_nothing_again() -> None:
    store = MultipartMemory()
    target = BucketObjects(store, dataset="videos", part_size=2 * CHUNK, shards=SHARDS)
    src = source(dict.fromkeys(NAMES, "v1"))
    land(target, changes(None, src, 1))
    sent = (store.requests["put"], store.requests["part"], len(store.completed))
    land(target, changes(None, src, 1))
    assert (store.requests["put"], store.requests["part"], len(store.completed)) == sent
    check_landed(target, store, src)


class FailingPuts(MemoryStore):
    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        if self.requests["put"] + 1 == self.fail_at:
            self.requests["put"] += 1
            raise StoreError(f"{key}: put failed (injected)")
        super().put(key, data, metadata)


def test_a_resumed_landing_sends_only_what_it_had_not_landed() -> None:
    store = FailingPuts(fail_at=3)
    target = BucketObjects(store, dataset="videos", part_size=10 * CHUNK, shards=1, workers=1)
    src = source({f"f{i}": "v1" for i in range(6)})
    base = ObjectsGeneration(
        "videos", 0, 1, True, frozenset(), [landed(n, v, d) for n, (v, d) in sorted(src.items())]
    )
    with pytest.raises(StoreError, match="injected"):
        target.apply(base)
    assert store.requests["put"] == 3
    target.apply(base)
    assert store.requests["put"] == 3 + 4  # the failed one and the three never tried
    assert {info.key: store.get(info.key) for info in store.list()} == {
        n: d for n, (_, d) in src.items()
    }


def test_a_base_that_replaces_deletes_only_its_shards_other_names() -> None:
    store = MemoryStore()
    target = BucketObjects(store, dataset="videos", part_size=2 * CHUNK, shards=SHARDS)
    names = [f"n{i}/clip.bin" for i in range(30)]
    ours = [n for n in names if shard_of(n.encode(), SHARDS) == 0]
    fresh = next(f"fresh{i}" for i in range(99) if shard_of(f"fresh{i}".encode(), SHARDS) == 0)
    old = source(dict.fromkeys(names, "v1"))
    land(target, changes(None, old, 1))
    # a compacted chain's base for shard 0: one object kept, one rewritten, one new, rest gone
    new = source({ours[0]: "v1", ours[1]: "v2", fresh: "v1"})
    base = changes(None, new, 5, replace=True)[0]
    store.requests.clear()
    target.apply(base)
    others = {n for n in names if n not in ours}
    assert {info.key for info in store.list()} == others | set(new)
    assert store.requests["put"] == 2  # the unchanged object is not sent again
    assert target.contents(SHARDS)[0].count == 3


def test_contents_name_objects_changed_behind_landings_back() -> None:
    store = MemoryStore()
    target = BucketObjects(store, dataset="videos", part_size=2 * CHUNK, shards=SHARDS)
    src = source(dict.fromkeys(NAMES, "v1"))
    land(target, changes(None, src, 1))
    store.put("clip one.mp4", b"overwritten by hand")  # metadata dropped
    info = store.head("café/été 2024/ü.bin")
    assert info is not None
    store.put("café/été 2024/ü.bin", store.get(info.key) + b"!", info.metadata)  # size changed
    store.put("stray.txt", b"not landed")
    contents = target.contents(SHARDS)
    problems = [p for c in contents.values() for p in c.problems]
    assert any("'clip one.mp4' has no migrator metadata" in p for p in problems)
    assert any("'café/été 2024/ü.bin' is 701 bytes, landed as 700" in p for p in problems)
    assert any("'stray.txt'" in p for p in problems)
    expected = expected_digests(src)
    for name in ("clip one.mp4", "café/été 2024/ü.bin", "stray.txt"):
        shard = shard_of(name.encode(), SHARDS)
        assert contents[shard].digest != expected[shard][0]


def test_a_large_object_streams_up_in_parts_with_its_metadata_from_the_start() -> None:
    store = MultipartMemory()
    target = BucketObjects(store, dataset="videos", part_size=1500, shards=1)
    data = content_of("big", "v1", 5 * CHUNK + 321)
    target.apply(ObjectsGeneration("videos", 0, 7, True, frozenset(), [landed("big", "v1", data)]))
    assert store.get("big") == data
    assert store.requests["put"] == 0 and store.requests["part"] == 4  # 1500 × 3 + 821
    assert store.begun["big"] == store.completed["big"]  # no late metadata (no S3 copy)
    digests = b"".join(xxhash.xxh3_128_digest(data[i : i + CHUNK]) for i in range(0, 6000, CHUNK))
    assert store.completed["big"] == {
        META_VERSION: "v1",
        META_SIZE: str(len(data)),
        META_GENERATION: "7",
        META_XXH3: xxhash.xxh3_128_hexdigest(digests),
        META_XXH3_PARTS: f"6x{CHUNK}",
    }


def test_a_one_part_object_carries_its_plaintext_digest() -> None:
    store = MemoryStore()
    target = BucketObjects(store, dataset="videos", part_size=CHUNK, shards=1)
    data = content_of("one", "v1", 999)
    target.apply(ObjectsGeneration("videos", 0, 1, True, frozenset(), [landed("one", "v1", data)]))
    info = store.head("one")
    assert info is not None and info.metadata[META_XXH3] == xxhash.xxh3_128_hexdigest(data)


def test_a_failed_stream_aborts_its_upload_and_lands_nothing() -> None:
    store = MultipartMemory()
    target = BucketObjects(store, dataset="videos", part_size=CHUNK, shards=1)
    data = content_of("big", "v1", 4 * CHUNK)
    broken = landed("big", "v1", data, fail_at=2)
    with pytest.raises(StoreError, match="archive unreachable"):
        target.apply(ObjectsGeneration("videos", 0, 1, True, frozenset(), [broken]))
    assert store.aborted == ["u0"] and store.head("big") is None


def test_an_upload_a_killed_landing_left_is_aborted() -> None:
    store = MultipartMemory()
    left = store.begin_upload("big", {})
    other = store.begin_upload("big.bak", {})
    target = BucketObjects(store, dataset="videos", part_size=CHUNK, shards=1)
    data = content_of("big", "v1", 3 * CHUNK)
    target.apply(ObjectsGeneration("videos", 0, 1, True, frozenset(), [landed("big", "v1", data)]))
    assert store.aborted == [left] and list(store.uploads) == [other]
    assert store.get("big") == data


def test_parts_that_are_not_the_manifests_are_refused() -> None:
    store = MemoryStore()
    target = BucketObjects(store, dataset="videos", part_size=CHUNK, shards=1)
    good = landed("x", "v1", b"a" * 10)
    bad = LandedObject("x", 10, "v1", lambda: iter([b"b" * 10]), (10,), good.part_xxh3)
    with pytest.raises(LandingError, match="part 1 is not the part its manifest names"):
        target.apply(ObjectsGeneration("videos", 0, 1, True, frozenset(), [bad]))
    assert store.head("x") is None


class AzureLike(MemoryStore):
    def describe(self) -> str:
        return "azure://127.0.0.1/devstoreaccount1/landing/"


@pytest.mark.parametrize(
    ("make", "name", "reason"),
    [
        (MemoryStore, "tab\there", "control character U+0009"),
        (MemoryStore, "a/../b", "'..' component"),
        (MemoryStore, "x" * 200 + "/" + "y" * 900, "over 1,024"),
        (AzureLike, "back\\slash", "backslash"),
        (AzureLike, "dir./file", "ending in '.'"),
    ],
)
def test_names_a_store_cannot_hold_are_named_and_the_rest_land(
    make: Callable[[], MemoryStore], name: str, reason: str
) -> None:
    store = make()
    target = BucketObjects(store, dataset="videos", part_size=CHUNK, shards=1)
    objects = [landed(name, "v1", b"1"), landed("fine.txt", "v1", b"2")]
    with pytest.raises(LandingError, match=re.escape(reason)) as caught:
        target.apply(ObjectsGeneration("videos", 0, 1, True, frozenset(), objects))
    assert repr(name)[:40] in str(caught.value)
    assert [info.key for info in store.list()] == ["fine.txt"]


def test_part_length_grows_past_the_part_limit() -> None:
    assert part_length(10 * CHUNK, CHUNK) == CHUNK
    size = 5 << 40  # 5 TiB, S3's largest object
    assert part_length(size, 16 << 20) * 10_000 >= size
    assert part_length(size, 16 << 20) % (1 << 20) == 0


def test_recut_gives_exact_blocks_whatever_the_pieces() -> None:
    pieces = [b"a" * 7, b"b" * 3, b"c" * 12, b"", b"d"]
    blocks = [bytes(b) for b in recut(pieces, 5)]
    assert b"".join(blocks) == b"".join(pieces)
    assert [len(b) for b in blocks] == [5, 5, 5, 5, 3]
