from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
import threading
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.core.pipeline.transport import (
    HttpRequest,
    HttpResponse,
    HttpTransport,
    RequestsTransport,
    RequestsTransportResponse,
)
from azure.storage.blob import ContainerClient

from migrator.demo import azurite as azurite_module
from migrator.demo.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite, start_azurite
from migrator.errors import MissingObjectError, StoreError
from migrator.stores.azure import AzureBlobStore
from migrator.stores.azure_client import government_credential
from migrator.stores.azure_names import block_name
from migrator.stores.base import MultipartStore, ObjectInfo, ObjectStore
from tests.faultproxy import FaultProxy, matching
from tests.store_contract import CONTRACT_CHECKS, check_id, listed

pytestmark = pytest.mark.integration

AzureContainer = tuple[str, str, str]  # (connection_string, container name, blob_url)


@dataclass(frozen=True)
class SentRequest:
    method: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class RecordingTransport(HttpTransport[HttpRequest, HttpResponse]):
    """The real transport, recording every request sent (retries included); answers the first
    `fail_first` requests with 503 Server Busy without sending them."""

    def __init__(self, fail_first: int = 0, corrupt_first: int = 0) -> None:
        self._inner = local_transport()
        self._lock = threading.Lock()
        self.sent: list[SentRequest] = []
        self.fail_first = fail_first
        self.corrupt_first = corrupt_first  # flip a bit in the next uploads' bodies

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        body = request.body if isinstance(request.body, bytes) else b""
        query = {name: values[0] for name, values in parse_qs(urlsplit(request.url).query).items()}
        with self._lock:
            self.sent.append(SentRequest(request.method, query, dict(request.headers), body))
            fail = self.fail_first > 0
            self.fail_first -= fail
            corrupt = bool(body) and self.corrupt_first > 0
            self.corrupt_first -= corrupt
        if fail:
            return _server_busy(request)
        if corrupt:  # after the SDK computed Content-MD5: a transfer that damaged the body
            request.set_bytes_body(bytes([body[0] ^ 1]) + body[1:])
        response: HttpResponse = self._inner.send(request, **kwargs)
        return response

    def count(self, comp: str, method: str = "PUT") -> int:
        with self._lock:
            return sum(1 for r in self.sent if r.method == method and r.query.get("comp") == comp)

    def open(self) -> None:
        self._inner.open()

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> RecordingTransport:
        self.open()
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


def _server_busy(request: HttpRequest) -> HttpResponse:
    raw = requests.Response()
    raw.status_code = 503
    raw.reason = "Server Busy"
    raw.headers["x-ms-error-code"] = "ServerBusy"
    raw._content = b""
    response: HttpResponse = RequestsTransportResponse(request, raw)
    return response


def local_transport() -> RequestsTransport:
    """A transport that ignores proxy settings from the environment: test traffic stays local."""
    return RequestsTransport(use_env_settings=False)


def make_store(container: AzureContainer, prefix: str = "", **options: Any) -> AzureBlobStore:
    connection_string, name, _ = container
    options.setdefault("transport", local_transport())
    return AzureBlobStore(name, prefix, connection_string=connection_string, **options)


def raw_client(container: AzureContainer) -> ContainerClient:
    connection_string, name, _ = container
    return ContainerClient.from_connection_string(
        connection_string, name, transport=local_transport()
    )


@pytest.fixture(params=["", "runs/plan-1"], ids=["no-prefix", "prefix"])
def store(request: pytest.FixtureRequest, azure_container: AzureContainer) -> AzureBlobStore:
    return make_store(azure_container, request.param)


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=check_id)
def test_contract(store: ObjectStore, check: Callable[[ObjectStore], None]) -> None:
    check(store)


def test_is_a_multipart_store(store: AzureBlobStore) -> None:
    assert isinstance(store, MultipartStore)


