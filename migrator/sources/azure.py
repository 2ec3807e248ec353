"""An Azure Blob container of the old platform as a source: blobs under a prefix, by ETag.

Every download carries If-Match with the ETag seen in the listing (the SDK keeps it on the
follow-up chunk requests), so the service refuses (412) a blob overwritten since. Whole-blob
reads pull the downloader's chunks one at a time: a blob is never held in memory at once.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobPrefix,
    BlobProperties,
    ContainerClient,
    StorageStreamDownloader,
)

from migrator.errors import SourceChangedError, SourceError
from migrator.sources.base import PrefixedSource, SourceObject, list_page_size
from migrator.sources.listing import Folder, Level, Ranges, plan_folder_units, utf16_order
from migrator.stores.azure_client import BlobRetry, key_credential, public_location
from migrator.stores.base import key_prefix

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MiB = 1024 * 1024
LIST_PAGE_SIZE = 5000  # List Blobs' maximum
CHUNK_SIZE = 4 * MiB  # bytes a download request: what an open reader holds at most
READ_BUFFER_SIZE = 256 * 1024
_CHANGED_CODES = frozenset({"ConditionNotMet", "InvalidRange", "412", "416"})


class AzureSource(PrefixedSource):
    """Blobs under `prefix` of `container`; names are relative to the prefix.

    `credential`: an account key, an AzureNamedKeyCredential or AzureSasCredential, or a
    token credential; or a `connection_string`; or a ready `client` (a ContainerClient).
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        account_url: str,
        credential: Any | None = None,
        connection_string: str | None = None,
        client: ContainerClient | None = None,
        page_size: int = LIST_PAGE_SIZE,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.page_size = list_page_size(page_size, LIST_PAGE_SIZE)
        self.container = container
        self.prefix = key_prefix(prefix)
        if client is None:
            options: dict[str, Any] = {
                "retry_policy": BlobRetry(),
                "max_single_get_size": chunk_size,
                "max_chunk_get_size": chunk_size,
            }
            if connection_string is not None:
                client = ContainerClient.from_connection_string(
                    connection_string, container, **options
                )
            else:
                key = key_credential(account_url, credential)
                client = ContainerClient(account_url, container, credential=key, **options)
        self._client = client
        self.root = f"azure://{public_location(client.url)}"

    def list(self) -> Iterator[SourceObject]:
        """List Blobs pages, in the service's (lexicographic) name order."""
        return self._below("")

    def list_ranges(self, parts: int) -> Ranges:
        """The top levels' blobs, and a run per virtual folder below them (sources.listing):
        List Blobs cannot start after a name, so the runs are cut at '/' only."""
        units = plan_folder_units(self._level, parts)
        return iter([iter(u) if isinstance(u, list) else self._below(u.prefix) for u in units])

    def _below(self, rel: str) -> Iterator[SourceObject]:
        """Every blob whose name starts with `rel`, in the service's order."""
        blobs = self._client.list_blobs(
            name_starts_with=(self.prefix + rel) or None,
            include=["metadata"],
            results_per_page=self.page_size,
        )
        skip = len(self.prefix)
        try:
            for blob in blobs:
                if _folder_marker(blob):
                    continue
                yield SourceObject(blob.name[skip:], blob.size, str(blob.etag).strip('"'))
        except AzureError as exc:
            raise self.error(self.describe(), "list", exc) from exc

    def _level(self, rel: str) -> Level:
        """One level below `rel` with a '/' delimiter, in the service's order: the SDK gives a
        page's folders before its blobs, so the two are merged back by name (UTF-16 order)."""
        skip = len(self.prefix)
        items = self._client.walk_blobs(
            name_starts_with=(self.prefix + rel) or None,
            include=["metadata"],
            delimiter="/",
            results_per_page=self.page_size,
        )
        blobs: list[SourceObject | Folder] = []
        folders: dict[str, SourceObject | Folder] = {}  # a folder may come again on the next page
        try:
            for item in items:
                name = item.name[skip:]
                if isinstance(item, BlobPrefix):
                    folders.setdefault(name, Folder(name))
                elif not _folder_marker(item):
                    blobs.append(SourceObject(name, item.size, str(item.etag).strip('"')))
        except AzureError as exc:
            raise self.error(self.describe(), "list", exc) from exc
        return list(
            heapq.merge(blobs, folders.values(), key=lambda unit: utf16_order(_unit_name(unit)))
        )

    def open(self, obj: SourceObject) -> BinaryIO:
        downloader = self._download(obj, None, None)
        return io.BufferedReader(_BlobReader(self, obj, downloader), READ_BUFFER_SIZE)

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        self.check_range(obj, offset, length)
        downloader = self._download(obj, offset, length)
        try:
            data = downloader.readall()
        except AzureError as exc:
            raise self.error(self.location(obj), "read", exc) from exc
        if len(data) != length:
            raise SourceError(
                f"{self.location(obj)}: read {len(data)} bytes at {offset}, not {length}"
            )
        return data

    def _download(
        self, obj: SourceObject, offset: int | None, length: int | None
    ) -> StorageStreamDownloader[bytes]:
        try:
            downloader = self._client.download_blob(
                self.prefix + obj.name,
                offset=offset,
                length=length,
                etag=f'"{obj.version}"',
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
        except AzureError as exc:
            raise self.error(self.location(obj), "read", exc) from exc
        expected = obj.size if length is None else length
        if downloader.size != expected:
            raise SourceChangedError(
                f"{self.location(obj)}: changed since it was listed (the service has"
                f" {downloader.size} bytes, not {expected}); run again to pick it up"
            )
        return downloader

    def error(self, where: str, operation: str, exc: AzureError) -> SourceError:
        """What a failed call at `where` means for the migration: the blob changed or went
        since it was listed, the container is gone, or the service's own reason."""
        code = ""
        if isinstance(exc, HttpResponseError):
            error_code = getattr(exc, "error_code", None)  # a StorageErrorCode, or a str
            code = str(getattr(error_code, "value", error_code) or exc.status_code or "")
        if isinstance(exc, ResourceModifiedError) or code in _CHANGED_CODES:
            return SourceChangedError(
                f"{where}: changed since it was listed ({code or 412}); run again to pick it up"
            )
        if code == "ContainerNotFound":
            return SourceError(f"{self.root}: container does not exist ({code})")
        if isinstance(exc, ResourceNotFoundError):
            return SourceChangedError(f"{where}: not found ({code}); deleted since it was listed?")
        # The message's first line: the rest repeats request ids and XML.
        lines = str(getattr(exc, "message", None) or exc).strip().splitlines()
        reason = f"{code or type(exc).__name__}: {lines[0] if lines else ''}"
        return SourceError(f"{where}: {operation} failed: {reason}")


def _unit_name(unit: SourceObject | Folder) -> str:
    return unit.name if isinstance(unit, SourceObject) else unit.prefix


def _folder_marker(blob: BlobProperties) -> bool:
    """A zero-byte `dir/` blob, or a hierarchical namespace's folder (`hdi_isfolder`)."""
    folder = blob.name.endswith("/") or (blob.metadata or {}).get("hdi_isfolder") == "true"
    return folder and blob.size == 0


class _BlobReader(io.RawIOBase):
    """The downloader's chunks, one at a time (the SDK retries a chunk cut short)."""

    def __init__(
        self, source: AzureSource, obj: SourceObject, downloader: StorageStreamDownloader[bytes]
    ) -> None:
        self._source = source
        self._obj = obj
        self._chunks = downloader.chunks()
        self._chunk = memoryview(b"")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        while not self._chunk:
            try:
                chunk = next(self._chunks, None)
            except AzureError as exc:
                raise self._source.error(self._source.location(self._obj), "read", exc) from exc
            if chunk is None:
                if self._pos != self._obj.size:
                    raise SourceError(
                        f"{self._source.location(self._obj)}: ended at byte {self._pos}"
                        f" of {self._obj.size}"
                    )
                return 0
            self._chunk = memoryview(chunk)
        count = min(len(view), len(self._chunk))
        view[:count] = self._chunk[:count]
        self._chunk = self._chunk[count:]
        self._pos += count
        return count

    def close(self) -> None:
        self._chunk = memoryview(b"")
        super().close()
