"""Chunk format v1: one stored object = header || AES-256-GCM(zstd(plaintext)) || tag.

docs/FORMAT.md is the specification; this module follows it byte for byte. The encoder is the
hot loop of a migration (xxh3-128 → zstd → AES-256-GCM); the three libraries release the GIL, so
one `ChunkEncoder` per worker thread scales across cores. Plaintext that will not compress skips
zstd's search: its frame is written as raw blocks (codec.zstd_frame), in the same format.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import mmap
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import xxhash
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from migrator.codec.chunk_header import (
    CHECKSUM_BYTES,
    COMMITMENT_BYTES,
    COMPRESSION_ZSTD,
    FORMAT_VERSION,
    KEYING,
    MAGIC,
    MAX_PLAIN_BYTES,
    MAX_ZSTD_EXPANSION,
    MIN_HEADER_BYTES,
    NAME_TAG_BYTES,
    NONCE_BYTES,
    PREFIX,
    SALT_BYTES,
    TAG_BYTES,
    TAIL,
    ChunkHeader,
    read_header,
)
from migrator.codec.identity import ChunkIdentity
from migrator.codec.zstd_frame import (
    compress_bound,
    raw_frame_size,
    will_not_compress,
    write_raw_frame,
)
from migrator.errors import (
    DigestMismatchError,
    MisplacedChunkError,
    TamperedError,
    TruncatedError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey

__all__ = [
    "COMPRESSION_ZSTD",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_PLAIN_BYTES",
    "MAX_ZSTD_EXPANSION",
    "ChunkEncoder",
    "ChunkHeader",
    "EncodedChunk",
    "decode_chunk",
    "object_tag",
    "object_tagger",
    "read_header",
    "sealing_buffer",
    "stored_size_bound",
]

# HKDF-SHA256 info labels; each output is derived separately from (data key, salt).
INFO_AES_KEY = b"migrator/v1/chunk/aes-256-gcm-key"
INFO_NONCE = b"migrator/v1/chunk/aes-256-gcm-nonce"
INFO_COMMIT_KEY = b"migrator/v1/chunk/commitment-key"
INFO_NAME_TAG_KEY = b"migrator/v1/name-tag-key"

MAX_LEVEL = 22


@dataclass(frozen=True, slots=True, repr=False)
class EncodedChunk:
    """A sealed chunk ready to store, with the sizes and digests the manifest records."""

    data: bytearray | memoryview  # the whole stored object: header || ciphertext || tag
    plain_size: int
    stored_size: int
    plain_xxh3: bytes  # xxh3-128 (big-endian digest) of the plaintext
    stored_xxh3: bytes  # xxh3-128 of `data`
    salt: bytes = b""  # the per-chunk HKDF salt (public: it is in the header)

    def __repr__(self) -> str:
        return (
            f"EncodedChunk(plain_size={self.plain_size}, stored_size={self.stored_size}, "
            f"plain_xxh3={self.plain_xxh3.hex()}, stored_xxh3={self.stored_xxh3.hex()})"
        )


@dataclass(frozen=True, slots=True)
class _ChunkKeys:
    aes_key: bytes
    nonce: bytes
    commit_key: bytes

    def __repr__(self) -> str:
        return "_ChunkKeys(<redacted>)"


def _hkdf(secret: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def _derive(key: DataKey, salt: bytes) -> _ChunkKeys:
    secret = key.secret
    return _ChunkKeys(
        aes_key=_hkdf(secret, salt, INFO_AES_KEY, 32),
        nonce=_hkdf(secret, salt, INFO_NONCE, NONCE_BYTES),
        commit_key=_hkdf(secret, salt, INFO_COMMIT_KEY, 32),
    )


def _commitment(commit_key: bytes, header_before_commitment: bytes) -> bytes:
    return hmac.new(commit_key, header_before_commitment, hashlib.sha256).digest()


def object_tagger(key: DataKey) -> Callable[[str], bytes]:
    """A function name -> 16-byte keyed tag; derives the tag key once for many names."""
    base = hmac.new(_hkdf(key.secret, None, INFO_NAME_TAG_KEY, 32), digestmod=hashlib.sha256)

    def tag(name: str) -> bytes:
        mac = base.copy()
        mac.update(name.encode("utf-8"))
        return mac.digest()[:NAME_TAG_BYTES]

    return tag


def object_tag(key: DataKey, name: str) -> bytes:
    """Keyed 16-byte tag of an object's name: stands in for the name at the destination."""
    return object_tagger(key)(name)


