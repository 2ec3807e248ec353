"""Chunk header v1: its layout, and parsing it without the key (docs/FORMAT.md §1.1, §3).

Split from chunk.py, which seals and opens chunks: readers that only need to know what a stored
object is (which key sealed it, where it belongs, how large it says it is) use this alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import xxhash

from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import TamperedError, TruncatedError, UnknownVersionError

__all__ = [
    "COMPRESSION_ZSTD",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_PLAIN_BYTES",
    "MAX_ZSTD_EXPANSION",
    "ChunkHeader",
    "read_header",
]

FORMAT_VERSION: int = 1
MAGIC: bytes = b"MGRC"
COMPRESSION_ZSTD = 1

SALT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
NAME_TAG_BYTES = 16
COMMITMENT_BYTES = 32
CHECKSUM_BYTES = 8

PREFIX = struct.Struct(">4sBB")  # magic, version, compression
IDENTITY_HEAD = struct.Struct(">BH")  # kind, plan length
U16 = struct.Struct(">H")
IDENTITY_TAIL = struct.Struct(">IIQ16s")  # generation, shard, sequence, name_tag
KEYING = struct.Struct(">16s32sQQ")  # key_id, salt, plaintext size, ciphertext size

_MIN_IDENTITY = IDENTITY_HEAD.size + U16.size + IDENTITY_TAIL.size  # 37: empty plan/dataset
TAIL = KEYING.size + COMMITMENT_BYTES + CHECKSUM_BYTES  # 104
MIN_HEADER_BYTES = PREFIX.size + _MIN_IDENTITY + TAIL  # 147

# The most plaintext one chunk may hold (FORMAT.md §1.3): a records chunk is at most a chunk
# size (plans allow up to 1 GiB) plus one record that began before its end (up to 1 GiB);
# object parts, manifests, generation records and dead letters are held to it too. A header
# declaring more is refused by every reader, before anything is decrypted or allocated.
MAX_PLAIN_BYTES = 2 * 1024**3
# A zstd block has a 3-byte header and holds at most 128 KiB: no frame can hold more content per
# compressed byte than this. A larger claim is forged, and is refused before allocating it.
MAX_ZSTD_EXPANSION = 128 * 1024 // 3 + 1


@dataclass(frozen=True, slots=True, repr=False)
class ChunkHeader:
    """Parsed, checksum-verified header fields. Holds nothing secret."""

    version: int
    compression: int
    identity: ChunkIdentity
    key_id: bytes
    salt: bytes
    plain_size: int
    cipher_size: int  # ciphertext plus the 16-byte GCM tag
    commitment: bytes
    header_size: int
    raw: bytes  # the header bytes exactly as stored

    @property
    def stored_size(self) -> int:
        return self.header_size + self.cipher_size

    def __repr__(self) -> str:
        return (
            f"ChunkHeader(version={self.version}, {self.identity.describe()}, "
            f"key_id={self.key_id.hex()}, plain_size={self.plain_size}, "
            f"cipher_size={self.cipher_size}, header_size={self.header_size})"
        )


def read_header(data: bytes | memoryview, *, object_key: str | None = None) -> ChunkHeader:
    """Parse and checksum-verify a chunk header; does not need the key."""
    view = memoryview(data).cast("B")
    size = view.nbytes
    if size < MIN_HEADER_BYTES:
        raise TruncatedError(
            f"{size} bytes is too short for a chunk header (at least {MIN_HEADER_BYTES})",
            object_key=object_key,
        )
    magic, version, compression = PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise TamperedError("not a migrator chunk (bad magic)", object_key=object_key)
    if version != FORMAT_VERSION:
        raise UnknownVersionError(
            f"chunk format version {version} is not supported (this build reads {FORMAT_VERSION})",
            object_key=object_key,
        )

    at = PREFIX.size
    kind_id, plan_len = IDENTITY_HEAD.unpack_from(view, at)
    plan_at = at + IDENTITY_HEAD.size
    if size < MIN_HEADER_BYTES + plan_len:
        raise TruncatedError(
            f"{size} bytes is shorter than the header it declares", object_key=object_key
        )
    (dataset_len,) = U16.unpack_from(view, plan_at + plan_len)
    header_size = MIN_HEADER_BYTES + plan_len + dataset_len
    if size < header_size:
        raise TruncatedError(
            f"{size} bytes is shorter than the {header_size}-byte header it declares",
            object_key=object_key,
        )
    raw = bytes(view[:header_size])
    checksum_at = header_size - CHECKSUM_BYTES
    if xxhash.xxh3_64_digest(raw[:checksum_at]) != raw[checksum_at:]:
        raise TamperedError("header checksum mismatch: header bytes changed", object_key=object_key)

    if compression != COMPRESSION_ZSTD:
        raise UnknownVersionError(
            f"compression algorithm {compression} is not supported", object_key=object_key
        )
    try:
        kind = ChunkKind(kind_id)
        dataset_at = plan_at + plan_len + U16.size
        plan = raw[plan_at : plan_at + plan_len].decode("utf-8")
        dataset = raw[dataset_at : dataset_at + dataset_len].decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise TamperedError(f"malformed header identity: {exc}", object_key=object_key) from None
    tail_at = dataset_at + dataset_len
    generation, shard, sequence, name_tag = IDENTITY_TAIL.unpack_from(raw, tail_at)
    keying_at = tail_at + IDENTITY_TAIL.size
    key_id, salt, plain_size, cipher_size = KEYING.unpack_from(raw, keying_at)
    commitment_at = keying_at + KEYING.size
    if cipher_size < TAG_BYTES:
        raise TamperedError(
            f"ciphertext size {cipher_size} is smaller than the GCM tag", object_key=object_key
        )
    if plain_size > MAX_PLAIN_BYTES:
        raise TamperedError(
            f"header declares {plain_size} plaintext bytes, more than the format's maximum"
            f" of {MAX_PLAIN_BYTES}",
            object_key=object_key,
        )
    return ChunkHeader(
        version=version,
        compression=compression,
        identity=ChunkIdentity(kind, plan, dataset, generation, shard, sequence, name_tag),
        key_id=key_id,
        salt=salt,
        plain_size=plain_size,
        cipher_size=cipher_size,
        commitment=raw[commitment_at:checksum_at],
        header_size=header_size,
        raw=raw,
    )
