"""What a shard manifest says: its chunks, its records layout, and its chain fields.

Apart from sealing and opening (codec/manifest.py) so the consistency rules
(codec/manifest_rules.py) can read a manifest without importing what seals one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migrator.codec.digests import ZERO_DIGEST
from migrator.codec.identity import ChunkIdentity, ChunkKind

KIND_RECORDS = "records"
KIND_OBJECTS = "objects"
RECORD_FORMATS = ("jsonl", "csv")


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One stored chunk as the manifest lists it."""

    sequence: int  # identity sequence: chunk number for records, part number for object parts
    object_key: str  # destination key (relative to the store root)
    plain_size: int
    stored_size: int
    records: int  # records in the chunk (0 for object parts)
    plain_xxh3: str  # hex
    stored_xxh3: str  # hex
    name: str | None = None  # object parts: the source object's relative name
    name_tag: str | None = None  # object parts: hex of object_tag
    version: str | None = None  # object parts: the source object's version when it was read


@dataclass(frozen=True, slots=True)
class RecordsLayout:
    """How a records shard's records are framed and keyed, recorded beside them so a reader
    needs no plan to split records or to match the key hashes a delta removes."""

    format: str  # "jsonl" | "csv"
    key: str  # the top-level field (jsonl) or header column (csv) holding the shard key
    csv_delimiter: str | None = None  # csv: one character; jsonl: None

    def problem(self) -> str | None:
        """What makes the layout unusable, or None."""
        if self.format not in RECORD_FORMATS:
            return f"format {self.format!r} is neither 'jsonl' nor 'csv'"
        if not self.key:
            return "key is empty"
        if self.format == "jsonl" and self.csv_delimiter is not None:
            return "a jsonl layout names a csv_delimiter"
        if self.format == "csv" and (
            self.csv_delimiter is None
            or len(self.csv_delimiter) != 1
            or self.csv_delimiter in '"\r\n'
        ):
            return f"csv_delimiter {self.csv_delimiter!r} is not one character (no quote, CR, LF)"
        return None


@dataclass(frozen=True, slots=True)
class ShardManifest:
    """Everything one shard of one generation wrote, with totals that detect truncation."""

    plan: str
    dataset: str
    generation: int
    shard: int
    kind: str  # "records" | "objects"
    chunks: tuple[ChunkRef, ...]
    record_count: int
    plain_bytes: int
    stored_bytes: int
    created_at: str  # ISO-8601 UTC
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-safe values
    # Generations: 0 makes this a base; else the generation of the shard manifest it follows,
    # whose stored bytes hash to previous_xxh3. A delta first removes `removed` (records: hex
    # key hashes, objects: names) and every key or name it rewrites, then adds its chunks.
    previous: int = 0
    previous_xxh3: str | None = None
    removed: tuple[str, ...] = ()
    removed_records: int = 0
    added_digest: str = ZERO_DIGEST  # order-independent digest of what the chunks hold
    removed_digest: str = ZERO_DIGEST  # ... of the entries this generation removed or replaced
    digest: str = ZERO_DIGEST  # ... of the shard after this generation: previous + added - removed
    # records: how its records are framed and keyed (None only in a version-2 manifest)
    records_layout: RecordsLayout | None = None

    @property
    def is_base(self) -> bool:
        return self.previous == 0

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    def identity(self) -> ChunkIdentity:
        return ChunkIdentity(
            ChunkKind.MANIFEST, self.plan, self.dataset, self.generation, self.shard, 0
        )
