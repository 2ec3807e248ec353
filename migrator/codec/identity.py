"""A chunk's logical identity: where it belongs. Bound into every chunk's associated data."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass


class ChunkKind(enum.IntEnum):
    RECORDS = 1  # a packed run of records from one shard
    OBJECT_PART = 2  # one fixed-size part of one source object
    MANIFEST = 3  # a shard manifest, sealed with the same container
    GENERATION = 4  # a dataset's generation record: the commit point of a run, sync or compaction
    DEAD_LETTERS = 5  # records routing set aside (on_bad_record: quarantine), in a dead-letter area


@dataclass(frozen=True, slots=True)
class ChunkIdentity:
    """plan/dataset/generation/shard/sequence, plus the object's name tag for object parts.

    `name_tag` is a keyed 16-byte tag of the object's name (see codec.chunk.object_tag), so the
    name itself never appears at the destination; all-zero for records and manifests.
    """

    kind: ChunkKind
    plan: str
    dataset: str
    generation: int
    shard: int
    sequence: int
    name_tag: bytes = b"\x00" * 16

    def to_bytes(self) -> bytes:
        """Canonical, unambiguous encoding (length-prefixed strings, fixed-width integers)."""
        plan = self.plan.encode()
        dataset = self.dataset.encode()
        return b"".join(
            (
                struct.pack(">BH", int(self.kind), len(plan)),
                plan,
                struct.pack(">H", len(dataset)),
                dataset,
                struct.pack(">IIQ", self.generation, self.shard, self.sequence),
                self.name_tag,
            )
        )

    def describe(self) -> str:
        part = f" name_tag={self.name_tag.hex()}" if any(self.name_tag) else ""
        return (
            f"{self.kind.name.lower()} plan={self.plan} dataset={self.dataset} "
            f"gen={self.generation} shard={self.shard} seq={self.sequence}{part}"
        )
