"""Plaintext that will not compress is sealed as a zstd frame of raw blocks, written without
zstd's search: every zstd decoder reads it, migrator's and the one written from FORMAT.md."""

from __future__ import annotations

import os
import random

import pytest
import zstandard

from migrator.codec.chunk import (
    COMPRESSION_ZSTD,
    ChunkEncoder,
    decode_chunk,
    read_header,
    stored_size_bound,
)
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.zstd_frame import (
    BLOCK_BYTES,
    RAW_MIN_BYTES,
    compress_bound,
    raw_frame_size,
    will_not_compress,
    write_raw_frame,
)
from migrator.keys.datakey import DataKey
from tests.format_decoder import Identity, decode, key_id

SECRET = bytes(range(32))
KEY = DataKey(SECRET)
TAG = bytes(range(16))
IDENT = ChunkIdentity(ChunkKind.OBJECT_PART, "plan", "videos", 1, 3, 0, TAG)
SIZES = [0, 1, 255, 256, BLOCK_BYTES - 1, BLOCK_BYTES, BLOCK_BYTES + 1, 3 * BLOCK_BYTES, 1_000_003]


def noise(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def text(size: int) -> bytes:
    line = b'{"id": 12345, "name": "alpha", "status": "active", "tags": ["a", "b"]}\n'
    return (line * (size // len(line) + 1))[:size]


@pytest.mark.parametrize("size", SIZES)
def test_a_raw_frame_is_a_zstd_frame_of_its_plaintext(size: int) -> None:
    plain = noise(size)
    frame = bytearray(raw_frame_size(size))
    assert write_raw_frame(memoryview(plain), memoryview(frame)) == len(frame)
    assert zstandard.frame_content_size(bytes(frame)) == size
    decoded = zstandard.ZstdDecompressor().decompress(
        bytes(frame), max_output_size=max(size, 1), allow_extra_data=False
    )
    assert decoded == plain
    assert raw_frame_size(size) <= compress_bound(size)


def test_a_buffer_too_small_for_the_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        write_raw_frame(memoryview(noise(1000)), memoryview(bytearray(1000)))


def test_noise_will_not_compress_text_will_and_small_plaintext_is_always_compressed() -> None:
    cctx = zstandard.ZstdCompressor(level=3)
    assert will_not_compress(cctx, memoryview(noise(RAW_MIN_BYTES)))
    assert not will_not_compress(cctx, memoryview(text(4 * RAW_MIN_BYTES)))
    assert not will_not_compress(cctx, memoryview(noise(RAW_MIN_BYTES - 1)))
    # Noise with compressible stretches where the windows fall is compressed as a whole.
    mixed = bytearray(noise(4 * RAW_MIN_BYTES))
    mixed[: 64 * 1024] = text(64 * 1024)
    mixed[-64 * 1024 :] = text(64 * 1024)
    assert not will_not_compress(cctx, memoryview(mixed))


def test_noise_is_sealed_raw_and_opens_with_both_decoders() -> None:
    plain = noise(1_000_003)
    lent: list[int] = []

    def scratch(size: int) -> bytearray:
        lent.append(size)
        return bytearray(size + 7)

    sealed = ChunkEncoder(3).encode(plain, IDENT, KEY, scratch=scratch)
    stored = bytes(sealed.data)
    header = read_header(stored)
    assert header.compression == COMPRESSION_ZSTD
    assert lent == [raw_frame_size(len(plain))]
    assert sealed.stored_size == header.header_size + raw_frame_size(len(plain)) + 16
    assert sealed.stored_size <= stored_size_bound(IDENT, len(plain))
    assert decode_chunk(stored, IDENT, KEY, expected_plain_size=len(plain)) == plain
    independent = Identity(2, "plan", "videos", 1, 3, 0, TAG)
    assert decode(stored, independent, {key_id(SECRET): SECRET}, "k", len(plain)) == plain


def test_compressible_plaintext_is_compressed_and_lends_no_scratch() -> None:
    plain = text(1_000_003)

    def scratch(size: int) -> bytearray:
        raise AssertionError("no frame buffer for plaintext zstd can shrink")

    sealed = ChunkEncoder(3).encode(plain, IDENT, KEY, scratch=scratch)
    assert sealed.stored_size < len(plain) // 10
    assert decode_chunk(bytes(sealed.data), IDENT, KEY) == plain


def test_resealing_noise_under_its_salt_gives_the_same_bytes() -> None:
    """A resumed multipart upload re-seals under the journaled salt and must get the very bytes
    of the first attempt: the choice of raw blocks depends on the plaintext alone."""
    plain = noise(RAW_MIN_BYTES * 3)
    salt = os.urandom(32)
    first = ChunkEncoder(3).encode(plain, IDENT, KEY, salt=salt)
    again = ChunkEncoder(3).encode(bytearray(plain), IDENT, KEY, salt=salt, out=bytearray(1))
    assert bytes(first.data) == bytes(again.data)
    assert first.stored_xxh3 == again.stored_xxh3


@pytest.mark.parametrize("size", [0, 10, RAW_MIN_BYTES, 5_000_000])
def test_the_stored_size_bound_holds_for_noise_and_text(size: int) -> None:
    encoder = ChunkEncoder(1)
    for plain in (noise(size), text(size)):
        assert encoder.encode(plain, IDENT, KEY).stored_size <= stored_size_bound(IDENT, size)
