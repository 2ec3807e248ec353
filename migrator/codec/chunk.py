"""Chunk format v1: one stored object = header || AES-256-GCM(zstd(plaintext)) || tag.

docs/FORMAT.md is the specification; this module follows it byte for byte. The encoder is the
hot loop of a migration (xxh3-128 → zstd → AES-256-GCM); the three libraries release the GIL, so
one `ChunkEncoder` per worker thread scales across cores.
"""

from __future__ import annotations

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

from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import (
    DigestMismatchError,
    MisplacedChunkError,
    TamperedError,
    TruncatedError,
    UnknownVersionError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey

__all__ = [
    "COMPRESSION_ZSTD",
    "FORMAT_VERSION",
    "MAGIC",
    "ChunkEncoder",
    "ChunkHeader",
    "EncodedChunk",
    "decode_chunk",
    "object_tag",
    "object_tagger",
    "read_header",
]

FORMAT_VERSION: int = 1
MAGIC: bytes = b"MGRC"
COMPRESSION_ZSTD = 1

SALT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 16
NAME_TAG_BYTES = 16
COMMITMENT_BYTES = 32
CHECKSUM_BYTES = 8

# HKDF-SHA256 info labels; each output is derived separately from (data key, salt).
INFO_AES_KEY = b"migrator/v1/chunk/aes-256-gcm-key"
INFO_NONCE = b"migrator/v1/chunk/aes-256-gcm-nonce"
INFO_COMMIT_KEY = b"migrator/v1/chunk/commitment-key"
INFO_NAME_TAG_KEY = b"migrator/v1/name-tag-key"

_PREFIX = struct.Struct(">4sBB")  # magic, version, compression
_IDENTITY_HEAD = struct.Struct(">BH")  # kind, plan length
_U16 = struct.Struct(">H")
_IDENTITY_TAIL = struct.Struct(">IIQ16s")  # generation, shard, sequence, name_tag
_KEYING = struct.Struct(">16s32sQQ")  # key_id, salt, plaintext size, ciphertext size

_MIN_IDENTITY = _IDENTITY_HEAD.size + _U16.size + _IDENTITY_TAIL.size  # 37: empty plan/dataset
_TAIL = _KEYING.size + COMMITMENT_BYTES + CHECKSUM_BYTES  # 104
MIN_HEADER_BYTES = _PREFIX.size + _MIN_IDENTITY + _TAIL  # 147
MAX_LEVEL = 22
# A zstd block has a 3-byte header and holds at most 128 KiB: no frame can hold more content per
# compressed byte than this. A larger claim is forged, and is refused before allocating it.
MAX_ZSTD_EXPANSION = 128 * 1024 // 3 + 1


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
        """
        if len(identity.name_tag) != NAME_TAG_BYTES:
            raise ValueError(f"name_tag must be {NAME_TAG_BYTES} bytes: {identity.describe()}")
        try:
            ident = identity.to_bytes()
        except struct.error as exc:
            raise ValueError(f"identity does not fit the header: {exc}") from None
        view = memoryview(plaintext)
        plain_size = view.nbytes
        plain_xxh3 = xxhash.xxh3_128_digest(view)
        compressed = self._cctx.compress(view)

        if salt is None:
            salt = os.urandom(SALT_BYTES)
        elif len(salt) != SALT_BYTES:
            raise ValueError(f"salt must be {SALT_BYTES} bytes")
        keys = _derive(key, salt)
        cipher_size = len(compressed) + TAG_BYTES
        before_commitment = b"".join(
            (
                _PREFIX.pack(MAGIC, FORMAT_VERSION, COMPRESSION_ZSTD),
                ident,
                _KEYING.pack(key.key_id, salt, plain_size, cipher_size),
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
                # Anonymous mmap: the kernel hands out zero pages lazily, so unlike bytearray
                # nothing is zero-filled while holding the GIL. Headroom: sizes vary a little.
                out = mmap.mmap(-1, stored_size + stored_size // 8)
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


def read_header(data: bytes | memoryview, *, object_key: str | None = None) -> ChunkHeader:
    """Parse and checksum-verify a chunk header; does not need the key."""
    view = memoryview(data).cast("B")
    size = view.nbytes
    if size < MIN_HEADER_BYTES:
        raise TruncatedError(
            f"{size} bytes is too short for a chunk header (at least {MIN_HEADER_BYTES})",
            object_key=object_key,
        )
    magic, version, compression = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise TamperedError("not a migrator chunk (bad magic)", object_key=object_key)
    if version != FORMAT_VERSION:
        raise UnknownVersionError(
            f"chunk format version {version} is not supported (this build reads {FORMAT_VERSION})",
            object_key=object_key,
        )

    at = _PREFIX.size
    kind_id, plan_len = _IDENTITY_HEAD.unpack_from(view, at)
    plan_at = at + _IDENTITY_HEAD.size
    if size < MIN_HEADER_BYTES + plan_len:
        raise TruncatedError(
            f"{size} bytes is shorter than the header it declares", object_key=object_key
        )
    (dataset_len,) = _U16.unpack_from(view, plan_at + plan_len)
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
        dataset_at = plan_at + plan_len + _U16.size
        plan = raw[plan_at : plan_at + plan_len].decode("utf-8")
        dataset = raw[dataset_at : dataset_at + dataset_len].decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise TamperedError(f"malformed header identity: {exc}", object_key=object_key) from None
    tail_at = dataset_at + dataset_len
    generation, shard, sequence, name_tag = _IDENTITY_TAIL.unpack_from(raw, tail_at)
    keying_at = tail_at + _IDENTITY_TAIL.size
    key_id, salt, plain_size, cipher_size = _KEYING.unpack_from(raw, keying_at)
    commitment_at = keying_at + _KEYING.size
    if cipher_size < TAG_BYTES:
        raise TamperedError(
            f"ciphertext size {cipher_size} is smaller than the GCM tag", object_key=object_key
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
) -> bytes:
    """Verify and open one stored chunk; every failure is a distinct FormatError subclass."""
    view = memoryview(data).cast("B")
    header = read_header(view, object_key=object_key)
    want = expected.to_bytes()
    if header.raw[_PREFIX.size : header.header_size - _TAIL] != want:
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
