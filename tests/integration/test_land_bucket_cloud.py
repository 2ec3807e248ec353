"""Landing into moto (S3 under SSE-KMS) and Azurite (under an encryption scope): a base and a
sync land byte for byte, large objects in parts, and the landed digests read back agree."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import boto3
import pytest
import xxhash
from azure.core.pipeline.transport import (
    HttpRequest,
    HttpResponse,
    HttpTransport,
    RequestsTransport,
)

from migrator.codec.digests import MOD, object_digest, record_digest
from migrator.demo.motoserver import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, s3_client
from migrator.landing.bucket import META_GENERATION, META_VERSION, BucketObjects
from migrator.landing.shard_files import BucketShardFiles
from migrator.landing.target import LandedObject, ObjectsGeneration
from migrator.sharding import shard_of
from migrator.stores.azure import AzureBlobStore
from migrator.stores.base import ObjectStore
from migrator.stores.s3 import S3Store
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

SHARDS = 2
CHUNK = 48 * 1024  # the archive's plaintext bytes a part
PART = 32 * 1024  # the landing's part size: large objects are re-cut as they stream
SIZES = {"videos/big one.mov": 5 * CHUNK + 77, "empty": 0}
NAMES = ["videos/big one.mov", "café/été 2024/ü.bin", "a/b/c/d/deep.dat", "empty", "top.txt"]

Source = dict[str, tuple[str, bytes]]  # name: (version, bytes)


def source(versions: dict[str, str]) -> Source:
    def data(name: str, version: str) -> bytes:
        size = SIZES.get(name, 3000)
        seed = hashlib.sha256(f"{name}\0{version}".encode()).digest()
        return (seed * (size // 32 + 1))[:size]

    return {name: (version, data(name, version)) for name, version in versions.items()}


def landed(name: str, version: str, data: bytes) -> LandedObject:
    pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    return LandedObject(
        name,
        len(data),
        version,
        lambda: iter(pieces),
        tuple(map(len, pieces)),
        tuple(xxhash.xxh3_128_hexdigest(p) for p in pieces),
    )


def land(target: BucketObjects, before: Source | None, after: Source, generation: int) -> None:
    for shard in range(SHARDS):
        ours = {n: v for n, v in after.items() if shard_of(n.encode(), SHARDS) == shard}
        old = before or {}
        came = {n: v for n, v in ours.items() if old.get(n) != v}
        went = {n for n in old if n not in after and shard_of(n.encode(), SHARDS) == shard}
        objects = [landed(n, v, d) for n, (v, d) in sorted(came.items())]
        target.apply(
            ObjectsGeneration("videos", shard, generation, before is None, frozenset(went), objects)
        )


def check(target: BucketObjects, store: ObjectStore, src: Source) -> None:
    assert sorted(info.key for info in store.list()) == sorted(src)
    for name, (_, data) in src.items():
        assert store.get(name) == data, name
    expected = dict.fromkeys(range(SHARDS), (0, 0))
    for name, (version, data) in src.items():
        shard = shard_of(name.encode(), SHARDS)
        digest, count = expected[shard]
        expected[shard] = ((digest + object_digest(name, len(data), version)) % MOD, count + 1)
    contents = target.contents(SHARDS)
    assert {s: (c.digest, c.count) for s, c in contents.items()} == expected
    assert all(c.problems == [] for c in contents.values())


def round_trip(target: BucketObjects, store: ObjectStore) -> None:
    first = source(dict.fromkeys(NAMES, "v1"))
    land(target, None, first, 1)
    check(target, store, first)
    second = source({**dict.fromkeys(NAMES, "v1"), "videos/big one.mov": "v2", "new.txt": "v1"})
    del second["top.txt"]
    land(target, first, second, 2)
    check(target, store, second)
    land(target, first, second, 2)  # applied again: nothing changes
    check(target, store, second)
    info = store.head("videos/big one.mov")
    assert info is not None
    assert (info.metadata[META_VERSION], info.metadata[META_GENERATION]) == ("v2", "2")


# --- S3 (moto) under SSE-KMS --------------------------------------------------------------


@pytest.fixture
def kms_key_arn(s3_bucket: tuple[str, str]) -> str:
    kms = boto3.session.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
        region_name="us-east-1",
    ).client("kms", endpoint_url=s3_bucket[0])
    return str(kms.create_key(Description="landing owner's key")["KeyMetadata"]["Arn"])


@pytest.fixture
def s3_landing(
    s3_bucket: tuple[str, str], s3_proxy: FaultProxy, kms_key_arn: str, small_s3_parts: int
) -> S3Store:
    return S3Store(
        s3_bucket[1],
        "landed/",
        endpoint_url=s3_proxy.url,
        sse_kms_key_id=kms_key_arn,
        part_size=PART,
        multipart_threshold=PART,
        allow_small_parts=True,
    )


def test_s3_landing_is_byte_for_byte_under_the_owners_key(
    s3_landing: S3Store, s3_bucket: tuple[str, str], s3_proxy: FaultProxy, kms_key_arn: str
) -> None:
    target = BucketObjects(s3_landing, dataset="videos", part_size=PART, shards=SHARDS)
    round_trip(target, s3_landing)
    assert s3_proxy.count("PUT", query_has="partNumber") >= 2 * 8  # the large object, twice
    assert s3_proxy.count("PUT", header="x-amz-copy-source") == 0  # metadata from the start
    raw = s3_client(s3_bucket[0])
    for info in s3_landing.list():
        head: Any = raw.head_object(Bucket=s3_bucket[1], Key="landed/" + info.key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", kms_key_arn)


def test_s3_shard_files_land_under_the_owners_key(
    s3_landing: S3Store, s3_bucket: tuple[str, str], kms_key_arn: str
) -> None:
    files = BucketShardFiles(s3_landing, dataset="users", fmt="csv", delimiter=",", key="id")
    rows = [b'%d,"line\nbreak %d",%s' % (i, i, b"x" * 40) for i in range(2000)]  # > one part
    files.write_shard(1, 3, ("id", "note", "pad"), rows)
    content = files.content(1)
    digest = sum(int.from_bytes(record_digest(r)) for r in rows) % MOD
    assert (content.digest, content.count, content.problems) == (digest, 2000, [])
    assert files.landed_generation(1) == 3
    head: Any = s3_client(s3_bucket[0]).head_object(
        Bucket=s3_bucket[1], Key="landed/users/shard-00001.csv"
    )
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", kms_key_arn)


# --- Azure (Azurite) under an encryption scope --------------------------------------------


class ScopeLog(HttpTransport[HttpRequest, HttpResponse]):
    """The real transport, keeping each write's x-ms-encryption-scope header."""

    def __init__(self) -> None:
        self._inner = RequestsTransport(use_env_settings=False)
        self._lock = threading.Lock()
        self.writes: list[str | None] = []

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if request.method == "PUT":
            with self._lock:
                self.writes.append(request.headers.get("x-ms-encryption-scope"))
        response: HttpResponse = self._inner.send(request, **kwargs)
        return response

    def open(self) -> None:
        self._inner.open()

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> ScopeLog:
        self.open()
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