def test_prefix_is_joined_to_keys_and_stripped_from_listings(
    azure_container: AzureContainer,
) -> None:
    _, name, blob_url = azure_container
    raw = raw_client(azure_container)
    raw.upload_blob("outside", b"not ours")
    store = make_store(azure_container, "/runs/plan-1/")
    store.put("shard/1", b"data")
    assert raw.download_blob("runs/plan-1/shard/1").readall() == b"data"
    assert listed(store) == [("shard/1", 4)]
    host_and_account = blob_url.removeprefix("http://")
    assert store.describe() == f"azure://{host_and_account}/{name}/runs/plan-1/"
    assert ACCOUNT_KEY not in repr(store) and ACCOUNT_KEY not in store.describe()


def test_metadata_names_azure_rejects_are_escaped_and_read_back(
    azure_container: AzureContainer,
) -> None:
    store = make_store(azure_container)
    metadata = {"record-count": "1024", "9lives": "x", "a_b": "y", "plain": "z", "dot.name": "w"}
    store.put("k", b"x", metadata)
    assert store.head("k") == ObjectInfo("k", 1, metadata)
    stored = raw_client(azure_container).get_blob_client("k").get_blob_properties().metadata
    assert all(name.isidentifier() for name in stored), stored
    assert stored["plain"] == "z" and stored["record_2dcount"] == "1024"


def test_list_pages(azure_container: AzureContainer) -> None:
    # 5,000 a page is Azure's maximum; a small page size shows the paging without 5,001 puts.
    transport = RecordingTransport()
    store = make_store(azure_container, "many", list_page_size=100, transport=transport)
    keys = [f"k/{index:04d}" for index in range(250)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: store.put(key, key.encode()), keys))
    store.put("other", b"outside the listed prefix")

    assert listed(store, "k/") == [(key, len(key)) for key in keys]
    assert transport.count("list", method="GET") == 3


def test_large_put_is_chunked_by_the_sdk_and_still_one_overwrite(
    azure_container: AzureContainer,
) -> None:
    transport = RecordingTransport()
    store = make_store(
        azure_container, multipart_threshold=256 * 1024, part_size=128 * 1024, transport=transport
    )
    data = bytes(range(256)) * 4096  # 1 MiB: 8 blocks of 128 KiB
    store.put("big", data, {"attempt": "1"})
    assert transport.count("block") == 8
    assert transport.count("blocklist") == 1
    assert store.get("big") == data
    assert store.head("big") == ObjectInfo("big", len(data), {"attempt": "1"})

    store.put("big", b"small", {"attempt": "2"})  # one Put Blob replaces the block list whole
    assert transport.count("blocklist") == 1
    assert store.get("big") == b"small"
    assert store.head("big") == ObjectInfo("big", 5, {"attempt": "2"})


def test_transactional_md5_is_sent_on_puts_and_blocks(azure_container: AzureContainer) -> None:
    transport = RecordingTransport()
    store = make_store(azure_container, transport=transport)
    store.put("single", b"chunk bytes" * 100)
    upload_id = store.begin_upload("parts", {})
    part = store.upload_part("parts", upload_id, 1, bytearray(b"part one"))

    uploads = [r for r in transport.sent if r.method == "PUT" and r.body]
    assert len(uploads) == 2
    for sent in uploads:
        assert sent.headers["Content-MD5"] == md5_base64(sent.body)
    assert part.checksum == md5_base64(b"part one")


@pytest.mark.parametrize("operation", ["put", "stage block"])
def test_service_rejects_a_body_damaged_in_transit(
    azure_container: AzureContainer, operation: str
) -> None:
    transport = RecordingTransport(corrupt_first=1)
    store = make_store(azure_container, transport=transport)
    # Azure answers 400 Md5Mismatch; Azurite 400 InvalidOperation with this message.
    with pytest.raises(StoreError, match=r"Md5Mismatch|contentMD5 doesn.t match"):
        if operation == "put":
            store.put("k", b"original bytes")
        else:
            store.upload_part("k", store.begin_upload("k", {}), 1, b"original bytes")
    assert store.head("k") is None
    assert list(store.list_uploads()) == []


