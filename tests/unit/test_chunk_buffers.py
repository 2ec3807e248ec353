"""The pipeline's pooled buffers: reused chunk after chunk, bounded by the budget, and every
byte of budget a job takes given back."""

from __future__ import annotations

import functools
import random
import threading
import time

import pytest
import xxhash

from migrator.codec.chunk import decode_chunk
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import StoreError
from migrator.keys.datakey import DataKey
from migrator.stores.base import Buffer
from migrator.stores.memory import MemoryStore
from migrator.write.chunk_buffers import HUGE_PAGE, SMALL_STEP, BufferPool, pooled_size
from migrator.write.pipeline import ChunkJob, ChunkPipeline

KEY = DataKey(bytes(range(32)))
MIB = 1024 * 1024


def test_sizes_round_up_to_steps_and_huge_pages() -> None:
    assert pooled_size(0) == SMALL_STEP
    assert pooled_size(SMALL_STEP + 1) == 2 * SMALL_STEP
    assert pooled_size(HUGE_PAGE) == HUGE_PAGE
    assert pooled_size(HUGE_PAGE + 1) == 2 * HUGE_PAGE


def test_a_buffer_given_back_is_taken_again_by_a_job_of_about_its_size() -> None:
    pool = BufferPool(64 * MIB)
    big = pool.take(5 * MIB)
    pool.give(big)
    assert pool.take(4 * MIB + 1) is big
    pool.give(big)
    small = pool.take(MIB)  # at most twice the size asked: a small job does not tie it up
    assert small is not big and len(small) == MIB
    assert pool.take(6 * MIB) is big


def test_making_a_buffer_drops_the_longest_unused_beyond_the_capacity() -> None:
    pool = BufferPool(8 * MIB)
    first, second = pool.take(4 * MIB), pool.take(4 * MIB)
    pool.give(first)
    pool.give(second)
    third = pool.take(7 * MIB)  # neither fits: both go, the pool stays within its capacity
    pool.give(third)
    assert pool.take(4 * MIB) is not first
    pool.clear()


class SlowStore(MemoryStore):
    """Counts the puts in progress at once."""

    def __init__(self, *, fail_after: int | None = None) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.now = self.most = self.puts = 0
        self.fail_after = fail_after

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        with self.lock:
            self.now += 1
            self.puts += 1
            self.most = max(self.most, self.now)
            failing = self.fail_after is not None and self.puts > self.fail_after
        try:
            time.sleep(0.002)
            if failing:
                raise StoreError(f"{key}: refused")
            super().put(key, data, metadata)
        finally:
            with self.lock:
                self.now -= 1


def part_jobs(blobs: list[bytes]) -> list[ChunkJob]:
    def load_into(blob: bytes, buffer: object) -> memoryview:
        view = memoryview(buffer).cast("B")[: len(blob)]  # type: ignore[arg-type]
        view[:] = blob
        return view

    jobs = []
    for n, blob in enumerate(blobs):
        ident = ChunkIdentity(ChunkKind.OBJECT_PART, "p", "d", 1, n % 3, 0, n.to_bytes(16))
        job = ChunkJob(ident, f"d/o/{n}", b"", 0, f"name-{n}", 0, "v")
        job.load_into = functools.partial(load_into, blob)
        job.size = len(blob)
        jobs.append(job)
    return jobs


def test_parts_read_into_pooled_buffers_are_stored_whole_and_the_budget_comes_back() -> None:
    rng = random.Random(5)
    sizes = [rng.choice((0, 10, 300_000, 2 * MIB + 3, 5 * MIB)) for _ in range(40)]
    blobs = [rng.randbytes(s) if i % 2 else b"a" * s for i, s in enumerate(sizes)]
    store = SlowStore()
    budget = 24 * MIB
    pipeline = ChunkPipeline(store, KEY, level=1, workers=6, budget=budget)
    try:
        for job in part_jobs(blobs):
            pipeline.submit(job)
        done = {c.object_key: c for c in pipeline.drain()}
        pipeline.check()
        assert pipeline.idle() and pipeline._in_flight == 0
    finally:
        pipeline.close()
    assert len(done) == len(blobs)
    for n, blob in enumerate(blobs):
        ident = ChunkIdentity(ChunkKind.OBJECT_PART, "p", "d", 1, n % 3, 0, n.to_bytes(16))
        assert decode_chunk(store.get(f"d/o/{n}"), ident, KEY) == blob
        assert done[f"d/o/{n}"].plain_xxh3 == xxhash.xxh3_128_hexdigest(blob)
    assert store.most >= 2  # the budget lets several 5 MiB parts be stored at once


def test_a_failed_put_gives_back_the_budget_and_the_buffers() -> None:
    blobs = [random.Random(n).randbytes(MIB) for n in range(12)]
    store = SlowStore(fail_after=3)
    pipeline = ChunkPipeline(store, KEY, level=1, workers=4, budget=16 * MIB)
    try:
        with pytest.raises(StoreError):
            for job in part_jobs(blobs):
                pipeline.submit(job)
            pipeline.drain()
            pipeline.check()
        pipeline.drain()
        assert pipeline._in_flight == 0
    finally:
        pipeline.close()
