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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import orjson
import xxhash
import zstandard

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


def records_map_from_spool(data: bytes | memoryview) -> RecordsMap:
    """Fold a digest spool into one entry per key (duplicate keys sum: a shard is a multiset)."""
    out: RecordsMap = {}
    for kh, dg, length in DIGEST_ENTRY.iter_unpack(data):
        value = int.from_bytes(dg)
        entry = out.get(kh)
        if entry is None:
            out[kh] = KeyEntry(value, 1, length)
        else:
            entry.digest = add(entry.digest, value)
            entry.records += 1
            entry.nbytes += length
    return out


def iter_spool_entries(data: bytes | memoryview) -> Iterator[tuple[bytes, int]]:
    """(key hash, spool bytes) of each routed record, in spool order."""
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


def spool_digest(data: bytes | memoryview) -> tuple[int, int]:
    """(digest, records) of a digest spool, without building its per-key map."""
    total = 0
    for _kh, dg, _length in DIGEST_ENTRY.iter_unpack(data):
        total += int.from_bytes(dg)
    return total % MOD, len(data) // DIGEST_ENTRY.size


def pack_records_inventory(spool: bytes | memoryview) -> bytes:
    """A shard's records inventory is its digest spool, compressed: the per-key map is built
    only when the next sync diffs against it (a bulk never needs it)."""
    return zstandard.ZstdCompressor(level=1).compress(spool)


def unpack_records_map(blob: bytes) -> RecordsMap:
    return records_map_from_spool(zstandard.ZstdDecompressor().decompress(blob))


def pack_objects_map(inventory: ObjectsMap) -> bytes:
    body = orjson.dumps(
        {name: [e.version, e.size] for name, e in inventory.items()}, option=orjson.OPT_SORT_KEYS
    )
    return zstandard.ZstdCompressor(level=3).compress(body)


def unpack_objects_map(blob: bytes) -> ObjectsMap:
    doc = orjson.loads(zstandard.ZstdDecompressor().decompress(blob))
    return {name: ObjectEntry(str(v[0]), int(v[1])) for name, v in doc.items()}
