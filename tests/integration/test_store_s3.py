from __future__ import annotations

import base64
import hashlib
import socket
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.config import Config

from migrator.demo.motoserver import MotoServer, s3_client
from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import ObjectInfo, ObjectStore
from migrator.stores.s3 import GET_BODY_ATTEMPTS, S3Store
from tests.faultproxy import FaultProxy, matching
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


def test_client_defaults_adaptive_retries_timeouts_and_pool_size(moto_server: MotoServer) -> None:
    store = S3Store("bucket", endpoint_url=moto_server.endpoint_url, max_pool_connections=7)
    config: Any = store.client.meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 10}
    assert config.max_pool_connections == 7
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)
    assert store.multipart_threshold == 64 * 1024 * 1024
    assert store.part_size == 16 * 1024 * 1024


def test_client_takes_retry_and_timeout_settings(moto_server: MotoServer) -> None:
    store = S3Store(
        "bucket",
        endpoint_url=moto_server.endpoint_url,
        retry_mode="standard",
        max_attempts=4,
        connect_timeout=2.5,
        read_timeout=30,
    )
    config: Any = store.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (2.5, 30)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"retry_mode": "legacy"}, "retry_mode"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"read_timeout": 0}, "timeouts"),
        ({"max_pool_connections": 0}, "max_pool_connections"),
        ({"sse_kms_key_id": ""}, "sse_kms_key_id"),
    ],
)
def test_bad_client_settings_are_rejected(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Store("bucket", client=object(), **arguments)


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


# --- GovCloud endpoints: resolved locally, no request leaves the machine -------------------


class _EmptyBody:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


def resolved_object_url(store: S3Store) -> str:
    """The URL botocore signs for a HEAD of one object; answered here, never sent."""
    urls: list[str] = []

    def answer_locally(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        urls.append(request.url)
        return AWSResponse(request.url, 404, HTTPHeaders(), _EmptyBody())

    events: Any = store.client.meta.events  # the stubs expect handlers to return None
    events.register_first("before-send.s3.HeadObject", answer_locally)
    assert store.head("object") is None
    return urls[0]


@pytest.mark.parametrize("region", ["us-gov-west-1", "us-gov-east-1"])
def test_govcloud_regions_use_fips_endpoints(region: str) -> None:
    store = S3Store("gov-bucket", region=region)
    assert store.client.meta.endpoint_url == f"https://s3-fips.{region}.amazonaws.com"
    assert resolved_object_url(store) == f"https://gov-bucket.s3-fips.{region}.amazonaws.com/object"


def test_fips_can_be_turned_off_in_govcloud() -> None:
    store = S3Store("gov-bucket", region="us-gov-west-1", use_fips=False)
    assert store.client.meta.endpoint_url == "https://s3.us-gov-west-1.amazonaws.com"


def test_commercial_regions_do_not_use_fips() -> None:
    store = S3Store("bucket", region="us-east-1")
    assert "fips" not in str(store.client.meta.endpoint_url)
    assert "fips" not in resolved_object_url(store)


def test_an_explicit_endpoint_turns_fips_off(moto_server: MotoServer) -> None:
    endpoint = moto_server.endpoint_url
    for use_fips in (None, True):
        store = S3Store("b", region="us-gov-west-1", endpoint_url=endpoint, use_fips=use_fips)
        assert store.client.meta.endpoint_url == endpoint
        assert resolved_object_url(store) == f"{endpoint}/b/object"


def test_profile_supplies_region_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").write_text("[profile gov]\nregion = us-gov-east-1\n")
    (tmp_path / "credentials").write_text(
        "[gov]\naws_access_key_id = profilekey\naws_secret_access_key = profilesecret\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    for name in ("AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    signed: list[str] = []
    store = S3Store("gov-bucket", profile_name="gov")
    store.client.meta.events.register(
        "before-send.s3.HeadObject",
        lambda request, **_: signed.append(request.headers["Authorization"].decode()),
    )
    assert resolved_object_url(store).startswith("https://gov-bucket.s3-fips.us-gov-east-1.")
    assert "Credential=profilekey/" in signed[0]
    assert "profilesecret" not in store.describe()
    with pytest.raises(StoreError, match="ProfileNotFound"):
        S3Store("gov-bucket", profile_name="no-such-profile")


# --- faults between the store and S3, injected by a proxy --------------------------------

DATA = bytes(range(256)) * 800


def proxied_store(proxy: FaultProxy, bucket: str, **settings: Any) -> S3Store:
    return S3Store(bucket, "faults", endpoint_url=proxy.url, **settings)


def test_head_returns_engine_metadata_with_one_request(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    store = proxied_store(s3_proxy, s3_bucket[1])
    metadata = {"migrator-format": "1", "migrator-key-id": "k-7", "migrator-stored-xxh3": "9f0e"}
    store.put("chunk", DATA, metadata)
    s3_proxy.clear_requests()
    assert store.head("chunk") == ObjectInfo("chunk", len(DATA), metadata)
    assert [seen.method for seen in s3_proxy.requests] == ["HEAD"]


@pytest.mark.slow
def test_slow_down_on_three_requests_is_retried(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    store = proxied_store(s3_proxy, s3_bucket[1])
    s3_proxy.fail_next(3)
    store.put("chunk", DATA)
    assert s3_proxy.count("PUT") == 4
    assert [kind for kind, _ in s3_proxy.injected] == ["fail"] * 3
    assert store.get("chunk") == DATA


def test_slow_down_past_max_attempts_gives_store_error(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    store = proxied_store(s3_proxy, s3_bucket[1], max_attempts=2)
    s3_proxy.fail_next(2)
    with pytest.raises(StoreError, match="put failed: SlowDown") as caught:
        store.put("chunk", DATA)
    assert "faults/chunk" in str(caught.value)
    assert s3_proxy.count("PUT") == 2


def test_connection_reset_on_put_is_retried(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    store = proxied_store(s3_proxy, s3_bucket[1])
    s3_proxy.reset_next(match=matching("PUT"))
    store.put("chunk", DATA)
    assert s3_proxy.count("PUT") == 2
    assert store.get("chunk") == DATA


def test_read_timeout_on_put_is_retried(s3_proxy: FaultProxy, s3_bucket: tuple[str, str]) -> None:
    store = proxied_store(s3_proxy, s3_bucket[1], read_timeout=1)
    s3_proxy.delay(2.5, match=matching("PUT"), n=1)
    store.put("chunk", DATA)
    assert s3_proxy.count("PUT") == 2
    assert store.get("chunk") == DATA


def test_response_cut_short_on_put_is_retried(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    store = proxied_store(s3_proxy, s3_bucket[1])
    s3_proxy.cut_response_next(match=matching("PUT"))
    store.put("chunk", DATA)
    assert s3_proxy.count("PUT") == 2


def test_body_cut_short_on_get_is_read_again(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    store = proxied_store(s3_proxy, s3_bucket[1])
    store.put("chunk", DATA)
    s3_proxy.cut_response_next(match=matching("GET"))
    assert store.get("chunk") == DATA
    assert s3_proxy.count("GET") == 2


def test_body_cut_short_on_every_get_gives_store_error(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    store = proxied_store(s3_proxy, s3_bucket[1])
    store.put("chunk", DATA)
    s3_proxy.cut_response_next(GET_BODY_ATTEMPTS, match=matching("GET"))
    with pytest.raises(StoreError, match="get failed") as caught:
        store.get("chunk")
    assert "faults/chunk" in str(caught.value)
    assert s3_proxy.count("GET") == GET_BODY_ATTEMPTS
