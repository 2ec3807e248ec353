"""The zstd frame a chunk's body is (docs/FORMAT.md §1.2): compressed, or raw blocks when the
plaintext will not compress.

zstd stores what it cannot shrink (video, images, archives, ciphertext) as raw blocks anyway,
but only after searching every byte for matches: at level 3 that search is most of the CPU a
chunk of such data costs. A few windows compressed first tell incompressible plaintext apart;
its frame is then written directly, as zstd would have written it (RFC 8878: a frame header
with the content size, then raw blocks of at most 128 KiB), so every zstd decoder reads it and
the stored format does not change.
"""

from __future__ import annotations

import struct

import zstandard

__all__ = [
    "RAW_MIN_BYTES",
    "compress_bound",
    "raw_frame_size",
    "will_not_compress",
    "write_raw_frame",
]

MAGIC = b"\x28\xb5\x2f\xfd"  # 0xFD2FB528, little-endian
# Frame header descriptor: Frame_Content_Size_flag 2 (a 4-byte content size), Single_Segment_flag
# set (no window descriptor: the window is the content size), no checksum, no dictionary.
DESCRIPTOR = 0b1010_0000
FRAME_HEADER = struct.Struct("<4sBI")  # magic, descriptor, content size
BLOCK_BYTES = 128 * 1024  # the most a block holds (RFC 8878 §3.1.1.2.3)
BLOCK_HEADER = 3  # little-endian: bit 0 last block, bits 1-2 type (0: raw), bits 3-23 size
LAST_BLOCK = 1

# Smaller plaintexts are compressed whatever they hold: the search costs little there.
RAW_MIN_BYTES = 256 * 1024
SAMPLES = 4  # windows spread over the plaintext, first and last included
SAMPLE_BYTES = 32 * 1024
# Raw when the windows compress to more than this share of their size: plaintext of a kind zstd
# cannot shrink. One that compresses only where no window fell is stored a little larger.
RAW_WHEN_ABOVE = 0.97


def raw_frame_size(plain_size: int) -> int:
    """Bytes of the frame holding `plain_size` bytes in raw blocks."""
    blocks = max(1, -(-plain_size // BLOCK_BYTES))
    return FRAME_HEADER.size + blocks * BLOCK_HEADER + plain_size


def compress_bound(plain_size: int) -> int:
    """The most a zstd frame of `plain_size` bytes takes (ZSTD_COMPRESSBOUND of zstd.h)."""
    small = (BLOCK_BYTES - plain_size) >> 11 if plain_size < BLOCK_BYTES else 0
    return plain_size + (plain_size >> 8) + small


def will_not_compress(cctx: zstandard.ZstdCompressor, plaintext: memoryview) -> bool:
    """True when sampled windows of the plaintext barely compress at the compressor's level:
    the whole then goes in raw blocks. Decided by the plaintext alone, so sealing the same
    plaintext again (a resumed upload) gives the same frame."""
    size = plaintext.nbytes
    if size < RAW_MIN_BYTES:
        return False
    step = (size - SAMPLE_BYTES) // (SAMPLES - 1)
    sampled = compressed = 0
    for index in range(SAMPLES):
        window = plaintext[index * step : index * step + SAMPLE_BYTES]
        sampled += window.nbytes
        compressed += len(cctx.compress(window))
    return compressed > sampled * RAW_WHEN_ABOVE


def write_raw_frame(plaintext: memoryview, out: memoryview) -> int:
    """Write the frame of `plaintext` in raw blocks at the start of `out`; its length."""
    size = plaintext.nbytes
    if size >= 1 << 32:
        raise ValueError(f"{size} bytes do not fit a 4-byte frame content size")
    end = raw_frame_size(size)
    if out.nbytes < end:
        raise ValueError(f"a {out.nbytes}-byte buffer cannot hold a {end}-byte frame")
    FRAME_HEADER.pack_into(out, 0, MAGIC, DESCRIPTOR, size)
    at = FRAME_HEADER.size
    offset = 0
    while True:
        length = min(BLOCK_BYTES, size - offset)
        last = offset + length == size
        out[at : at + BLOCK_HEADER] = ((length << 3) | (LAST_BLOCK if last else 0)).to_bytes(
            BLOCK_HEADER, "little"
        )
        at += BLOCK_HEADER
        out[at : at + length] = plaintext[offset : offset + length]
        at += length
        offset += length
        if last:
            return at
