"""The bounded parallel hot loop: encode (xxh3 → zstd → AES-GCM) then store, on a thread pool.

zstandard, AES-GCM and xxhash release the GIL, so threads use every core without pickling
chunks between processes. In-flight bytes are capped by the budget, whatever the dataset size:
a job reserves the buffers it will be read, framed and sealed into, takes them from a pool that
keeps them for the next jobs (write.chunk_buffers), and gives back the ones it no longer needs
as soon as it is sealed, so that the next jobs are sealed while it is stored.
"""

from __future__ import annotations

import functools
import mmap
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from migrator.codec.chunk import ChunkEncoder, stored_size_bound
from migrator.codec.identity import ChunkIdentity
from migrator.codec.zstd_frame import RAW_MIN_BYTES, raw_frame_size
from migrator.errors import MigratorError, StoreError
from migrator.keys.datakey import DataKey
from migrator.state.model import CommittedChunk
from migrator.stores.base import ObjectStore
from migrator.write.chunk_buffers import BufferPool, pooled_size
from migrator.write.upload import ChunkUploader, UploadJournal

Plaintext = bytes | bytearray | memoryview


@dataclass(slots=True)
class ChunkJob:
    """One chunk to seal and store. Either `plaintext` is given, or `load` reads it on the
    worker thread (object parts: file reads then run in parallel, off the coordinating thread),
    or `load_into` reads it there into a pooled buffer (write.chunk_buffers)."""

    identity: ChunkIdentity
    object_key: str
    plaintext: Plaintext
    records: int
    name: str | None
    source_end: int
    source_version: str
    load: Callable[[], Plaintext] | None = None
    size: int = 0  # plaintext size when `load` or `load_into` is used
    load_into: Callable[[mmap.mmap], Plaintext] | None = None

    def plain_size(self) -> int:
        loaded = self.load is not None or self.load_into is not None
        return self.size if loaded else len(self.plaintext)


def _reservation(job: ChunkJob) -> int:
    """The budget a job takes while it waits and is sealed: plaintext handed to it, or the
    buffer it is read into; the buffer it is sealed into; and for a part read from a source,
    the frame of plaintext that will not compress (objects mostly will not)."""
    size = job.plain_size()
    held = pooled_size(size) if job.load_into is not None else size
    if job.load_into is not None and size >= RAW_MIN_BYTES:
        held += pooled_size(raw_frame_size(size))
    return held + pooled_size(stored_size_bound(job.identity, size))


class _Lease:
    """A job's share of the budget (what it counts in flight) and the pooled buffers it holds."""

    __slots__ = ("cost", "held")

    def __init__(self, cost: int) -> None:
        self.cost = cost
        self.held: list[mmap.mmap] = []


