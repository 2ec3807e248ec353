"""In-memory `ObjectStore` for unit tests: counts requests and can fail puts on demand."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import Buffer, ObjectInfo

# Same page size as S3's ListObjectsV2, so request counts read like an S3 bill.
LIST_PAGE_SIZE = 1000


class MemoryStore:
    """Dict-backed and thread-safe.

    `requests` counts calls by type ("put", "get", "head", "list" per page, "delete");
    `bytes_written` sums the sizes of successful puts. Setting `fail_puts` to N makes the next
    N puts raise StoreError without storing anything.
    """

    def __init__(self, *, fail_puts: int = 0) -> None:
        self._objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.bytes_written = 0
        self.fail_puts = fail_puts

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        _check_key(key)
        with self._lock:
            self.requests["put"] += 1
            if self.fail_puts > 0:
                self.fail_puts -= 1
                raise StoreError(f"{self.describe()}: {key}: put failed (injected failure)")
            self._objects[key] = (bytes(data), dict(metadata or {}))
            self.bytes_written += len(data)

    def get(self, key: str) -> bytes:
        with self._lock:
            self.requests["get"] += 1
            stored = self._objects.get(key)
        if stored is None:
            raise MissingObjectError(f"not found in {self.describe()}", object_key=key)
        return stored[0]

    def head(self, key: str) -> ObjectInfo | None:
        with self._lock:
            self.requests["head"] += 1
            stored = self._objects.get(key)
        if stored is None:
            return None
        return ObjectInfo(key=key, size=len(stored[0]), metadata=dict(stored[1]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Key and size only: like S3 listings, metadata comes from `head`."""
        with self._lock:
            self.requests["list"] += 1
            found = sorted(
                (key, len(data))
                for key, (data, _) in self._objects.items()
                if key.startswith(prefix)
            )
        for index, (key, size) in enumerate(found):
            if index and index % LIST_PAGE_SIZE == 0:
                with self._lock:
                    self.requests["list"] += 1
            yield ObjectInfo(key=key, size=size)

    def delete(self, key: str) -> None:
        with self._lock:
            self.requests["delete"] += 1
            self._objects.pop(key, None)

    def describe(self) -> str:
        return f"memory:{id(self):x}"


def _check_key(key: str) -> None:
    if not key:
        raise StoreError("empty object key")