def test_multipart_upload(azure_container: AzureContainer) -> None:
    store = make_store(azure_container, "p")
    blocks = [b"a" * 1000, b"b" * 1000, b"tail"]
    upload_id = store.begin_upload("obj", {"format": "1"})
    parts = [store.upload_part("obj", upload_id, n, data) for n, data in enumerate(blocks, 1)]
    assert [(p.number, p.size, p.etag) for p in parts] == [
        (n, len(data), block_name(upload_id, n)) for n, data in enumerate(blocks, 1)
    ]
    uploaded = store.uploaded_parts("obj", upload_id)
    assert uploaded is not None
    assert {n: (p.size, p.etag) for n, p in uploaded.items()} == {
        p.number: (p.size, p.etag) for p in parts
    }
    assert store.head("obj") is None  # nothing visible before the commit
    assert listed(store) == []

    store.complete_upload("obj", upload_id, list(reversed(parts)), {"format": "1"})
    assert store.get("obj") == b"".join(blocks)
    assert store.head("obj") == ObjectInfo("obj", 2004, {"format": "1"})
    assert list(store.list_uploads()) == []
    completed = store.uploaded_parts("obj", upload_id)  # the committed blocks, for a re-commit
    assert completed is not None and sorted(completed) == [1, 2, 3]
    store.complete_upload("obj", upload_id, parts, {"format": "1"})
    assert store.get("obj") == b"".join(blocks)


def test_block_ids_have_one_length_and_are_base64_on_the_wire(
    azure_container: AzureContainer,
) -> None:
    transport = RecordingTransport()
    store = make_store(azure_container, transport=transport)
    for key in ("a", "b"):
        upload_id = store.begin_upload(key, {})
        for number in (1, 99, 50_000):
            store.upload_part(key, upload_id, number, b"x")
    wire_ids = [r.query["blockid"] for r in transport.sent if r.query.get("comp") == "block"]
    assert len(wire_ids) == 6 and len({len(block_id) for block_id in wire_ids}) == 1
    assert base64.b64decode(wire_ids[-1]).decode() == block_name(upload_id, 50_000)
    with pytest.raises(ValueError):
        store.upload_part("a", upload_id, 50_001, b"x")


def test_resume_sends_only_the_missing_blocks(azure_container: AzureContainer) -> None:
    blocks = [bytes([n]) * 4096 for n in range(1, 5)]
    first = make_store(azure_container, "resume")
    upload_id = first.begin_upload("obj", {})
    for number in (1, 2):
        first.upload_part("obj", upload_id, number, blocks[number - 1])
    del first  # the run dies; the journal kept only the upload id

    transport = RecordingTransport()
    second = make_store(azure_container, "resume", transport=transport)
    uploaded = second.uploaded_parts("obj", upload_id)
    assert uploaded is not None and sorted(uploaded) == [1, 2]
    parts = dict(uploaded)
    for number in range(1, 5):
        if number not in parts:
            parts[number] = second.upload_part("obj", upload_id, number, blocks[number - 1])
    second.complete_upload("obj", upload_id, list(parts.values()), {"resumed": "yes"})

    assert transport.count("block") == 2
    assert second.get("obj") == b"".join(blocks)
    assert second.head("obj") == ObjectInfo("obj", 4 * 4096, {"resumed": "yes"})


def test_unknown_upload_reads_as_absent(azure_container: AzureContainer) -> None:
    store = make_store(azure_container)
    assert store.uploaded_parts("never-started", "0123456789abcdef") is None
    upload_id = store.begin_upload("obj", {})
    store.upload_part("obj", upload_id, 1, b"x")
    assert store.uploaded_parts("obj", "0123456789abcdef") is None  # another upload's blocks


def test_complete_rejects_a_part_of_another_upload(azure_container: AzureContainer) -> None:
    store = make_store(azure_container)
    first = store.begin_upload("obj", {})
    part = store.upload_part("obj", first, 1, b"x")
    with pytest.raises(StoreError, match="is not a block of upload"):
        store.complete_upload("obj", store.begin_upload("obj", {}), [part], {})


