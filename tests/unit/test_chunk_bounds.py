"""A chunk's declared plaintext size is bounded before anything is allocated: by its manifest
entry when the reader has one, and always by the format's maximum (docs/FORMAT.md §1.3, §3).

zstd stores a run of zeros at about 32 bytes per 1 MiB, so a few kilobytes sealed by a key
holder can declare hundreds of MiB that a reader would otherwise allocate and fill. Memory is
measured with tracemalloc, which sees the decompressor's output buffer (a Python bytes object).
"""

from __future__ import annotations

import mmap
import tracemalloc
from collections.abc import Callable

import pytest
import xxhash

from migrator.codec.chunk import (
    MAX_PLAIN_BYTES,
    ChunkEncoder,
    decode_chunk,
    read_header,
)
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import TamperedError
from migrator.keys.datakey import DataKey
from migrator.sizes import KiB, MiB

KEY = DataKey(bytes(range(32)))
IDENTITY = ChunkIdentity(ChunkKind.RECORDS, "plan", "profiles", 1, 0, 0)
OBJECT_KEY = "profiles/g000001/s00000/r/00000000.mgc"
BOMB_BYTES = 256 * MiB
# What a refused read may allocate: the stored chunk's size, a few times over, and no more.
REFUSED_BUDGET = 1 * MiB


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """256 MiB of zeros, sealed as a valid records chunk by someone holding the data key."""
    plain = bytes(BOMB_BYTES)
    sealed = bytes(ChunkEncoder(3).encode(plain, IDENTITY, KEY).data)
    del plain
    assert len(sealed) < 16 * KiB
    return sealed


def peak_bytes(work: Callable[[], object]) -> int:
    """The most memory Python allocated at once while `work` ran (its exceptions propagate)."""
    tracemalloc.start()
    try:
        work()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_chunk_declaring_more_than_its_manifest_is_refused_before_allocating(
    bomb: bytes,
) -> None:
    refused: list[TamperedError] = []

    def read() -> None:
        with pytest.raises(TamperedError) as caught:
            decode_chunk(bomb, IDENTITY, KEY, object_key=OBJECT_KEY, expected_plain_size=16 * MiB)
        refused.append(caught.value)

    peak = peak_bytes(read)
    assert f"header declares {BOMB_BYTES} plaintext bytes, its manifest records" in str(refused[0])
    assert OBJECT_KEY in str(refused[0])
    assert peak < REFUSED_BUDGET, f"a refused read allocated {peak:,} bytes"


def test_the_measure_sees_what_an_unbounded_read_allocates(bomb: bytes) -> None:
    """The same chunk opened as its manifest says: the whole plaintext is allocated, so the
    budget above is a real bound and not a blind spot of the measure."""
    plain: list[bytes] = []
    peak = peak_bytes(
        lambda: plain.append(decode_chunk(bomb, IDENTITY, KEY, expected_plain_size=BOMB_BYTES))
    )
    assert len(plain[0]) == BOMB_BYTES and not any(plain[0][:: 1 << 20])
    assert peak >= BOMB_BYTES


def test_a_header_declaring_more_than_the_format_maximum_is_refused_without_the_key() -> None:
    """No key is needed to refuse it: read_header checks the size with the other header
    fields, so no reader decrypts or allocates for it."""
    chunk = ChunkEncoder(3).encode(b'{"id": 1}\n', IDENTITY, KEY)
    header = read_header(chunk.data)
    forged = bytearray(chunk.data)
    at = header.header_size - 8 - 32 - 16  # plain_size, cipher_size, commitment, checksum
    forged[at : at + 8] = (MAX_PLAIN_BYTES + 1).to_bytes(8, "big")
    checksum_at = header.header_size - 8
    forged[checksum_at : header.header_size] = xxhash.xxh3_64_digest(forged[:checksum_at])

    def read() -> None:
        for opener in (
            lambda: read_header(forged, object_key=OBJECT_KEY),
            lambda: decode_chunk(bytes(forged), IDENTITY, KEY, object_key=OBJECT_KEY),
        ):
            with pytest.raises(TamperedError, match="more than the format's maximum") as caught:
                opener()
            assert OBJECT_KEY in str(caught.value)

    assert peak_bytes(read) < REFUSED_BUDGET


def test_the_encoder_seals_nothing_larger_than_the_format_maximum() -> None:
    """A writer cannot make a chunk readers would refuse. The plaintext is an anonymous map
    the kernel never fills: refusing it reads none of it."""
    huge = mmap.mmap(-1, MAX_PLAIN_BYTES + 1)
    try:
        with pytest.raises(ValueError, match="more than a chunk may hold"):
            ChunkEncoder(1).encode(memoryview(huge), IDENTITY, KEY)
    finally:
        huge.close()
