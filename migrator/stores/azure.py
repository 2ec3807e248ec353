"""`ObjectStore` and `MultipartStore` on an Azure Blob container (Azure Government, or Azurite).

Azure Government accounts live at https://<account>.blob.core.usgovcloudapi.net; sign in there
with `government_credential()`, an account key, or a connection string.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import random
import re
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import urlsplit

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobProperties,
    ContainerClient,
    ExponentialRetry,
)
from requests import RequestException

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import Buffer, ObjectInfo, PartInfo

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline import PipelineRequest

MiB = 1024 * 1024
MAX_BLOCKS = 50_000  # Azure's limit of committed blocks a blob
MAX_BACKOFF_SECONDS = 30.0

# Block names are "<upload id>-<part number>": one length for every upload, as Azure requires
# of a blob's uncommitted blocks. The SDK base64-encodes them into the wire block ids.
_UPLOAD_ID = re.compile(r"[0-9a-f]{16}")
_BLOCK_NAME = re.compile(r"([0-9a-f]{16})-(\d{6})")
_METADATA_NAME_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ESCAPED_NAME = re.compile(r"(?:[A-Za-z0-9]|_[0-9a-f]{2})*")
# The SDK wraps most transport failures in AzureError, but a few paths let requests' own out.
_TRANSPORT_ERRORS = (AzureError, RequestException)
_SAS_SIGNATURE = re.compile(r"(sig=)[^&\s]+", re.IGNORECASE)


class AzureBlobStore:
    """Keys are joined to `prefix`; every put and staged block carries a transactional MD5.

    Objects above `multipart_threshold` go through the multipart methods (the engine's choice);
    a plain `put` of a large buffer is chunked by the SDK into `part_size` blocks and committed
    as one block list, so it is still one atomic overwrite.

    Metadata names must be C# identifiers on Azure: other bytes are escaped as "_xx" (hex), so
    "record-count" is stored as "record_2dcount" and read back unchanged.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        account_url: str | None = None,
        credential: Any | None = None,
        connection_string: str | None = None,
        max_concurrency: int = 8,
        multipart_threshold: int = 64 * MiB,
        part_size: int = 16 * MiB,
        retry_total: int = 10,
        retry_backoff: float = 0.5,
        list_page_size: int = 5000,
        transport: Any | None = None,
        client: ContainerClient | None = None,
    ) -> None:
        """`credential`: an account key, an AzureNamedKeyCredential or AzureSasCredential, or
        a token credential (see `government_credential`). `transport` is an azure-core
        HttpTransport, for tests that count or fail requests."""
        self.container = container
        stripped = prefix.strip("/")
        self.prefix = stripped + "/" if stripped else ""
        self.max_concurrency = max_concurrency
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.list_page_size = list_page_size  # 5,000 is Azure's maximum (and default)
        if client is None:
            options: dict[str, Any] = {
                "retry_policy": BlobRetry(retry_total, retry_backoff),
                "max_single_put_size": multipart_threshold,
                "max_block_size": part_size,
            }
            if transport is not None:
                options["transport"] = transport
            if connection_string is not None:
                client = ContainerClient.from_connection_string(
                    connection_string, container, **options
                )
            elif account_url is not None:
                client = ContainerClient(
                    account_url,
                    container,
                    credential=key_credential(account_url, credential),
                    **options,
                )
            else:
                raise ValueError("AzureBlobStore needs connection_string, account_url or client")
        self._client = client
        location = urlsplit(client.url)
        self._location = location.netloc.rpartition("@")[2] + location.path.rstrip("/")

    def __repr__(self) -> str:
        return f"AzureBlobStore({self.describe()!r})"

    # --- ObjectStore -----------------------------------------------------------------------

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        full_key = self._full_key(key)
        body = data if isinstance(data, bytes) else bytes(data)
        try:
            self._blob(full_key).upload_blob(
                body,
                length=len(body),
                overwrite=True,
                metadata=_encode_metadata(metadata or {}),
                validate_content=True,
                max_concurrency=self.max_concurrency,
            )
        except _TRANSPORT_ERRORS as exc:
            self._raise("put", full_key, exc)

    def get(self, key: str) -> bytes:
        """No transactional MD5 on reads: chunks and manifests authenticate themselves, and
        with validate_content the SDK lets a response cut short escape its retries as a raw
        requests error (the MD5 check reads the body inside the retry policy)."""
        full_key = self._full_key(key)
        try:
            download = self._blob(full_key).download_blob(max_concurrency=self.max_concurrency)
            return download.readall()
        except ResourceNotFoundError as exc:
            if _container_missing(exc):
                self._raise("get", full_key, exc)
            raise MissingObjectError(f"not found in {self.describe()}", object_key=key) from exc
        except _TRANSPORT_ERRORS as exc:
            self._raise("get", full_key, exc)

    def head(self, key: str) -> ObjectInfo | None:
        full_key = self._full_key(key)
        try:
            properties = self._blob(full_key).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _container_missing(exc):
                self._raise("head", full_key, exc)
            return None  # also a blob that exists only as uncommitted blocks
        except _TRANSPORT_ERRORS as exc:
            self._raise("head", full_key, exc)
        return ObjectInfo(key, properties.size, _decode_metadata(properties.metadata or {}))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Key and size only, like S3 listings; one request a `list_page_size` blobs."""
        full_prefix = self.prefix + prefix
        try:
            for item in self._listing(full_prefix):
                yield ObjectInfo(key=item.name[len(self.prefix) :], size=item.size)
        except _TRANSPORT_ERRORS as exc:
            self._raise("list", full_prefix, exc)

    def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        try:
            self._blob(full_key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if _container_missing(exc):
                self._raise("delete", full_key, exc)
        except _TRANSPORT_ERRORS as exc:
            self._raise("delete", full_key, exc)

    def describe(self) -> str:
        return f"azure://{self._location}/{self.prefix}"

    # --- MultipartStore: an upload is the blob's uncommitted blocks ---------------------------

    def begin_upload(self, key: str, metadata: dict[str, str]) -> str:
        """A fresh upload id; Azure keeps nothing until the first block (metadata comes with
        the commit)."""
        self._full_key(key)
        return secrets.token_hex(8)

    def uploaded_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        """This upload's staged blocks, or its committed ones if it was completed; None when
        neither exists (an upload with no block yet reads as absent: starting over loses
        nothing). Block lists carry no checksum, so `checksum` is None here."""
        full_key = self._full_key(key)
        try:
            committed, uncommitted = self._blob(full_key).get_block_list("all")
        except ResourceNotFoundError as exc:
            if _container_missing(exc):
                self._raise("get block list", full_key, exc)
            return None
        except _TRANSPORT_ERRORS as exc:
            self._raise("get block list", full_key, exc)
        for blocks in (uncommitted, committed):
            parts: dict[int, PartInfo] = {}
            for block in blocks:
                parsed = parse_block_name(block.id)
                if parsed is not None and parsed[0] == upload_id:
                    parts[parsed[1]] = PartInfo(parsed[1], block.size, block.id)
            if parts:
                return parts
        return None

    def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> PartInfo:
        """Stages one block with a transactional MD5, which the service checks against the body.

        CRC64 (validate_content="crc64") would need the SDK's optional extension,
        azure-storage-blob[ext-checksums]; MD5 works everywhere, Azurite included.
        """
        full_key = self._full_key(key)
        name = block_name(upload_id, number)
        body = data if isinstance(data, bytes) else bytes(data)
        sent: dict[str, str] = {}

        def keep_sent_md5(request: PipelineRequest[Any]) -> None:
            sent["md5"] = request.http_request.headers.get("Content-MD5", "")

        try:
            self._blob(full_key).stage_block(
                name, body, len(body), validate_content=True, raw_request_hook=keep_sent_md5
            )
        except _TRANSPORT_ERRORS as exc:
            self._raise(f"stage block {number}", full_key, exc)
        checksum = sent.get("md5") or _md5_base64(body)
        return PartInfo(number=number, size=len(body), etag=name, checksum=checksum)

    def complete_upload(
        self, key: str, upload_id: str, parts: builtins.list[PartInfo], metadata: dict[str, str]
    ) -> None:
        """Commits the blocks in number order: one atomic overwrite, which also discards every
        other uncommitted block of the blob. Re-committing a completed upload is harmless."""
        full_key = self._full_key(key)
        ordered = sorted(parts, key=lambda part: part.number)
        for part in ordered:
            if part.etag != block_name(upload_id, part.number):
                raise StoreError(
                    f"{self._url(full_key)}: part {part.number} (block {part.etag!r}) "
                    f"is not a block of upload {upload_id}"
                )
        try:
            self._blob(full_key).commit_block_list(
                [BlobBlock(block_id=part.etag) for part in ordered],
                metadata=_encode_metadata(metadata),
                validate_content=True,
            )
        except _TRANSPORT_ERRORS as exc:
            self._raise("commit block list", full_key, exc)

    def abort_upload(self, key: str, upload_id: str) -> None:
        """A no-op: Azure cannot delete uncommitted blocks one by one.

        They stay invisible (no object exists until a commit) and Azure discards them after
        seven days, or as soon as any block list of the blob is committed. Committing an empty
        list to discard them now would also destroy the blocks of any other upload to the key.
        """
        self._full_key(key)

    def list_uploads(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """(key, upload id) of uploads to keys that exist only as uncommitted blocks.

        Listing with "uncommittedblobs" adds those blobs to a normal listing, so the two sorted
        listings are merged and only the extra names get a block-list request. Uploads over
        an existing object are not found this way; the next commit of that key discards them.
        """
        full_prefix = self.prefix + prefix
        try:
            committed = (item.name for item in self._listing(full_prefix))
            every = self._listing(full_prefix, include=["uncommittedblobs"])
            next_committed = next(committed, None)
            for item in every:
                while next_committed is not None and next_committed < item.name:
                    next_committed = next(committed, None)
                if item.name == next_committed:
                    continue
                _, uncommitted = self._blob(item.name).get_block_list("uncommitted")
                upload_ids = {parsed[0] for b in uncommitted if (parsed := parse_block_name(b.id))}
                for upload_id in sorted(upload_ids):
                    yield item.name[len(self.prefix) :], upload_id
        except _TRANSPORT_ERRORS as exc:
            self._raise("list uploads", full_prefix, exc)

    # --- helpers ---------------------------------------------------------------------------

    def _listing(
        self, full_prefix: str, include: builtins.list[str] | None = None
    ) -> Iterator[BlobProperties]:
        return self._client.list_blobs(
            name_starts_with=full_prefix, include=include, results_per_page=self.list_page_size
        )

    def _blob(self, full_key: str) -> BlobClient:
        return self._client.get_blob_client(full_key)

    def _full_key(self, key: str) -> str:
        if not key:
            raise StoreError(f"{self.describe()}: empty object key")
        return self.prefix + key

    def _url(self, full_key: str) -> str:
        return f"azure://{self._location}/{full_key}"

    def _raise(self, operation: str, full_key: str, exc: Exception) -> NoReturn:
        # The error code and the message's first line: the rest repeats request ids and XML.
        if isinstance(exc, HttpResponseError):
            error_code = getattr(exc, "error_code", None)  # the SDK's enum, or the raw header
            code = f"{exc.status_code} {getattr(error_code, 'value', error_code) or exc.reason}"
            message = str(exc.message or "")
        else:
            code, message = type(exc).__name__, str(exc)
        lines = message.strip().splitlines()
        reason = f"{code}: {lines[0] if lines else ''}"
        # A SAS signature can appear in a URL inside a connection error: never repeat it.
        reason = _SAS_SIGNATURE.sub(r"\1***", reason)
        raise StoreError(f"{self._url(full_key)}: {operation} failed: {reason}") from exc


class BlobRetry(ExponentialRetry):
    """The SDK's storage retry rules (5xx but 501/505, 408, connection resets, an MD5 the
    service echoes differently) with `retry_total` for every kind and a doubling, capped,
    jittered backoff starting at `backoff` seconds (the SDK's own starts at 15 s)."""

    def __init__(self, retry_total: int = 10, backoff: float = 0.5) -> None:
        super().__init__(
            retry_total=retry_total,
            retry_connect=retry_total,
            retry_read=retry_total,
            retry_status=retry_total,
            random_jitter_range=0,
        )
        self.backoff = backoff

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        # The SDK counts a retry before it sleeps: the first sleep sees count 1.
        retry = max(settings["count"] - 1, 0)
        delay = min(self.backoff * 2**retry, MAX_BACKOFF_SECONDS)
        return float(delay * random.uniform(0.8, 1.2))


def government_credential(**options: Any) -> TokenCredential:
    """azure-identity's DefaultAzureCredential signing in at Azure Government's authority."""
    try:
        from azure.identity import AzureAuthorityHosts, DefaultAzureCredential
    except ImportError as exc:
        raise StoreError(
            "Azure Government sign-in needs the optional azure-identity package: "
            "pip install 'migrator[azure-identity]' (or pass an account key or connection string)"
        ) from exc
    credential = DefaultAzureCredential(authority=AzureAuthorityHosts.AZURE_GOVERNMENT, **options)
    return cast("TokenCredential", credential)


def block_name(upload_id: str, number: int) -> str:
    """The block of part `number` of an upload; the SDK base64-encodes it as the block id."""
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise ValueError(f"not an upload id of this store: {upload_id!r}")
    if not 1 <= number <= MAX_BLOCKS:
        raise ValueError(f"part number {number} is outside 1..{MAX_BLOCKS}")
    return f"{upload_id}-{number:06d}"


def parse_block_name(name: str) -> tuple[str, int] | None:
    """(upload id, part number) of a block this store staged; None for anyone else's block."""
    match = _BLOCK_NAME.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else None


def _container_missing(exc: ResourceNotFoundError) -> bool:
    # Azure names the missing thing in x-ms-error-code, HEAD responses included.
    error_code = getattr(exc, "error_code", None)
    return str(getattr(error_code, "value", error_code)) == "ContainerNotFound"


def key_credential(account_url: str, credential: Any | None) -> Any | None:
    """An account key or SAS token given as a string becomes the SDK's credential for it."""
    if not isinstance(credential, str):
        return credential
    if "sig=" in credential:
        return AzureSasCredential(credential)
    return AzureNamedKeyCredential(account_name(account_url), credential)


def account_name(account_url: str) -> str:
    """<account>.blob.core... names the account in the host; emulators in the first path part."""
    parts = urlsplit(account_url)
    host = parts.hostname or ""
    if host.replace(".", "").isdigit() or host in {"localhost", "::1"} or ":" in host:
        return parts.path.strip("/").split("/")[0]
    return host.split(".")[0]


def _encode_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {_encode_name(name): value for name, value in metadata.items()}


def _decode_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {_decode_name(name): value for name, value in metadata.items()}


def _encode_name(name: str) -> str:
    escaped = [
        chr(byte) if byte in _METADATA_NAME_SAFE else f"_{byte:02x}" for byte in name.encode()
    ]
    if escaped and escaped[0].isdigit():  # an identifier cannot start with a digit
        escaped[0] = f"_{ord(escaped[0]):02x}"
    return "".join(escaped)


def _decode_name(name: str) -> str:
    """The inverse of _encode_name; a name this store did not write comes back as it is."""
    if not _ESCAPED_NAME.fullmatch(name):
        return name
    raw = re.sub(rb"_([0-9a-f]{2})", lambda match: bytes.fromhex(match[1].decode()), name.encode())
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return name


def _md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