def test_list_uploads_finds_uncommitted_uploads(azure_container: AzureContainer) -> None:
    store = make_store(azure_container, "runs")
    store.put("done/1", b"committed")
    orphan = store.begin_upload("shard/7/chunk", {})
    store.upload_part("shard/7/chunk", orphan, 1, b"x")
    second = store.begin_upload("shard/7/chunk", {})
    store.upload_part("shard/7/chunk", second, 1, b"y")
    other = store.begin_upload("shard/8/chunk", {})
    store.upload_part("shard/8/chunk", other, 2, b"z")
    # A block some other tool staged is not an upload of this store.
    raw_client(azure_container).get_blob_client("runs/foreign").stage_block("block-1", b"?")

    assert list(store.list_uploads()) == [
        *sorted([("shard/7/chunk", orphan), ("shard/7/chunk", second)]),
        ("shard/8/chunk", other),
    ]
    assert list(store.list_uploads("shard/8")) == [("shard/8/chunk", other)]

    store.abort_upload("shard/8/chunk", other)  # a no-op: Azure keeps the blocks 7 days
    assert store.head("shard/8/chunk") is None
    assert listed(store) == [("done/1", 9)]


def test_throttling_is_retried(azure_container: AzureContainer) -> None:
    transport = RecordingTransport(fail_first=2)
    store = make_store(azure_container, transport=transport, retry_backoff=0.01)
    store.put("k", b"data")
    assert len([r for r in transport.sent if r.method == "PUT"]) == 3
    assert store.get("k") == b"data"


def test_retries_give_up_with_a_store_error(azure_container: AzureContainer) -> None:
    transport = RecordingTransport(fail_first=10)
    store = make_store(azure_container, transport=transport, retry_total=2, retry_backoff=0.01)
    with pytest.raises(StoreError) as caught:
        store.put("k", b"data")
    assert len(transport.sent) == 3
    assert "503" in str(caught.value) or "ServerBusy" in str(caught.value)


def test_resets_and_cut_responses_on_the_wire_are_retried(
    azurite: Azurite, azure_container: AzureContainer
) -> None:
    _, name, _ = azure_container
    data = [b"first block " * 1000, b"second block " * 1000]
    with FaultProxy("127.0.0.1", azurite.port) as proxy:
        store = AzureBlobStore(
            name,
            account_url=f"{proxy.url}/{ACCOUNT_NAME}",
            credential=ACCOUNT_KEY,
            retry_backoff=0.01,
            transport=local_transport(),
        )
        proxy.reset_next(1, match=matching("PUT", query_has="comp=block"))
        proxy.fail_next(2, match=matching("PUT", query_has="comp=blocklist"))
        upload_id = store.begin_upload("obj", {})
        parts = [store.upload_part("obj", upload_id, n, block) for n, block in enumerate(data, 1)]
        store.complete_upload("obj", upload_id, parts, {})
        proxy.cut_response_next(1, match=matching("GET"))
        assert store.get("obj") == b"".join(data)

        assert proxy.count("PUT", query_has="comp=block&") == 3
        assert proxy.count("PUT", query_has="comp=blocklist") == 3
        assert [kind for kind, _ in proxy.injected] == ["reset", "fail", "fail", "cut"]
        assert proxy.errors == []


def test_account_key_credential(azure_container: AzureContainer) -> None:
    _, name, blob_url = azure_container
    store = AzureBlobStore(
        name, account_url=blob_url, credential=ACCOUNT_KEY, transport=local_transport()
    )
    store.put("k", b"signed with the account key")
    assert store.get("k") == b"signed with the account key"


