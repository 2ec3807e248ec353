"""The one seam for destination I/O: engine, verify and restore only ever see `ObjectStore`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# What put() accepts: a sealed chunk is built in a bytearray to avoid one whole-chunk copy.
Buffer = bytes | bytearray | memoryview


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
