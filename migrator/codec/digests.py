"""Order-independent content digests and the per-shard inventories incremental syncs diff.

A shard's digest is the sum mod 2**128 of one xxh3-128 per entry: a record's bytes, or an
object's (name, size, version). A sum does not depend on order and can be updated by adding
what a sync wrote and subtracting what it removed, so the destination's digest follows from its
manifests alone and the source's from one scan, and the two compare without moving data.

Inventories stay in the local state store; at the destination they exist only inside sealed
manifests (removed keys) or not at all.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import orjson
import xxhash
import zstandard

from migrator.codec.chunk import MAX_ZSTD_EXPANSION
from migrator.errors import TamperedError, TruncatedError

MOD = 1 << 128
ZERO_DIGEST = "0" * 32

# One routed record in a digest spool: key hash, record digest, bytes in the spool (incl. "\n").
DIGEST_ENTRY = struct.Struct(">16s16sQ")


def key_hash(key: bytes) -> bytes:
    """A record's identity at the destination: 16 bytes, sealed inside manifests only."""
    return xxhash.xxh3_128_digest(key)


def record_digest(record: bytes | memoryview) -> bytes:
    return xxhash.xxh3_128_digest(record)


def object_digest(name: str, size: int, version: str) -> int:
    """An object as listed: a changed size or version (mtime, ETag) changes it."""
    return xxhash.xxh3_128_intdigest(f"{name}\0{size}\0{version}".encode())


def add(a: int, b: int) -> int:
    return (a + b) % MOD


def sub(a: int, b: int) -> int:
    return (a - b) % MOD


def to_hex(value: int) -> str:
    return f"{value % MOD:032x}"


def from_hex(value: str) -> int:
    return int(value, 16)


@dataclass(slots=True)
class KeyEntry:
    """Every record of one key in a shard (usually one): their digest sum, count and bytes."""

    digest: int
    records: int
    nbytes: int


RecordsMap = dict[bytes, KeyEntry]


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    version: str
    size: int

    def digest(self, name: str) -> int:
        return object_digest(name, self.size, self.version)


ObjectsMap = dict[str, ObjectEntry]


def _check_spool(data: bytes | memoryview, object_key: str | None) -> None:
    if len(data) % DIGEST_ENTRY.size:
        raise TruncatedError(
            f"digest spool is {len(data)} bytes, not a whole number of"
            f" {DIGEST_ENTRY.size}-byte entries",
            object_key=object_key,
        )


def records_map_from_spool(
    data: bytes | memoryview,
    *,
    object_key: str | None = None,
    only: set[bytes] | None = None,
) -> RecordsMap:
    """Fold a digest spool into one entry per key (duplicate keys sum: a shard is a multiset);
    with `only`, of those keys alone."""
    _check_spool(data, object_key)
    out: RecordsMap = {}
    for kh, dg, length in DIGEST_ENTRY.iter_unpack(data):
        if only is not None and kh not in only:
            continue
        value = int.from_bytes(dg)
        entry = out.get(kh)
        if entry is None:
            out[kh] = KeyEntry(value, 1, length)
        else:
            entry.digest = add(entry.digest, value)
            entry.records += 1
            entry.nbytes += length
    return out


def iter_spool_entries(
    data: bytes | memoryview, *, object_key: str | None = None
) -> Iterator[tuple[bytes, int]]:
    """(key hash, spool bytes) of each routed record, in spool order."""
    _check_spool(data, object_key)
    for kh, _dg, length in DIGEST_ENTRY.iter_unpack(data):
        yield kh, length


def records_digest(entries: Iterable[KeyEntry]) -> int:
    total = 0
    for entry in entries:
        total += entry.digest
    return total % MOD


def objects_digest(inventory: Mapping[str, ObjectEntry]) -> int:
    total = 0
    for name, entry in inventory.items():
        total += entry.digest(name)
    return total % MOD


def spool_digest(data: bytes | memoryview, *, object_key: str | None = None) -> tuple[int, int]:
    """(digest, records) of a digest spool, without building its per-key map: the 128-bit
    digests summed as their two 64-bit halves, each half summed over the spool at once."""
    _check_spool(data, object_key)
    high, low = entry_words(data, 2), entry_words(data, 3)
    return ((sum(high) << 64) + sum(low)) % MOD, len(data) // DIGEST_ENTRY.size


def entry_lengths(data: bytes | memoryview) -> array[int]:
    """Each entry's record length (its bytes and line feed), in spool order."""
    return entry_words(data, 4)


def entry_words(data: bytes | memoryview, index: int) -> array[int]:
    """The `index`-th big-endian 64-bit word of every entry (an entry is five: key hash,
    digest, length), read for the whole spool in C rather than entry by entry."""
    words = array("Q")
    whole = len(data) - len(data) % DIGEST_ENTRY.size
    words.frombytes(memoryview(data)[:whole].cast("B").cast("Q")[index::5].tobytes())
    if sys.byteorder == "little":
        words.byteswap()
    return words


def pack_records_inventory(spool: bytes | memoryview) -> bytes:
    """A shard's records inventory is its digest spool, compressed: the per-key map is built
    only when the next sync diffs against it (a bulk never needs it)."""
    return zstandard.ZstdCompressor(level=1).compress(spool)


def _inflate(blob: bytes, what: str, object_key: str | None) -> bytes:
    """One zstd frame that declares its size, checked before anything is allocated."""
    try:
        declared = zstandard.frame_content_size(blob)
        if declared < 0:
            raise TamperedError(f"{what}: zstd frame has no content size", object_key=object_key)
        if declared > len(blob) * MAX_ZSTD_EXPANSION:
            raise TamperedError(
                f"{what}: zstd frame declares {declared} bytes, more than its"
                f" {len(blob)} bytes can hold",
                object_key=object_key,
            )
        return zstandard.ZstdDecompressor().decompress(blob)
    except zstandard.ZstdError as exc:
        raise TamperedError(f"{what} does not decompress: {exc}", object_key=object_key) from None


def unpack_records_entries(blob: bytes, *, object_key: str | None = None) -> bytes:
    """A packed records inventory as its digest entries (a sync edits them as a multiset)."""
    spool = _inflate(blob, "records inventory", object_key)
    _check_spool(spool, object_key)
    return spool


def unpack_records_map(blob: bytes, *, object_key: str | None = None) -> RecordsMap:
    spool = _inflate(blob, "records inventory", object_key)
    return records_map_from_spool(spool, object_key=object_key)


def pack_objects_map(inventory: ObjectsMap) -> bytes:
    body = orjson.dumps(
        {name: [e.version, e.size] for name, e in inventory.items()}, option=orjson.OPT_SORT_KEYS
    )
    return zstandard.ZstdCompressor(level=3).compress(body)


def unpack_objects_map(blob: bytes, *, object_key: str | None = None) -> ObjectsMap:
    body = _inflate(blob, "objects inventory", object_key)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TamperedError(
            f"objects inventory is not JSON: {exc}", object_key=object_key
        ) from None
    if not isinstance(doc, dict):
        raise TamperedError("objects inventory is not a JSON object", object_key=object_key)
    out: ObjectsMap = {}
    for name, value in doc.items():
        match value:
            case [str(version), int(size)] if type(size) is int and size >= 0:
                out[name] = ObjectEntry(version, size)
            case _:
                # names stay out of messages: they are the source's private data
                raise TamperedError(
                    "objects inventory: an entry is not [version, size]", object_key=object_key
                )
    return out