def test_describe_and_repr_never_show_credentials() -> None:
    store = AzureBlobStore(
        "chunks",
        "runs/1",
        account_url="https://acct.blob.core.usgovcloudapi.net/?sv=2024-01-01&sig=SECRET",
    )
    assert store.describe() == "azure://acct.blob.core.usgovcloudapi.net/chunks/runs/1/"
    assert "SECRET" not in repr(store)
    keyed = AzureBlobStore(
        "chunks", account_url="https://acct.blob.core.usgovcloudapi.net", credential="S2V5"
    )
    assert keyed.client.credential.account_name == "acct"  # an account key, not a SAS token
    assert "S2V5" not in repr(keyed) and "S2V5" not in keyed.describe()


@pytest.mark.parametrize("name", ["record-count", "9lives", "a_b", "_x", "é", "Mixed-Case", "a"])
def test_metadata_names_round_trip(azure_container: AzureContainer, name: str) -> None:
    store = make_store(azure_container)
    store.put("k", b"x", {name: "v"})
    assert store.head("k") == ObjectInfo("k", 1, {name: "v"})


def test_missing_container_gives_store_error_naming_it(azurite: Azurite) -> None:
    store = AzureBlobStore(
        "no-such-container",
        "p",
        connection_string=azurite.connection_string,
        transport=local_transport(),
    )
    operations: list[Callable[[], object]] = [
        lambda: store.put("k", b"x"),
        lambda: store.get("k"),
        lambda: store.head("k"),
        lambda: store.delete("k"),
        lambda: list(store.list()),
        lambda: store.uploaded_parts("k", "0123456789abcdef"),
        lambda: store.upload_part("k", store.begin_upload("k", {}), 1, b"x"),
    ]
    for operation in operations:
        with pytest.raises(StoreError) as caught:
            operation()
        message = str(caught.value)
        assert "no-such-container" in message and "404 ContainerNotFound" in message
        assert ACCOUNT_KEY not in message


def test_missing_key_is_missing_object(store: AzureBlobStore) -> None:
    with pytest.raises(MissingObjectError) as caught:
        store.get("shard/0007")
    assert caught.value.object_key == "shard/0007"
    assert store.describe() in str(caught.value)


def test_unreachable_endpoint_gives_store_error(azure_container: AzureContainer) -> None:
    _, name, _ = azure_container
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    store = AzureBlobStore(
        name,
        account_url=f"http://127.0.0.1:{closed_port}/devstoreaccount1",
        credential=ACCOUNT_KEY,
        retry_total=0,
        transport=local_transport(),
    )
    with pytest.raises(StoreError) as caught:
        store.put("k", b"x")
    assert name in str(caught.value)
    assert "ServiceRequestError" in str(caught.value)


def test_government_credential_needs_the_optional_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    with pytest.raises(StoreError, match=r"migrator\[azure-identity\]"):
        government_credential()


def test_government_credential_signs_in_at_the_government_authority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[dict[str, Any]] = []
    identity = types.ModuleType("azure.identity")
    identity.AzureAuthorityHosts = types.SimpleNamespace(  # type: ignore[attr-defined]
        AZURE_GOVERNMENT="login.microsoftonline.us"
    )
    identity.DefaultAzureCredential = lambda **options: made.append(options)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.identity", identity)
    government_credential(exclude_interactive_browser_credential=True)
    assert made == [
        {"authority": "login.microsoftonline.us", "exclude_interactive_browser_credential": True}
    ]


def md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# --- the Azurite helper -------------------------------------------------------------------


def test_azurite_stop_ends_the_process_and_removes_its_data() -> None:
    server = start_azurite()
    workdir = server.workdir
    with ContainerClient.from_connection_string(server.connection_string, "probe") as client:
        client.create_container()
    server.stop()
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)
    server.stop()  # twice is harmless


def test_azurite_that_cannot_listen_reports_its_error() -> None:
    with pytest.raises(RuntimeError, match=r"exited early.*EADDRNOTAVAIL"):
        start_azurite("203.0.113.9")  # TEST-NET-3: not an address of this machine


def test_azurite_not_installed_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "package.json").write_text("{}")
    monkeypatch.setattr(azurite_module, "project_root", lambda: tmp_path)
    with pytest.raises(RuntimeError, match=r"run `npm ci`.*make setup"):
        start_azurite()
