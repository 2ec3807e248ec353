"""What the machine allows, for the runs to be measured against: the hot loop's ceiling
(ChunkEncoder on every core over in-memory chunks), each stage alone on one thread, and the
destination disk's write rate."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import xxhash
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from datasets import CHUNK_SIZE
from timed_runs import OTHER_LOAD_WARN_CPUS, busy_cpu_seconds, own_cpu_seconds

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.keys.datakey import DataKey

PASSES = 3
CEILING_CHUNKS = 64  # the ceiling holds at most 1 GiB of one data type in memory
PRIMITIVE_CHUNKS = 8  # single-thread primitives time at most this many chunks (128 MiB)


@dataclass
class Ceiling:
    mb_s: float  # plaintext MB/s (10**6 bytes), best of PASSES, all cores
    passes_s: list[float]
    plain_bytes: int
    stored_bytes: int
    chunks: int
    threads: int
    cpu_per_wall: float  # this process's CPU seconds per wall second over the timed passes
    other_load_cpus: float  # CPUs busy with other processes meanwhile

    @property
    def compression(self) -> float:
        return self.plain_bytes / self.stored_bytes

    @property
    def contended(self) -> bool:
        """Other processes took a noticeable share of the CPUs during the timed passes."""
        return self.other_load_cpus > OTHER_LOAD_WARN_CPUS


def measure_ceiling(chunks: Sequence[bytes], level: int) -> Ceiling:
    """ChunkEncoder on every core, one encoder per thread; best of PASSES after a warm-up."""
    threads = os.cpu_count() or 1
    key = DataKey(os.urandom(32))
    local = threading.local()

    def encode(seq: int) -> int:
        encoder = getattr(local, "encoder", None)
        if encoder is None:
            encoder = local.encoder = ChunkEncoder(level)
        identity = ChunkIdentity(ChunkKind.RECORDS, "bench", "d", 1, 0, seq)
        return encoder.encode(chunks[seq], identity, key).stored_size

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(encode, range(min(len(chunks), 2 * threads))))  # warm-up
        passes: list[float] = []
        stored = 0
        own_before, busy_before = own_cpu_seconds(), busy_cpu_seconds()
        for _ in range(PASSES):
            started = time.perf_counter()
            stored = sum(pool.map(encode, range(len(chunks))))
            passes.append(time.perf_counter() - started)
        own = own_cpu_seconds() - own_before
        other = max(0.0, busy_cpu_seconds() - busy_before - own)
    plain = sum(len(c) for c in chunks)
    wall = sum(passes)
    return Ceiling(
        mb_s=plain / min(passes) / 1e6,
        passes_s=passes,
        plain_bytes=plain,
        stored_bytes=stored,
        chunks=len(chunks),
        threads=threads,
        cpu_per_wall=own / wall,
        other_load_cpus=other / wall,
    )


def measure_primitive(chunks: Sequence[bytes], work: Callable[[bytes], object]) -> float:
    """Single-thread MB/s of `work` over up to PRIMITIVE_CHUNKS chunks, best of two."""
    sample = chunks[:PRIMITIVE_CHUNKS]
    work(sample[0])
    best = min(_timed(work, sample) for _ in range(2))
    return sum(len(c) for c in sample) / best / 1e6


def _timed(work: Callable[[bytes], object], chunks: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for chunk in chunks:
        work(chunk)  # the result is dropped at once, as the ceiling's encoder output is
    return time.perf_counter() - started


def primitives(
    kind: str, chunks: Sequence[bytes], level: int, *, data_independent: bool
) -> dict[str, float]:
    """Single-thread MB/s of each stage alone; AES-GCM and xxh3 do not depend on the data, so
    they are timed only if `data_independent` (once a benchmark)."""
    result = {f"zstd_{kind}": measure_primitive(chunks, zstandard.ZstdCompressor(level).compress)}
    if data_independent:
        # A fixed nonce is fine for timing throw-away ciphertext; the product never reuses one.
        aead = AESGCM(os.urandom(32))
        nonce = os.urandom(12)
        result["aes_gcm"] = measure_primitive(chunks, lambda c: aead.encrypt(nonce, c, None))
        result["xxh3_128"] = measure_primitive(chunks, xxhash.xxh3_128_digest)
    return result


def measure_disk_write(folder: Path, total: int, threads: int) -> float:
    """MB/s of the destination's disk for what a local destination does per chunk: write a
    16 MiB file, fsync it, rename it into place, fsync the folder, on `threads` threads."""
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(CHUNK_SIZE)
    count = max(threads, total // CHUNK_SIZE)

    def write(i: int) -> None:
        tmp, final = folder / f".{i}.tmp", folder / f"{i}.bin"
        with tmp.open("wb") as fh:
            fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, range(count)))
    seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return count * CHUNK_SIZE / seconds / 1e6
