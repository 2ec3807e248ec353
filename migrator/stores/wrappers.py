"""Stores that wrap a store: a shared bandwidth limit, and request counting for reports.

Both pass multipart through only when the wrapped store has it, so the engine sees the same
capabilities with or without them.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

from migrator.stores.base import (
    Buffer,
    MultipartStore,
    ObjectInfo,
    ObjectStore,
    PartInfo,
    UnfinishedWrites,
)


class TokenBucket:
    """Bytes a second for every upload of the process; a burst of one second's worth.

    `clock` and `sleep` are injectable so tests can run it on a fake clock.
    """

    def __init__(
        self,
        rate: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be above zero")
        self.rate = rate
        self.burst = burst or rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, nbytes: int) -> float:
        """Wait until nbytes may be sent; returns the seconds waited.

        A request larger than the burst takes the bucket into debt rather than waiting for ever:
        the average rate still holds, which is what shares a link with production traffic.
        """
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= nbytes
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class _Wrapper:
    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def _sending(self, op: str, nbytes: int) -> None:
        """Called before each request that sends or fetches data."""

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        self._sending("put", len(data))
        self.inner.put(key, data, metadata)

    def get(self, key: str) -> bytes:
        self._sending("get", 0)
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        self._sending("head", 0)
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._sending("list", 0)
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._sending("delete", 0)
        self.inner.delete(key)

    def describe(self) -> str:
        return self.inner.describe()

    # --- multipart, only when the wrapped store has it -----------------------------------

    def _multipart(self) -> MultipartStore:
        if not isinstance(self.inner, MultipartStore):
            raise AttributeError("the wrapped store has no multipart uploads")
        return self.inner

    @property
    def multipart_threshold(self) -> int:
        return self._multipart().multipart_threshold

    @property
    def part_size(self) -> int:
        return self._multipart().part_size

    def begin_upload(self, key: str, metadata: dict[str, str]) -> str:
        self._sending("begin_upload", 0)
        return self._multipart().begin_upload(key, metadata)

    def uploaded_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        self._sending("uploaded_parts", 0)
        return self._multipart().uploaded_parts(key, upload_id)

    def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> PartInfo:
        self._sending("upload_part", len(data))
        return self._multipart().upload_part(key, upload_id, number, data)

    def complete_upload(
        self, key: str, upload_id: str, parts: builtins.list[PartInfo], metadata: dict[str, str]
    ) -> None:
        self._sending("complete_upload", 0)
        self._multipart().complete_upload(key, upload_id, parts, metadata)

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._sending("abort_upload", 0)
        self._multipart().abort_upload(key, upload_id)

    def list_uploads(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        self._sending("list_uploads", 0)
        return self._multipart().list_uploads(prefix)

    def remove_unfinished_writes(self, prefix: str) -> int:
        """The wrapped store's; none when it leaves no files of killed writes."""
        if not isinstance(self.inner, UnfinishedWrites):
            return 0
        return self.inner.remove_unfinished_writes(prefix)


class ThrottledStore(_Wrapper):
    """Every byte sent waits for the shared token bucket."""

    def __init__(self, inner: ObjectStore, bucket: TokenBucket) -> None:
        super().__init__(inner)
        self.bucket = bucket

    def _sending(self, op: str, nbytes: int) -> None:
        if nbytes:
            self.bucket.acquire(nbytes)


class CountingStore(_Wrapper):
    """Counts requests by type and bytes sent: the dry run's report and the request forecast."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.requests: Counter[str] = Counter()
        self.bytes_sent = 0
        self._lock = threading.Lock()

    def _sending(self, op: str, nbytes: int) -> None:
        with self._lock:
            self.requests[op] += 1
            self.bytes_sent += nbytes
