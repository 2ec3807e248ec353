"""Typed progress states, stored durably; resume is reading them back."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from migrator.errors import StateError


class ShardStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"


# The only moves a shard may make; a rerun of a complete shard is a no-op, not a move.
ALLOWED_SHARD_MOVES: dict[ShardStatus, frozenset[ShardStatus]] = {
    ShardStatus.PENDING: frozenset({ShardStatus.RUNNING}),
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
