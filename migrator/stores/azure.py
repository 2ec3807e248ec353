"""`ObjectStore` and `MultipartStore` on an Azure Blob container (Azure Government, or Azurite).

Azure Government accounts live at https://<account>.blob.core.usgovcloudapi.net; sign in there
with `government_credential()` (stores/azure_client.py), an account key, or a connection string.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, BlobProperties, ContainerClient

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.azure_client import (
    TRANSPORT_ERRORS,
    BlobRetry,
    container_missing,
    content_md5,
    key_credential,
    public_location,
    store_error,
)
from migrator.stores.azure_names import (
    block_name,
    decode_metadata,
    encode_metadata,
    new_upload_id,
    parse_block_name,
)
from migrator.stores.base import Buffer, ObjectInfo, PartInfo, key_prefix

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineRequest

MiB = 1024 * 1024


class AzureBlobStore:
    """Keys are joined to `prefix`; every put and staged block carries a transactional MD5.

    Objects above `multipart_threshold` go through the multipart methods (the engine's choice);
    a plain `put` of a large buffer is chunked by the SDK into `part_size` blocks and committed
    as one block list, so it is still one atomic overwrite.

    Metadata names must be C# identifiers on Azure: other bytes are escaped as "_xx" (hex), so
    "record-count" is stored as "record_2dcount" and read back unchanged.

    `encryption_scope` writes every blob (puts, staged blocks, commits) under that scope: the
    owner's key, as Azure's counterpart of SSE-KMS.
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
        encryption_scope: str | None = None,
    ) -> None:
        """`credential`: an account key, an AzureNamedKeyCredential or AzureSasCredential, or
        a token credential (see `government_credential`). `transport` is an azure-core
        HttpTransport, for tests that count or fail requests."""
        if encryption_scope is not None and not encryption_scope:
            raise ValueError("encryption_scope must not be empty (use None for the default)")
        self.container = container
        self.encryption_scope = encryption_scope  # None: the container's default
        self.prefix = key_prefix(prefix)
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
        self._location = public_location(client.url)

    def __repr__(self) -> str:
        return f"AzureBlobStore({self.describe()!r})"

    @property
    def client(self) -> ContainerClient:
        """The SDK's container client, for checking how it signs in and where it calls."""
        return self._client

    # --- ObjectStore -----------------------------------------------------------------------

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        full_key = self._full_key(key)
        body = data if isinstance(data, bytes) else bytes(data)
        try:
            self._blob(full_key).upload_blob(
                body,
                length=len(body),
                overwrite=True,
                metadata=encode_metadata(metadata or {}),
                validate_content=True,
                max_concurrency=self.max_concurrency,
                encryption_scope=self.encryption_scope,
            )
        except TRANSPORT_ERRORS as exc:
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
            if container_missing(exc):
                self._raise("get", full_key, exc)
            raise MissingObjectError(f"not found in {self.describe()}", object_key=key) from exc
        except TRANSPORT_ERRORS as exc:
            self._raise("get", full_key, exc)

    def head(self, key: str) -> ObjectInfo | None:
        full_key = self._full_key(key)
        try:
            properties = self._blob(full_key).get_blob_properties()
        except ResourceNotFoundError as exc:
            if container_missing(exc):
                self._raise("head", full_key, exc)
            return None  # also a blob that exists only as uncommitted blocks
        except TRANSPORT_ERRORS as exc:
            self._raise("head", full_key, exc)
        return ObjectInfo(key, properties.size, decode_metadata(properties.metadata or {}))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Key and size only, like S3 listings; one request a `list_page_size` blobs."""
        full_prefix = self.prefix + prefix
        try:
            for item in self._listing(full_prefix):
                yield ObjectInfo(key=item.name[len(self.prefix) :], size=item.size)
        except TRANSPORT_ERRORS as exc:
            self._raise("list", full_prefix, exc)

    def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        try:
            self._blob(full_key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if container_missing(exc):
                self._raise("delete", full_key, exc)
        except TRANSPORT_ERRORS as exc:
            self._raise("delete", full_key, exc)

    def describe(self) -> str:
        return f"azure://{self._location}/{self.prefix}"

    # --- MultipartStore: an upload is the blob's uncommitted blocks ---------------------------

    def begin_upload(self, key: str, metadata: dict[str, str]) -> str:
        """A fresh upload id; Azure keeps nothing until the first block (metadata comes with
        the commit)."""
        self._full_key(key)
        return new_upload_id()

    def uploaded_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        """This upload's staged blocks, or its committed ones if it was completed; None when
        neither exists (an upload with no block yet reads as absent: starting over loses
        nothing). Block lists carry no checksum, so `checksum` is None here."""
        full_key = self._full_key(key)
        try:
            committed, uncommitted = self._blob(full_key).get_block_list("all")
        except ResourceNotFoundError as exc:
            if container_missing(exc):
                self._raise("get block list", full_key, exc)
            return None
        except TRANSPORT_ERRORS as exc:
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
                name,
                body,
                len(body),
                validate_content=True,
                raw_request_hook=keep_sent_md5,
                encryption_scope=self.encryption_scope,
            )
        except TRANSPORT_ERRORS as exc:
            self._raise(f"stage block {number}", full_key, exc)
        checksum = sent.get("md5") or content_md5(body)
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
                metadata=encode_metadata(metadata),
                validate_content=True,
                encryption_scope=self.encryption_scope,
            )
        except TRANSPORT_ERRORS as exc:
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
        except TRANSPORT_ERRORS as exc:
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
        raise store_error(self._url(full_key), operation, exc) from exc
