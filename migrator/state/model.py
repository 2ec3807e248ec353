"""Typed progress states, stored durably; resume is reading them back."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from migrator.codec.generation import GenerationKind
from migrator.errors import StateError


class ShardStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"


# The only moves a shard may make; a rerun of a complete shard is a no-op, not a move.
ALLOWED_SHARD_MOVES: dict[ShardStatus, frozenset[ShardStatus]] = {
    # pending -> complete: a sync found nothing changed in the shard
    ShardStatus.PENDING: frozenset({ShardStatus.RUNNING, ShardStatus.COMPLETE}),
    ShardStatus.RUNNING: frozenset({ShardStatus.RUNNING, ShardStatus.COMPLETE}),
    ShardStatus.COMPLETE: frozenset(),
}


def check_shard_move(dataset: str, shard: int, old: ShardStatus, new: ShardStatus) -> None:
    if new not in ALLOWED_SHARD_MOVES[old]:
        raise StateError(f"dataset {dataset} shard {shard}: cannot move from {old} to {new}")


@dataclass(frozen=True, slots=True)
class CommittedChunk:
    """What the state store keeps of a chunk the destination has confirmed."""

    dataset: str
    generation: int
    shard: int
    object_key: str
    sequence: int
    name: str | None
    records: int
    plain_size: int
    stored_size: int
    plain_xxh3: str
    stored_xxh3: str
    source_end: int  # records: spool offset just past the chunk; objects: 0
    source_version: str  # objects: "size:mtime_ns" of the source file; records: ""


@dataclass(frozen=True, slots=True)
class ShardProgress:
    dataset: str
    generation: int
    shard: int
    status: ShardStatus
    chunks: int
    records: int
    plain_bytes: int
    stored_bytes: int
    manifest_key: str | None


@dataclass(frozen=True, slots=True)
class RouteCheckpoint:
    """Records routing progress: source files [0, next_file) are durably in the spools."""

    next_file: int
    inventory_digest: str  # xxh3 over (path, size, mtime) of those files: detects a changed source
    spool_sizes: tuple[int, ...]
    csv_header: bytes | None
    complete: bool


@dataclass(frozen=True, slots=True)
class UploadEntry:
    """A multipart upload in flight: enough to re-seal the same bytes and resume it."""

    object_key: str
    upload_id: str
    salt: bytes  # the chunk's HKDF salt at the first attempt
    plain_xxh3: bytes  # the plaintext it sealed: a resume must seal the same plaintext
    stored_xxh3: bytes  # and must reproduce the same stored bytes, or the parts are stale
    stored_size: int


@dataclass(frozen=True, slots=True)
class GenerationRow:
    """One bulk run, sync or compaction of a dataset, as the state store tracks it."""

    dataset: str
    generation: int
    kind: GenerationKind
    status: str  # open | committed
    started_at: float
    finished_at: float | None
    changed_records: int
    changed_bytes: int
    record_xxh3: str | None  # xxh3-128 of the stored generation record, once committed

    @property
    def committed(self) -> bool:
        return self.status == "committed"

    @property
    def seconds(self) -> float:
        return (self.finished_at or self.started_at) - self.started_at


@dataclass(frozen=True, slots=True)
class ShardHeadRow:
    """A stored shard manifest of some generation."""

    generation: int
    manifest_key: str
    manifest_xxh3: str
    base: bool
    live_records: int  # records the shard holds after this generation
    digest: str  # the shard's order-independent digest after this generation (hex)
    removed_records: int  # records this generation removed or replaced
    updated_at: float


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """Where a shard's audit ledger ends: its last segment, its entry count, the last entry's
    chain value (hex). Segment 0 with no entries is a ledger not yet begun."""

    dataset: str
    shard: int
    segment: int
    entries: int
    link: str


@dataclass(frozen=True, slots=True)
class LedgerMove:
    """A segment stored at the destination, to commit: the head moves from segment `before`
    (0: the shard had no ledger) to `after`."""

    before: int
    after: LedgerHead
