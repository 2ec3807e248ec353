"""The bounded parallel hot loop: encode (xxh3 → zstd → AES-GCM) then store, on a thread pool.

zstandard, AES-GCM and xxhash release the GIL, so threads use every core without pickling
chunks between processes. In-flight bytes are capped by the budget, whatever the dataset size.
"""

from __future__ import annotations

import functools
import mmap
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.identity import ChunkIdentity
from migrator.errors import MigratorError, StoreError
from migrator.keys.datakey import DataKey
from migrator.state.model import CommittedChunk
from migrator.stores.base import ObjectStore
from migrator.write.upload import ChunkUploader, UploadJournal

Plaintext = bytes | bytearray | memoryview


@dataclass(slots=True)
class ChunkJob:
    """One chunk to seal and store. Either `plaintext` is given, or `load` reads it on the
    worker thread (object parts: file reads then run in parallel, off the coordinating thread)."""

    identity: ChunkIdentity
    object_key: str
    plaintext: Plaintext
    records: int
    name: str | None
    source_end: int
    source_version: str
    load: Callable[[], Plaintext] | None = None
    size: int = 0  # plaintext size when `load` is used

    def plain_size(self) -> int:
        return self.size if self.load is not None else len(self.plaintext)


def _cost(job: ChunkJob) -> int:
    # Plaintext held by the job plus, at worst, a same-sized compressed+encrypted copy.
    return 2 * job.plain_size() + 4096


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
        self._local = threading.local()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._done: deque[CommittedChunk] = deque()
        self._then: deque[Callable[[], None]] = deque()
        self._error: BaseException | None = None
        self._guard = guard

    def submit(self, job: ChunkJob) -> None:
        cost = _cost(job)
        with self._cond:
            # A job larger than the whole budget still runs, alone.
            while self._in_flight and self._in_flight + cost > self._budget and not self._error:
                self._cond.wait()
            self._raise_if_failed()
            self._in_flight += cost
        self._pool.submit(self._guarded, functools.partial(self._work, job, self._key), cost)

    def _encoder(self) -> tuple[ChunkEncoder, bytearray | mmap.mmap]:
        """This thread's encoder and output buffer: a chunk is stored before the next is sealed,
        so one buffer a thread serves every chunk it handles."""
        enc: ChunkEncoder | None = getattr(self._local, "encoder", None)
        if enc is None:
            enc = ChunkEncoder(self._level)
            self._local.encoder = enc
            self._local.out = bytearray()
        out: bytearray | mmap.mmap = self._local.out
        return enc, out

    def _guarded(self, work: Callable[[], None], cost: int) -> None:
        """Runs one job on a worker: the first failure stops the rest and reaches the
        coordinating thread; the budget is given back whatever happens."""
        try:
            if self._error is None:
                work()
        except BaseException as exc:
            with self._cond:
                if self._error is None:
                    self._error = exc
        finally:
            with self._cond:
                self._in_flight -= cost
                self._cond.notify_all()

    def _work(self, job: ChunkJob, key: DataKey) -> None:
        plaintext = job.load() if job.load is not None else job.plaintext
        job.plaintext = b""
        encoder, out = self._encoder()
        meta = dict(self._metadata)
        meta["migrator-format"] = "1"
        meta["migrator-key-id"] = key.key_id.hex()
        if self._guard is not None:
            self._guard(job.identity)
        encoded = self._uploader.seal_and_store(
            encoder, plaintext, job.identity, key, job.object_key, meta, out
        )
        if isinstance(encoded.data, memoryview) and encoded.data.obj is not out:
            self._local.out = encoded.data.obj  # the encoder grew the buffer
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

        def run() -> None:
            task()
            with self._cond:
                self._then.append(then)

        self._pool.submit(self._guarded, run, 1)

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
