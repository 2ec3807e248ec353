"""S3 (moto) and Azure Blob (Azurite) as sources: listing, streaming, ranges, changed objects,
and whole runs that read their datasets from a bucket or a container."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient
from botocore.exceptions import ResponseStreamingError

from migrator.demo.azurite import ACCOUNT_KEY
from migrator.demo.motoserver import s3_client
from migrator.errors import SourceError, UsageError
from migrator.keys.local import LocalKeyProvider
from migrator.plan.model import DatasetPlan, Plan, load_plan
from migrator.read.restore import Restorer
from migrator.read.verify import Verifier
from migrator.sources.azure import AzureSource
from migrator.sources.base import FilteredSource, Source, SourceObject
from migrator.sources.factory import open_source
from migrator.sources.s3 import S3Source
from migrator.state.db import StateDB
from migrator.stores.local import LocalStore
from migrator.write.run import MigrationRun
from tests.planfiles import (
    files_below,
    restored_records,
    write_objects,
    write_plan,
    write_profiles,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BIG = 5 * MiB + 12_345  # several download chunks, and a last partial one
Put = Callable[[str, bytes], None]


# --- the two backends behind one set of tests -------------------------------------------


class Backend:
    """A fresh bucket or container: put blobs, and make sources on it."""

    def __init__(self, kind: str, put: Put, make: Callable[..., Source], missing: Source) -> None:
        self.kind = kind
        self.put = put
        self.make = make  # (prefix="", page_size=...) -> the bare source
        self.missing = missing  # a source on a bucket/container that does not exist


def s3_backend(s3_bucket: tuple[str, str]) -> Backend:
    endpoint, bucket = s3_bucket
    client = s3_client(endpoint)

    def put(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=data)

    def make(prefix: str = "", page_size: int = 1000) -> Source:
        return S3Source(bucket, prefix, endpoint_url=endpoint, page_size=page_size)

    return Backend("s3", put, make, S3Source("no-such-bucket-here", endpoint_url=endpoint))


def azure_backend(azure_container: tuple[str, str, str]) -> Backend:
    connection_string, name, blob_url = azure_container
    client = ContainerClient.from_connection_string(connection_string, name)

    def put(key: str, data: bytes) -> None:
        client.upload_blob(key, data, overwrite=True)

    def make(prefix: str = "", page_size: int = 5000, **kwargs: Any) -> Source:
        return AzureSource(
            name,
            prefix,
            account_url=blob_url,
            connection_string=connection_string,
            page_size=page_size,
            **kwargs,
        )

    missing = AzureSource(
        "no-such-container", account_url=blob_url, connection_string=connection_string
    )
    return Backend("azure", put, make, missing)


@pytest.fixture(params=["s3", "azure"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "s3":
        return s3_backend(request.getfixturevalue("s3_bucket"))
    return azure_backend(request.getfixturevalue("azure_container"))


def read_all(source: Source, obj: SourceObject, piece: int) -> bytes:
    out = bytearray()
    with source.open(obj) as fh:
        while block := fh.read(piece):
            assert len(block) <= piece
            out += block
    return bytes(out)


def only(source: Source, name: str) -> SourceObject:
    (obj,) = [o for o in source.list() if o.name == name]
    return obj


# --- listing ------------------------------------------------------------------------------


def test_list_pages_in_name_order_under_the_prefix(backend: Backend) -> None:
    names = [f"u{i:03d}/rec-{i % 7}.jsonl" for i in range(23)] + ["a b é.bin", "Z-upper.bin"]
    for i, name in enumerate(names):
        backend.put(f"data/{name}", b"x" * i)
    backend.put("data-other/outside.jsonl", b"not under the prefix")
    backend.put("outside.jsonl", b"not under the prefix")
    backend.put("data/u000/", b"")  # a "folder" placeholder: not an object

    source = backend.make("data", page_size=4)  # 25 objects: 7 pages
    listed = list(source.list())
    assert [o.name for o in listed] == sorted(names)
    assert {o.name: o.size for o in listed} == {n: i for i, n in enumerate(names)}
    assert all(o.version and '"' not in o.version for o in listed)
    assert source.describe().endswith("/data/")
    assert source.location(listed[0]).endswith(f"/data/{listed[0].name}")

    filtered = FilteredSource(source, ["u00[0-4]/*", "*.bin"])
    assert [o.name for o in filtered.list()] == sorted(
        [n for n in names if n.startswith(("u000/", "u001/", "u002/", "u003/", "u004/"))]
        + ["Z-upper.bin", "a b é.bin"]
    )
    assert [o.name for o in backend.make().list()][:1] == ["data-other/outside.jsonl"]


def test_s3_list_requests_a_page_at_a_time(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    client = s3_client(endpoint)
    for i in range(10):
        client.put_object(Bucket=bucket, Key=f"k{i:02d}", Body=b"")
    calls: list[str] = []
    client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: calls.append("x"))
    source = S3Source(bucket, client=client, page_size=3)
    listing = source.list()
    assert next(listing).name == "k00"
    assert len(calls) == 1  # streamed: the rest is not fetched before it is needed
    assert [o.name for o in listing] == [f"k{i:02d}" for i in range(1, 10)]
    assert len(calls) == 4


def test_missing_bucket_or_container_is_named(backend: Backend) -> None:
    wanted = "no-such-bucket-here" if backend.kind == "s3" else "no-such-container"
    with pytest.raises(SourceError, match=wanted) as err:
        list(backend.missing.list())
    assert "does not exist" in str(err.value)
    assert ACCOUNT_KEY not in str(err.value)


# --- reading ------------------------------------------------------------------------------


def test_open_streams_the_object_in_pieces(backend: Backend) -> None:
    data = random.Random(5).randbytes(BIG)
    backend.put("v/big.mp4", data)
    backend.put("v/empty.mp4", b"")
    source = backend.make("v")
    big = only(source, "big.mp4")
    assert big.size == BIG
    assert read_all(source, big, 1 * MiB) == data
    assert read_all(source, big, 777_777) == data
    with source.open(big) as fh:
        assert fh.read() == data
    assert read_all(source, only(source, "empty.mp4"), 1024) == b""


def test_read_range_at_several_offsets(backend: Backend) -> None:
    data = random.Random(6).randbytes(BIG)
    backend.put("big.bin", data)
    source = backend.make()
    obj = only(source, "big.bin")
    part = 2 * MiB
    for offset in range(0, BIG, part):  # the last part is a partial one
        length = min(part, BIG - offset)
        assert source.read_range(obj, offset, length) == data[offset : offset + length]
    assert source.read_range(obj, 12_345, 1) == data[12_345:12_346]
    assert source.read_range(obj, BIG - 1, 1) == data[-1:]
    assert source.read_range(obj, 100, 0) == b""
    assert source.read_range(obj, BIG, 0) == b""
    with pytest.raises(SourceError, match="outside"):
        source.read_range(obj, BIG - 10, 11)


def test_an_object_overwritten_after_listing_is_refused(backend: Backend) -> None:
    backend.put("p/clip.mp4", b"first version " * 1000)
    source = backend.make("p")
    obj = only(source, "clip.mp4")
    backend.put("p/clip.mp4", b"second version" * 1000)  # same size, new content
    with pytest.raises(SourceError, match="changed since it was listed") as err:
        source.read_range(obj, 0, 100)
    assert "p/clip.mp4" in str(err.value)
    with pytest.raises(SourceError, match="changed since it was listed"):
        source.open(obj)
    assert source.read_range(only(source, "clip.mp4"), 0, 14) == b"second version"


def test_an_object_deleted_after_listing_is_named(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    s3_client(endpoint).put_object(Bucket=bucket, Key="gone.bin", Body=b"abc")
    source = S3Source(bucket, endpoint_url=endpoint)
    obj = only(source, "gone.bin")
    s3_client(endpoint).delete_object(Bucket=bucket, Key="gone.bin")
    with pytest.raises(SourceError, match=f"s3://{bucket}/gone.bin: deleted"):
        source.read_range(obj, 0, 3)


def test_azure_blob_overwritten_while_streaming_is_refused(
    azure_container: tuple[str, str, str],
) -> None:
    """Later chunks are requested under the first response's ETag, not just the first."""
    backend = azure_backend(azure_container)
    data = random.Random(7).randbytes(3 * MiB)
    backend.put("live.bin", data)
    source = backend.make(chunk_size=1 * MiB)
    with source.open(only(source, "live.bin")) as fh:
        assert fh.read(1000) == data[:1000]
        backend.put("live.bin", data[::-1])
        with pytest.raises(SourceError, match="changed since it was listed"):
            fh.read()