class ChunkPipeline:
    """submit() blocks while the budget is spent; finished() hands back confirmed chunks."""

    def __init__(
        self,
        store: ObjectStore,
        key: DataKey,
        *,
        level: int,
        workers: int,
        budget: int,
        metadata: dict[str, str] | None = None,
        journal: UploadJournal | None = None,
        guard: Callable[[ChunkIdentity], None] | None = None,
    ) -> None:
        """`guard` runs on the worker before a chunk is stored and may refuse it by raising (a
        worker whose shard lease is in doubt stores nothing more for that shard)."""
        self._uploader = ChunkUploader(store, journal)
        self._key = key
        self._level = level
        self._budget = budget
        self._metadata = metadata or {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk")
        self._buffers = BufferPool(budget)
        self._local = threading.local()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._done: deque[CommittedChunk] = deque()
        self._then: deque[Callable[[], None]] = deque()
        self._error: BaseException | None = None
        self._guard = guard

    def submit(self, job: ChunkJob) -> None:
        lease = _Lease(_reservation(job))
        # The job's pooled buffers may come from the free ones: those are not counted twice.
        pooled = lease.cost - (0 if job.load_into is not None else job.plain_size())
        with self._cond:
            # Jobs in flight and the free buffers kept for the next ones share the budget: once
            # a job is let in, free buffers beyond what the budget leaves (and what the job will
            # take from them) are dropped, the longest unused first. A job larger than the whole
            # budget still runs, alone.
            while True:
                room = self._budget - self._in_flight - lease.cost
                if room >= 0 or not self._in_flight or self._error:
                    break
                self._cond.wait()
            self._buffers.trim(max(0, room) + pooled)
            self._raise_if_failed()
            self._in_flight += lease.cost
        self._pool.submit(self._guarded, functools.partial(self._work, job, self._key), lease)

    def _encoder(self) -> ChunkEncoder:
        """This thread's encoder (a zstd context is not thread-safe)."""
        enc: ChunkEncoder | None = getattr(self._local, "encoder", None)
        if enc is None:
            enc = ChunkEncoder(self._level)
            self._local.encoder = enc
        return enc

    def _charge(self, lease: _Lease, delta: int) -> None:
        """Count `delta` more (or, negative, fewer) bytes in flight for this job."""
        if delta:
            with self._cond:
                lease.cost += delta
                self._in_flight += delta
                if delta < 0:
                    self._cond.notify_all()

    def _take(self, lease: _Lease, size: int, *, reserved: bool) -> mmap.mmap:
        """A pooled buffer of at least `size` bytes; one larger than reserved counts the more."""
        buffer = self._buffers.take(size)
        lease.held.append(buffer)
        self._charge(lease, len(buffer) - (pooled_size(size) if reserved else 0))
        return buffer

    def _give(self, lease: _Lease, buffer: mmap.mmap) -> None:
        lease.held = [b for b in lease.held if b is not buffer]
        self._buffers.give(buffer)
        self._charge(lease, -len(buffer))

    def _guarded(self, work: Callable[[_Lease], None], lease: _Lease) -> None:
        """Runs one job on a worker: the first failure stops the rest and reaches the
        coordinating thread; the budget and the buffers are given back whatever happens."""
        try:
            if self._error is None:
                work(lease)
        except BaseException as exc:
            with self._cond:
                if self._error is None:
                    self._error = exc
        finally:
            for buffer in lease.held:
                self._buffers.give(buffer)
            with self._cond:
                self._in_flight -= lease.cost
                self._cond.notify_all()

    def _work(self, job: ChunkJob, key: DataKey, lease: _Lease) -> None:
        size = job.plain_size()
        read_into: mmap.mmap | None = None
        if job.load_into is not None:
            read_into = self._take(lease, size, reserved=True)
            plaintext = job.load_into(read_into)
        else:
            plaintext = job.load() if job.load is not None else job.plaintext
        job.plaintext = b""
        out = self._take(lease, stored_size_bound(job.identity, size), reserved=True)
        frame_reserved = job.load_into is not None and size >= RAW_MIN_BYTES
        frame: list[mmap.mmap] = []

        def scratch(frame_size: int) -> mmap.mmap:
            if not frame or len(frame[-1]) < frame_size:  # sealed again: the same buffer
                frame.append(self._take(lease, frame_size, reserved=frame_reserved and not frame))
            return frame[-1]

        def sealed() -> None:
            """The plaintext and its frame are no longer needed: the next jobs may use them."""
            if frame_reserved and not frame:
                self._charge(lease, -pooled_size(raw_frame_size(size)))
            for buffer in ([read_into] if read_into is not None else []) + frame:
                self._give(lease, buffer)

        meta = dict(self._metadata)
        meta["migrator-format"] = "1"
        meta["migrator-key-id"] = key.key_id.hex()
        if self._guard is not None:
            self._guard(job.identity)
        encoded = self._uploader.seal_and_store(
            self._encoder(),
            plaintext,
            job.identity,
            key,
            job.object_key,
            meta,
            out,
            scratch=scratch,
            sealed=sealed,
        )
        del plaintext
        done = CommittedChunk(
            dataset=job.identity.dataset,
            generation=job.identity.generation,
            shard=job.identity.shard,
            object_key=job.object_key,
            sequence=job.identity.sequence,
            name=job.name,
            records=job.records,
            plain_size=encoded.plain_size,
            stored_size=encoded.stored_size,
            plain_xxh3=encoded.plain_xxh3.hex(),
            stored_xxh3=encoded.stored_xxh3.hex(),
            source_end=job.source_end,
            source_version=job.source_version,
        )
        with self._cond:
            self._done.append(done)

    def _raise_if_failed(self) -> None:
        err = self._error
        if err is None:
            return
        if isinstance(err, MigratorError):
            raise err
        raise StoreError(f"chunk pipeline failed: {type(err).__name__}: {err}") from err

    def submit_task(self, task: Callable[[], None], then: Callable[[], None]) -> None:
        """Run a small store request (a manifest put) on the pool; `then` runs later on the
        coordinating thread, from finished() or drain(), once the request succeeded. Keeps a
        slow store's round trips off the thread that feeds the pool."""
        with self._cond:
            self._raise_if_failed()
            self._in_flight += 1

        def run(lease: _Lease) -> None:
            task()
            with self._cond:
                self._then.append(then)

        self._pool.submit(self._guarded, run, _Lease(1))

    def finished(self) -> list[CommittedChunk]:
        """Chunks the store has confirmed since the last call (ready to commit); first runs the
        `then` of every finished task."""
        with self._cond:
            out = list(self._done)
            self._done.clear()
            thens = list(self._then)
            self._then.clear()
        for then in thens:
            then()
        return out

    def drain(self) -> list[CommittedChunk]:
        """Wait for every submitted job and return what finished; check() then raises a failure.

        Finished chunks are handed back even when another failed, so they still get committed.
        """
        with self._cond:
            while self._in_flight:
                self._cond.wait()
        return self.finished()

    def idle(self) -> bool:
        """Nothing in flight and nothing finished but not yet handed back."""
        with self._cond:
            return not (self._in_flight or self._done or self._then)

    def check(self) -> None:
        with self._cond:
            self._raise_if_failed()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._buffers.clear()
