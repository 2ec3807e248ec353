from __future__ import annotations

import base64
import hashlib
import socket
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config

from migrator.demo.motoserver import MotoServer, s3_client
from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import ObjectStore
from migrator.stores.s3 import S3Store
from tests.store_contract import CONTRACT_CHECKS, check_id, listed

pytestmark = pytest.mark.integration


@pytest.fixture(params=["", "runs/plan-1"], ids=["no-prefix", "prefix"])
def store(request: pytest.FixtureRequest, s3_bucket: tuple[str, str]) -> S3Store:
    endpoint_url, bucket = s3_bucket
    return S3Store(bucket, request.param, region="us-east-1", endpoint_url=endpoint_url)


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=check_id)
def test_contract(store: ObjectStore, check: Callable[[ObjectStore], None]) -> None:
    check(store)


def test_prefix_is_joined_to_keys_and_stripped_from_listings(s3_bucket: tuple[str, str]) -> None:
    endpoint_url, bucket = s3_bucket
    raw = s3_client(endpoint_url)
    raw.put_object(Bucket=bucket, Key="outside", Body=b"not ours")
    store = S3Store(bucket, "/runs/plan-1/", endpoint_url=endpoint_url, client=raw)
    store.put("shard/1", b"data")
    assert raw.get_object(Bucket=bucket, Key="runs/plan-1/shard/1")["Body"].read() == b"data"
    assert listed(store) == [("shard/1", 4)]
    assert store.describe() == f"s3://{bucket}/runs/plan-1/"


def test_list_pages_over_more_than_1000_keys(s3_bucket: tuple[str, str]) -> None:
    endpoint_url, bucket = s3_bucket
    raw = s3_client(endpoint_url)
    calls: list[str] = []
    raw.meta.events.register(
        "before-call.s3.ListObjectsV2", lambda **_: calls.append("list_objects_v2")
    )
    store = S3Store(bucket, "many", client=raw)
    keys = [f"k/{index:05d}" for index in range(1001)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: store.put(key, key.encode()), keys))
    store.put("other", b"outside the listed prefix")

    assert listed(store, "k/") == [(key, len(key)) for key in keys]
    assert len(calls) == 2


def test_default_checksum_crc32_is_stored(s3_bucket: tuple[str, str]) -> None:
    endpoint_url, bucket = s3_bucket
    data = b"chunk bytes" * 1000
    S3Store(bucket, endpoint_url=endpoint_url).put("c", data)
    head = s3_client(endpoint_url).head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert head.get("ChecksumCRC32") == expected


def test_chosen_checksum_algorithm_is_sent(s3_bucket: tuple[str, str]) -> None:
    # botocore adds CRC32 on its own when asked for nothing, so SHA256 proves ours is sent.
    endpoint_url, bucket = s3_bucket
    data = b"chunk bytes" * 1000
    store = S3Store(bucket, endpoint_url=endpoint_url, checksum_algorithm="SHA256")
    store.put("c", data)
    head = s3_client(endpoint_url).head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256") == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert store.get("c") == data


def test_unknown_checksum_algorithm_is_rejected() -> None:
    with pytest.raises(ValueError, match="MD5"):
        S3Store("bucket", checksum_algorithm="MD5", client=object())


def test_client_is_built_with_standard_retries_and_pool_size(moto_server: MotoServer) -> None:
    store = S3Store("bucket", endpoint_url=moto_server.endpoint_url, max_pool_connections=7)
    config: Any = store._client.meta.config
    # botocore stores max_attempts=8 (retries) as 9 attempts in all.
    assert config.retries == {"mode": "standard", "total_max_attempts": 9}
    assert config.max_pool_connections == 7


def test_missing_bucket_gives_store_error_naming_bucket(moto_server: MotoServer) -> None:
    store = S3Store("no-such-bucket-here", "p", endpoint_url=moto_server.endpoint_url)
    operations: list[Callable[[], object]] = [
        lambda: store.put("k", b"x"),
        lambda: store.get("k"),
        lambda: list(store.list()),
        lambda: store.delete("k"),
    ]
    for operation in operations:
        with pytest.raises(StoreError) as caught:
            operation()
        message = str(caught.value)
        assert "no-such-bucket-here" in message
        assert "NoSuchBucket" in message
        assert "testing" not in message  # never the credentials


def test_missing_key_is_missing_object_not_store_error(store: S3Store) -> None:
    with pytest.raises(MissingObjectError) as caught:
        store.get("shard/0007")
    assert caught.value.object_key == "shard/0007"
    assert store.describe() in str(caught.value)


def test_unreachable_endpoint_gives_store_error(s3_bucket: tuple[str, str]) -> None:
    _, bucket = s3_bucket
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    client = session.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        config=Config(proxies={}, retries={"mode": "standard", "max_attempts": 1}),
    )
    store = S3Store(bucket, client=client)
    with pytest.raises(StoreError) as caught:
        store.put("k", b"x")
    assert bucket in str(caught.value)
    assert "EndpointConnectionError" in str(caught.value)
