"""The one seam for destination I/O: engine, verify and restore only ever see `ObjectStore`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from migrator.sizes import MiB

# What put() accepts: a sealed chunk is built in a bytearray to avoid one whole-chunk copy.
Buffer = bytes | bytearray | memoryview

# A cloud store's multipart defaults when the plan leaves them unset. Here rather than in
# stores/s3.py so that estimates can use them without importing an SDK.
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB


def key_prefix(prefix: str) -> str:
    """A plan's prefix as every key below it starts: '/' at neither end, then one '/' (or
    nothing), so that a prefix written "a/", "/a" or "a" names the same keys."""
    stripped = prefix.strip("/")
    return stripped + "/" if stripped else ""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """Keys are '/'-separated strings relative to the store's root (prefix already applied)."""

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        """Store `data` whole; returns only once the store has durably confirmed it.

        `data` may be a view of a buffer the caller reuses after put returns: keep no reference.
        """

    def get(self, key: str) -> bytes:
        """Whole object; raises MissingObjectError if absent."""

    def head(self, key: str) -> ObjectInfo | None:
        """Size and metadata, or None if absent."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Streams every object whose key starts with prefix, in key order, paged."""

    def delete(self, key: str) -> None:
        """Removes the object; absent is not an error."""

    def describe(self) -> str:
        """Human-readable location for messages (never credentials)."""


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One uploaded part of a multipart upload (S3 part / Azure staged block)."""

    number: int  # 1-based, in object order
    size: int
    etag: str  # S3 ETag, or the Azure block id
    checksum: str | None = None  # the service-side checksum the store sent with the part


@runtime_checkable
class MultipartStore(Protocol):
    """Stores that upload large objects in parts and can resume an upload from its parts.

    The write stage (write/upload.py) drives these: it decides part boundaries (`part_size`) and
    journals the upload so that a restarted run re-sends only the parts the store lacks.
    `uploaded_parts`, `abort_upload` and `list_uploads` are optional on some servers (S3
    look-alikes): they may raise UnsupportedOperationError, and the engine does without them.
    """

    multipart_threshold: int  # objects larger than this go through the methods below
    part_size: int  # bytes a part (the last may be smaller)

    def begin_upload(self, key: str, metadata: dict[str, str]) -> str:
        """Start an upload; returns its upload id."""

    def uploaded_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        """Parts the store holds for this upload, or None if the upload no longer exists."""

    def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> PartInfo:
        """Send one part with a service-checked checksum; returns once the store confirmed it."""

    def complete_upload(
        self, key: str, upload_id: str, parts: list[PartInfo], metadata: dict[str, str]
    ) -> None:
        """Assemble the parts, in number order, into the object under `key`."""

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Discard an upload and its parts; absent is not an error."""

    def list_uploads(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """(key, upload_id) of every unfinished upload under prefix: for orphan clean-up."""


@runtime_checkable
class UnfinishedWrites(Protocol):
    """Stores whose killed writes leave files behind (a local folder). The engine clears a
    prefix it owns before writing there, as it aborts multipart uploads nobody journaled."""

    def remove_unfinished_writes(self, prefix: str) -> int:
        """Remove what killed writes left under prefix; returns how many files."""