@pytest.fixture
def scope_log() -> ScopeLog:
    return ScopeLog()


@pytest.fixture
def azure_landing(azure_container: tuple[str, str, str], scope_log: ScopeLog) -> AzureBlobStore:
    connection_string, name, _ = azure_container
    return AzureBlobStore(
        name,
        "landed",
        connection_string=connection_string,
        part_size=PART,
        multipart_threshold=PART,
        transport=scope_log,
        encryption_scope="owner-scope",
    )


def test_azure_landing_round_trips_under_the_encryption_scope(
    azure_landing: AzureBlobStore, scope_log: ScopeLog
) -> None:
    target = BucketObjects(azure_landing, dataset="videos", part_size=PART, shards=SHARDS)
    round_trip(target, azure_landing)
    # Azurite accepts the header and ignores it; Azure writes each blob under the scope
    assert len(scope_log.writes) > 8 and set(scope_log.writes) == {"owner-scope"}


def test_azure_shard_files_round_trip(azure_landing: AzureBlobStore) -> None:
    files = BucketShardFiles(
        azure_landing, dataset="profiles", fmt="jsonl", delimiter=",", key="id"
    )
    rows = [b'{"id":%d,"v":"%s"}' % (i, b"y" * 30) for i in range(3000)]
    files.write_shard(0, 2, None, rows)
    files.write_shard(0, 3, None, rows[:10])
    content = files.content(0)
    digest = sum(int.from_bytes(record_digest(r)) for r in rows[:10]) % MOD
    assert (content.digest, content.count, content.problems) == (digest, 10, [])
    assert files.landed_generation(0) == 3