def sealing_buffer(size: int) -> mmap.mmap:
    """A buffer a worker reuses for chunk after chunk. Anonymous memory: the kernel hands out
    zero pages lazily, so unlike bytearray nothing is zero-filled while holding the GIL.
    Private, not shared (shmem costs more per page), and in huge pages where the kernel
    offers them on request: a 16 MiB buffer is then first touched in 8 faults, not 4,096."""
    buffer = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(AttributeError, OSError):  # no THP, or not this kernel's
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer


def stored_size_bound(identity: ChunkIdentity, plain_size: int) -> int:
    """The most bytes `plain_size` bytes of plaintext take sealed: what `out` should hold."""
    names = len(identity.plan.encode()) + len(identity.dataset.encode())
    return MIN_HEADER_BYTES + names + compress_bound(plain_size) + TAG_BYTES


class ChunkEncoder:
    """One per thread: holds a zstd compressor (not thread-safe)."""

    __slots__ = ("_cctx", "level")

    def __init__(self, level: int) -> None:
        if not 1 <= level <= MAX_LEVEL:
            raise ValueError(f"zstd level must be between 1 and {MAX_LEVEL}, got {level}")
        self.level = level
        self._cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)

    def __repr__(self) -> str:
        return f"ChunkEncoder(level={self.level})"

    def encode(
        self,
        plaintext: bytes | bytearray | memoryview,
        identity: ChunkIdentity,
        key: DataKey,
        *,
        out: bytearray | mmap.mmap | None = None,
        salt: bytes | None = None,
        scratch: Callable[[int], bytearray | mmap.mmap] | None = None,
    ) -> EncodedChunk:
        """Seal one chunk under a fresh salt, so a retry never reuses a (key, nonce) pair.

        With `out`, the sealed object is written into that buffer and `data` is a view of it,
        valid until the buffer is reused; when `out` is too small a larger buffer (an anonymous
        mmap) is made and `data.obj` is it. A worker thread that stores each chunk before
        sealing the next so avoids allocating and zero-filling a buffer for every chunk.

        `salt` is only for resuming an interrupted multipart upload: re-sealing the *same*
        plaintext (checked by the caller against the digests journaled at the first attempt)
        under the salt of that attempt reproduces its bytes exactly, so parts already uploaded
        stay valid. Any other use would repeat a (key, nonce) pair: leave it None.

        `scratch(size)` lends a buffer of at least `size` bytes for the frame of plaintext that
        will not compress (codec.zstd_frame) on its way to the cipher; without it, one is made.
        """
        if len(identity.name_tag) != NAME_TAG_BYTES:
            raise ValueError(f"name_tag must be {NAME_TAG_BYTES} bytes: {identity.describe()}")
        try:
            ident = identity.to_bytes()
        except struct.error as exc:
            raise ValueError(f"identity does not fit the header: {exc}") from None
        view = memoryview(plaintext)
        plain_size = view.nbytes
        if plain_size > MAX_PLAIN_BYTES:
            raise ValueError(
                f"{plain_size} plaintext bytes is more than a chunk may hold ({MAX_PLAIN_BYTES}):"
                f" {identity.describe()}"
            )
        plain_xxh3 = xxhash.xxh3_128_digest(view)
        compressed: bytes | memoryview
        if will_not_compress(self._cctx, view):
            frame_size = raw_frame_size(plain_size)
            lent = sealing_buffer(frame_size) if scratch is None else scratch(frame_size)
            compressed = memoryview(lent)[:frame_size]
            write_raw_frame(view, compressed)
        else:
            compressed = self._cctx.compress(view)

        if salt is None:
            salt = os.urandom(SALT_BYTES)
        elif len(salt) != SALT_BYTES:
            raise ValueError(f"salt must be {SALT_BYTES} bytes")
        keys = _derive(key, salt)
        cipher_size = len(compressed) + TAG_BYTES
        before_commitment = b"".join(
            (
                PREFIX.pack(MAGIC, FORMAT_VERSION, COMPRESSION_ZSTD),
                ident,
                KEYING.pack(key.key_id, salt, plain_size, cipher_size),
            )
        )
        before_checksum = before_commitment + _commitment(keys.commit_key, before_commitment)
        header = before_checksum + xxhash.xxh3_64_digest(before_checksum)

        # Encrypt straight into the stored object's buffer, behind the header: no extra copy.
        stored_size = len(header) + cipher_size
        data: bytearray | memoryview
        if out is None:
            data = bytearray(stored_size)
        else:
            if len(out) < stored_size:
                out = sealing_buffer(stored_size + stored_size // 8)  # headroom: sizes vary
            data = memoryview(out)[:stored_size]
        data[: len(header)] = header
        AESGCM(keys.aes_key).encrypt_into(
            keys.nonce, compressed, header + ident, memoryview(data)[len(header) :]
        )
        return EncodedChunk(
            data=data,
            plain_size=plain_size,
            stored_size=stored_size,
            plain_xxh3=plain_xxh3,
            stored_xxh3=xxhash.xxh3_128_digest(data),
            salt=salt,
        )


class _Decompressor(threading.local):
    """zstd decompression contexts are not thread-safe: one per thread."""

    def __init__(self) -> None:
        self.dctx = zstandard.ZstdDecompressor()


_thread = _Decompressor()


def decode_chunk(
    data: bytes | memoryview,
    expected: ChunkIdentity,
    key: DataKey,
    *,
    object_key: str | None = None,
    expected_plain_xxh3: bytes | None = None,
    expected_plain_size: int | None = None,
) -> bytes:
    """Verify and open one stored chunk; every failure is a distinct FormatError subclass.

    `expected_plain_size` is the plaintext size the reader knows the chunk has (its manifest
    entry's): a header declaring another is refused before anything is decompressed, so no
    chunk makes its reader allocate more than its manifest, or the format, allows."""
    view = memoryview(data).cast("B")
    header = read_header(view, object_key=object_key)
    want = expected.to_bytes()
    if header.raw[PREFIX.size : header.header_size - TAIL] != want:
        raise MisplacedChunkError(
            f"chunk is misplaced: expected {expected.describe()}, "
            f"found {header.identity.describe()}",
            object_key=object_key,
        )
    if header.key_id != key.key_id:
        raise WrongKeyError(
            f"chunk was sealed under key {header.key_id.hex()}, not {key.key_id.hex()}",
            object_key=object_key,
        )
    keys = _derive(key, header.salt)
    commitment_at = header.header_size - CHECKSUM_BYTES - COMMITMENT_BYTES
    if not hmac.compare_digest(
        _commitment(keys.commit_key, header.raw[:commitment_at]), header.commitment
    ):
        raise TamperedError(
            "key commitment mismatch: header forged for this key id", object_key=object_key
        )
    stored = view.nbytes
    if stored < header.stored_size:
        raise TruncatedError(
            f"chunk is {stored} bytes, header says {header.stored_size}", object_key=object_key
        )
    if stored > header.stored_size:
        raise TamperedError(
            f"chunk is {stored} bytes, header says {header.stored_size}: trailing bytes",
            object_key=object_key,
        )
    try:
        compressed = AESGCM(keys.aes_key).decrypt(
            keys.nonce, view[header.header_size :], header.raw + want
        )
    except InvalidTag:
        raise TamperedError(
            "authentication failed: ciphertext or tag changed", object_key=object_key
        ) from None

    if expected_plain_size is not None and header.plain_size != expected_plain_size:
        raise TamperedError(
            f"header declares {header.plain_size} plaintext bytes, its manifest records"
            f" {expected_plain_size}",
            object_key=object_key,
        )
    plain = _decompress(compressed, header.plain_size, object_key)
    if expected_plain_xxh3 is not None and xxhash.xxh3_128_digest(plain) != expected_plain_xxh3:
        raise DigestMismatchError(
            f"plaintext xxh3-128 is {xxhash.xxh3_128_digest(plain).hex()}, "
            f"expected {expected_plain_xxh3.hex()}",
            object_key=object_key,
        )
    return plain


def _decompress(compressed: bytes, plain_size: int, object_key: str | None) -> bytes:
    try:
        # Check the frame's declared size first, so nothing larger than the header says is
        # ever allocated.
        declared = zstandard.frame_content_size(compressed)
        if declared != plain_size:
            raise TamperedError(
                f"zstd frame declares {declared} bytes, header says {plain_size}",
                object_key=object_key,
            )
        if plain_size > len(compressed) * MAX_ZSTD_EXPANSION:
            raise TamperedError(
                f"zstd frame declares {plain_size} bytes, more than its"
                f" {len(compressed)} bytes can hold",
                object_key=object_key,
            )
        # One frame and nothing after it (FORMAT.md): bytes past the frame are refused.
        plain = _thread.dctx.decompress(
            compressed, max_output_size=plain_size, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise TamperedError(f"zstd decompression failed: {exc}", object_key=object_key) from None
    if len(plain) != plain_size:
        raise TamperedError(
            f"decompressed {len(plain)} bytes, header says {plain_size}", object_key=object_key
        )
    return plain