class CutShortBody:
    """A body whose connection drops after `keep` bytes."""

    def __init__(self, inner: Any, keep: int) -> None:
        self.inner = inner
        self.keep = keep

    def read(self, amt: int) -> bytes:
        if self.keep <= 0:
            raise ResponseStreamingError(error="connection reset by peer")
        data = self.inner.read(min(amt, self.keep))
        self.keep -= len(data)
        return bytes(data)

    def readinto(self, buffer: memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()


class FlakyClient:
    """An S3 client whose first `cuts` GetObject bodies end early."""

    def __init__(self, inner: Any, cuts: int, keep: int) -> None:
        self.inner = inner
        self.cuts = cuts
        self.keep = keep
        self.gets: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_object(self, **request: Any) -> Any:
        self.gets.append(request.get("Range", ""))
        response = self.inner.get_object(**request)
        if self.cuts > 0:
            self.cuts -= 1
            response["Body"] = CutShortBody(response["Body"], self.keep)
        return response


def test_s3_body_cut_short_is_resumed_where_it_stopped(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    data = random.Random(8).randbytes(1 * MiB)
    s3_client(endpoint).put_object(Bucket=bucket, Key="cut.bin", Body=data)
    obj = only(S3Source(bucket, endpoint_url=endpoint), "cut.bin")

    flaky = FlakyClient(s3_client(endpoint), cuts=2, keep=100_000)
    source = S3Source(bucket, client=flaky)
    assert source.read_range(obj, 1000, 500_000) == data[1000:501_000]
    assert flaky.gets == ["bytes=1000-500999", "bytes=101000-500999", "bytes=201000-500999"]

    flaky = FlakyClient(s3_client(endpoint), cuts=1, keep=300_000)
    assert read_all(S3Source(bucket, client=flaky), obj, 64 * 1024) == data
    assert flaky.gets == ["", "bytes=300000-"]

    flaky = FlakyClient(s3_client(endpoint), cuts=5, keep=10)
    with pytest.raises(SourceError, match="kept ending early at byte 30"):
        S3Source(bucket, client=flaky).read_range(obj, 0, 1000)


# --- the plan's sources ----------------------------------------------------------------


def dataset(source: dict[str, Any], include: list[str] | None = None) -> DatasetPlan:
    return DatasetPlan.model_validate(
        {"name": "videos", "kind": "objects", "source": source, "shards": 2, "include": include}
    )


def test_open_source_builds_s3_and_azure_sources(
    s3_bucket: tuple[str, str],
    azure_container: tuple[str, str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, bucket = s3_bucket
    s3_client(endpoint).put_object(Bucket=bucket, Key="in/a.mp4", Body=b"a")
    s3_client(endpoint).put_object(Bucket=bucket, Key="in/b.txt", Body=b"b")
    plan = {"kind": "s3", "bucket": bucket, "prefix": "in", "endpoint_url": endpoint}
    source = open_source(dataset(plan, ["*.mp4"]))
    assert [o.name for o in source.list()] == ["a.mp4"]

    connection_string, name, blob_url = azure_container
    azure_backend(azure_container).put("in/c.mp4", b"c")
    azure = {"kind": "azure", "bucket": name, "prefix": "in", "account_url": blob_url}
    monkeypatch.setenv("SOURCE_BLOB_KEY", ACCOUNT_KEY)
    monkeypatch.setenv("SOURCE_BLOB_CONN", connection_string)
    for credential in (
        {"account_key_env": "SOURCE_BLOB_KEY"},
        {"connection_string_env": "SOURCE_BLOB_CONN"},
    ):
        source = open_source(dataset({**azure, **credential}))
        (obj,) = source.list()
        assert (obj.name, source.read_range(obj, 0, 1)) == ("c.mp4", b"c")

    monkeypatch.delenv("SOURCE_BLOB_KEY")
    with pytest.raises(UsageError, match="SOURCE_BLOB_KEY") as err:
        open_source(dataset({**azure, "account_key_env": "SOURCE_BLOB_KEY"}))
    assert "source.account_key_env" in str(err.value)


# --- whole runs reading from a bucket or a container -----------------------------------------


def upload_folder(put: Put, folder: Path, prefix: str) -> None:
    for name, data in files_below(folder).items():
        put(f"{prefix}/{name}", data)


def run_verify_restore(plan: Plan, out: Path) -> None:
    assert plan.keys.kek_file is not None
    store = LocalStore(plan.destination.path or out / "missing")
    provider = LocalKeyProvider(plan.keys.kek_file)
    with StateDB.sqlite_file(plan.state_dir / "state.sqlite") as state:
        report = MigrationRun(plan, store, provider, state).run()
        assert report.chunks_written > 0
        checked = Verifier(plan, store, provider, state).verify()
    assert checked.problems == []
    for ds in plan.datasets:
        Restorer(plan, store, provider).restore(ds.name, out / ds.name)


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_run_reads_records_and_objects_from_the_cloud(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    staging = tmp_path / "staging"
    records = write_profiles(staging / "profiles", 900)
    videos = write_objects(staging / "videos", [0, 1, 65_536, 150_000, 3000])
    if kind == "s3":
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        put = s3_backend((endpoint, bucket)).put
        where = f"kind: s3, bucket: {bucket}, region: us-east-1, endpoint_url: '{endpoint}'"
    else:
        container = request.getfixturevalue("azure_container")
        put = azure_backend(container).put
        connection_string, name, blob_url = container
        request.getfixturevalue("monkeypatch").setenv("OLD_BLOB_CONN", connection_string)
        where = (
            f"kind: azure, bucket: {name}, account_url: '{blob_url}',"
            " connection_string_env: OLD_BLOB_CONN"
        )
    upload_folder(put, staging / "profiles", "export/profiles")
    upload_folder(put, staging / "videos", "export/videos")
    put("export/profiles/README.txt", b"not a record")  # left out by `include`

    datasets = f"""\
  - {{name: profiles, kind: records, format: jsonl, key: user_id, shards: 3,
     source: {{{where}, prefix: export/profiles}}, include: ['*.jsonl']}}
  - {{name: videos, kind: objects, shards: 2, part_size: 64KiB,
     source: {{{where}, prefix: export/videos}}}}
"""
    (tmp_path / "dest").mkdir()
    plan = load_plan(
        write_plan(tmp_path, datasets=datasets, destination="{kind: local, path: dest}")
    )
    out = tmp_path / "restored"
    run_verify_restore(plan, out)
    assert restored_records(out / "profiles") == Counter(records)
    assert files_below(out / "videos") == videos
