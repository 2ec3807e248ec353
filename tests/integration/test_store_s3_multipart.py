"""S3Store as a MultipartStore against moto, through the fault proxy to see every request."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

import boto3
import pytest

from migrator.demo.motoserver import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, s3_client
from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import MultipartStore, PartInfo
from migrator.stores.s3 import MIN_PART_SIZE, S3Store
from tests.faultproxy import FaultProxy, SeenRequest, matching

pytestmark = pytest.mark.integration

SMALL_PART = 64 * 1024
METADATA = {"migrator-format": "1", "migrator-key-id": "k-1", "migrator-stored-xxh3": "ab12"}


def part_data(number: int, size: int = SMALL_PART) -> bytes:
    return hashlib.sha256(b"%d" % number).digest() * (size // 32) + bytes(size % 32)


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def upload_part_requests(proxy: FaultProxy) -> list[SeenRequest]:
    is_part = matching("PUT", query_has="partNumber")
    return [seen for seen in proxy.requests if is_part(seen)]


@pytest.fixture
def store(s3_proxy: FaultProxy, s3_bucket: tuple[str, str], small_s3_parts: int) -> S3Store:
    return S3Store(
        s3_bucket[1],
        "runs/plan-1",
        endpoint_url=s3_proxy.url,
        part_size=SMALL_PART,
        allow_small_parts=True,
    )


def test_is_a_multipart_store_with_s3_sized_defaults() -> None:
    store = S3Store("bucket", client=object())
    assert isinstance(store, MultipartStore)
    assert (store.multipart_threshold, store.part_size) == (64 << 20, 16 << 20)


def test_part_size_must_meet_the_s3_floor_unless_allowed() -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3Store("bucket", client=object(), part_size=MIN_PART_SIZE - 1)
    with pytest.raises(ValueError, match="part_size"):
        S3Store("bucket", client=object(), part_size=6 << 30)
    small = S3Store("bucket", client=object(), part_size=1024, allow_small_parts=True)
    assert small.part_size == 1024


def test_upload_list_and_complete_parts(store: S3Store, s3_proxy: FaultProxy) -> None:
    upload_id = store.begin_upload("chunks/big", METADATA)
    # Sent out of order, as parallel workers do.
    sent = {
        number: store.upload_part("chunks/big", upload_id, number, part_data(number))
        for number in (2, 3, 1)
    }
    assert {number: part.size for number, part in sent.items()} == {
        n: SMALL_PART for n in (1, 2, 3)
    }
    for number, part in sent.items():
        assert part.checksum == crc32_b64(part_data(number))

    listed = store.uploaded_parts("chunks/big", upload_id)
    assert listed is not None and sorted(listed) == [1, 2, 3]
    for number, part in listed.items():
        assert (part.size, part.etag) == (SMALL_PART, sent[number].etag)
        assert part.checksum in (None, sent[number].checksum)  # moto's ListParts omits it

    store.complete_upload("chunks/big", upload_id, list(sent.values()), METADATA)
    expected = b"".join(part_data(number) for number in (1, 2, 3))
    assert store.get("chunks/big") == expected
    head = store.head("chunks/big")
    assert head is not None and (head.size, head.metadata) == (len(expected), METADATA)
    assert store.uploaded_parts("chunks/big", upload_id) is None
    assert list(store.list_uploads()) == []

    parts = upload_part_requests(s3_proxy)
    assert len(parts) == 3
    for seen in parts:
        number = int(seen.query.split("partNumber=")[1].split("&")[0])
        assert seen.headers["x-amz-checksum-crc32"] == crc32_b64(part_data(number))
    begin = next(seen for seen in s3_proxy.requests if seen.query == "uploads")
    assert begin.headers["x-amz-checksum-algorithm"] == "CRC32"
    assert s3_proxy.count(header="x-amz-copy-source") == 0  # same metadata: no copy


def test_completed_object_carries_a_crc32(store: S3Store, s3_bucket: tuple[str, str]) -> None:
    upload_id = store.begin_upload("obj", {})
    parts = [store.upload_part("obj", upload_id, n, part_data(n)) for n in (1, 2)]
    store.complete_upload("obj", upload_id, parts, {})
    raw = s3_client(s3_bucket[0]).head_object(
        Bucket=s3_bucket[1], Key="runs/plan-1/obj", ChecksumMode="ENABLED"
    )
    assert raw.get("ChecksumCRC32")


def test_chosen_checksum_algorithm_goes_on_every_part(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str], small_s3_parts: int
) -> None:
    store = S3Store(
        s3_bucket[1],
        endpoint_url=s3_proxy.url,
        checksum_algorithm="SHA256",
        part_size=SMALL_PART,
        allow_small_parts=True,
    )
    upload_id = store.begin_upload("obj", {})
    parts = [store.upload_part("obj", upload_id, n, part_data(n)) for n in (1, 2)]
    store.complete_upload("obj", upload_id, parts, {})
    for part, seen in zip(parts, upload_part_requests(s3_proxy), strict=True):
        digest = base64.b64encode(hashlib.sha256(part_data(part.number)).digest()).decode()
        assert seen.headers["x-amz-checksum-sha256"] == digest == part.checksum
    assert store.get("obj") == part_data(1) + part_data(2)


def test_abort_discards_the_upload(store: S3Store) -> None:
    upload_id = store.begin_upload("obj", METADATA)
    store.upload_part("obj", upload_id, 1, part_data(1))
    store.abort_upload("obj", upload_id)
    assert store.uploaded_parts("obj", upload_id) is None
    assert list(store.list_uploads()) == []
    store.abort_upload("obj", upload_id)  # already gone: not an error
    with pytest.raises(MissingObjectError):
        store.get("obj")


def test_list_uploads_finds_unfinished_uploads_under_the_prefix(
    store: S3Store, s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    first = store.begin_upload("shard-1/a", {})
    second = store.begin_upload("shard-2/b", {})
    done = store.begin_upload("shard-1/done", {})
    store.complete_upload(
        "shard-1/done", done, [store.upload_part("shard-1/done", done, 1, b"x")], {}
    )
    other = S3Store(s3_bucket[1], "runs/plan-2", endpoint_url=s3_proxy.url)
    other.begin_upload("shard-1/a", {})

    assert sorted(store.list_uploads()) == sorted([("shard-1/a", first), ("shard-2/b", second)])
    assert list(store.list_uploads("shard-2/")) == [("shard-2/b", second)]


def test_metadata_given_at_complete_replaces_the_upload_metadata(
    store: S3Store, s3_proxy: FaultProxy
) -> None:
    upload_id = store.begin_upload("obj", {"migrator-format": "1"})
    parts = [store.upload_part("obj", upload_id, n, part_data(n)) for n in (1, 2)]
    store.complete_upload("obj", upload_id, parts, METADATA)
    head = store.head("obj")
    assert head is not None and head.metadata == METADATA
    assert store.get("obj") == part_data(1) + part_data(2)
    assert s3_proxy.count("PUT", header="x-amz-copy-source") == 1


def test_sse_kms_goes_on_puts_and_uploads_but_not_parts(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str], small_s3_parts: int
) -> None:
    endpoint_url, bucket = s3_bucket
    kms = boto3.session.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
        region_name="us-east-1",
    ).client("kms", endpoint_url=endpoint_url)
    key_id = kms.create_key(Description="migrator test")["KeyMetadata"]["KeyId"]
    store = S3Store(
        bucket,
        endpoint_url=s3_proxy.url,
        sse_kms_key_id=key_id,
        part_size=SMALL_PART,
        allow_small_parts=True,
    )
    store.put("small", b"data", {"a": "1"})
    upload_id = store.begin_upload("big", {"a": "1"})
    parts = [store.upload_part("big", upload_id, n, part_data(n)) for n in (1, 2)]
    store.complete_upload("big", upload_id, parts, {"a": "2"})  # replaced by a copy

    def sse_of(seen: SeenRequest) -> tuple[str | None, str | None]:
        return (
            seen.headers.get("x-amz-server-side-encryption"),
            seen.headers.get("x-amz-server-side-encryption-aws-kms-key-id"),
        )

    put, begin = s3_proxy.requests[0], s3_proxy.requests[1]
    copy = next(seen for seen in s3_proxy.requests if "x-amz-copy-source" in seen.headers)
    assert sse_of(put) == sse_of(begin) == sse_of(copy) == ("aws:kms", key_id)
    assert all(sse_of(seen) == (None, None) for seen in upload_part_requests(s3_proxy))
    raw = s3_client(endpoint_url)
    for key in ("small", "big"):
        head: Any = raw.head_object(Bucket=bucket, Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_id)


def test_resume_sends_only_the_missing_parts(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    # Real 5 MiB parts: botocore sends these with Expect: 100-continue, as it would to S3.
    data = [part_data(n, MIN_PART_SIZE) for n in (1, 2, 3)] + [part_data(4, 1000)]
    first = S3Store(s3_bucket[1], "resume", endpoint_url=s3_proxy.url, part_size=MIN_PART_SIZE)
    upload_id = first.begin_upload("obj", METADATA)
    for number in (1, 2):
        first.upload_part("obj", upload_id, number, data[number - 1])
    del first  # the crash: nothing survives but the upload id the engine journaled

    s3_proxy.clear_requests()
    second = S3Store(s3_bucket[1], "resume", endpoint_url=s3_proxy.url, part_size=MIN_PART_SIZE)
    held = second.uploaded_parts("obj", upload_id)
    assert held is not None and sorted(held) == [1, 2]
    assert all(held[n].size == MIN_PART_SIZE for n in (1, 2))
    parts = list(held.values())
    for number in range(1, 5):
        if number not in held:
            parts.append(second.upload_part("obj", upload_id, number, data[number - 1]))
    second.complete_upload("obj", upload_id, parts, METADATA)

    assert len(upload_part_requests(s3_proxy)) == 2
    assert all(seen.headers["expect"] == "100-continue" for seen in upload_part_requests(s3_proxy))
    assert second.get("obj") == b"".join(data)


def test_uploaded_parts_pages_through_list_parts(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    client = s3_client(s3_proxy.url)

    def two_parts_a_page(params: dict[str, Any], **_: Any) -> None:
        params["MaxParts"] = 2  # so three parts take two ListParts calls

    client.meta.events.register("provide-client-params.s3.ListParts", two_parts_a_page)
    store = S3Store(s3_bucket[1], client=client, part_size=SMALL_PART, allow_small_parts=True)
    upload_id = store.begin_upload("obj", {})
    for number in (1, 2, 3):
        store.upload_part("obj", upload_id, number, b"%d" % number)
    s3_proxy.clear_requests()
    held = store.uploaded_parts("obj", upload_id)
    assert held is not None and sorted(held) == [1, 2, 3]
    assert s3_proxy.count("GET", query_has="uploadId") == 2


def test_reset_during_upload_part_is_retried(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    store = S3Store(s3_bucket[1], endpoint_url=s3_proxy.url, part_size=MIN_PART_SIZE)
    data = part_data(1, MIN_PART_SIZE)
    upload_id = store.begin_upload("obj", {})
    s3_proxy.reset_next(match=matching("PUT", query_has="partNumber"))
    part = store.upload_part("obj", upload_id, 1, data)
    assert part.checksum == crc32_b64(data)
    assert [seen.body_size for seen in upload_part_requests(s3_proxy)] == [len(data)] * 2
    store.complete_upload("obj", upload_id, [part], {})
    assert store.get("obj") == data


def test_slow_down_on_upload_part_is_retried(store: S3Store, s3_proxy: FaultProxy) -> None:
    upload_id = store.begin_upload("obj", {})
    s3_proxy.fail_next(match=matching("PUT", query_has="partNumber"))
    part = store.upload_part("obj", upload_id, 1, part_data(1))
    assert len(upload_part_requests(s3_proxy)) == 2
    store.complete_upload("obj", upload_id, [part], {})
    assert store.get("obj") == part_data(1)


def test_s3_floor_on_part_size_is_enforced_at_complete(
    s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    # No small_s3_parts here: moto enforces S3's 5 MiB floor for every part but the last.
    store = S3Store(s3_bucket[1], endpoint_url=s3_proxy.url, part_size=1024, allow_small_parts=True)
    upload_id = store.begin_upload("obj", {})
    parts = [store.upload_part("obj", upload_id, n, b"x" * 1024) for n in (1, 2)]
    with pytest.raises(StoreError, match="EntityTooSmall"):
        store.complete_upload("obj", upload_id, parts, {})


def test_bad_part_numbers_are_rejected(store: S3Store) -> None:
    upload_id = store.begin_upload("obj", {})
    for number in (0, 10_001):
        with pytest.raises(StoreError, match="part number"):
            store.upload_part("obj", upload_id, number, b"x")
    part = store.upload_part("obj", upload_id, 1, b"x")
    with pytest.raises(StoreError, match="a number twice"):
        store.complete_upload("obj", upload_id, [part, part], {})
    with pytest.raises(StoreError, match="none"):
        store.complete_upload("obj", upload_id, [], {})


def test_complete_with_a_wrong_etag_names_the_key(store: S3Store) -> None:
    upload_id = store.begin_upload("obj", {})
    part = store.upload_part("obj", upload_id, 1, b"x")
    wrong = PartInfo(1, 1, '"0000"', part.checksum)
    with pytest.raises(StoreError, match="InvalidPart") as caught:
        store.complete_upload("obj", upload_id, [wrong], {})
    assert "runs/plan-1/obj" in str(caught.value)
