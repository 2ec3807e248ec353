"""What landing hands a target, and what every target promises in return.

A target receives one shard's generations in order: a base (the shard's whole content) and then
each sync's changes (what went, then what came). Applying must be idempotent: a generation the
target already holds changes nothing when applied again, so a landing killed at any point is
simply run again. A target answers for its own content: the order-independent digest and count
it computes from what it holds (never from local state), so the cutover gate can compare it with
the archive's manifests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LandedRecord:
    """One record as landed: its key, the key's hash (what manifests name removals by) and its
    bytes exactly as archived, without a line end."""

    key: str
    key_hash: bytes  # 16 bytes: codec.digests.key_hash of the key's bytes
    record: bytes
    fields: tuple[str, ...] | None = None  # CSV: the row's fields, one per header column


@dataclass(frozen=True, slots=True)
class RecordsGeneration:
    """One shard's records in one generation: a base replaces everything the target holds for
    the shard; a delta first removes `removed`, then adds `records` (new and rewritten keys, in
    archive order: of several records of one key, the last is the one a keyed table serves)."""

    dataset: str
    shard: int
    generation: int
    base: bool
    removed: frozenset[bytes]  # key hashes
    records: Iterable[LandedRecord]
    header: tuple[str, ...] | None = None  # CSV: the column names, in order


@dataclass(frozen=True, slots=True)
class LandedObject:
    """One object to land whole at its name: its parts are read and decrypted from the archive
    only when the target asks, in order."""

    name: str
    size: int
    version: str
    parts: Callable[[], Iterator[bytes]]
    part_sizes: tuple[int, ...] = ()
    part_xxh3: tuple[str, ...] = ()  # hex xxh3-128 of each part's plaintext, from the manifest


@dataclass(frozen=True, slots=True)
class ObjectsGeneration:
    """One shard's objects in one generation. A base lands every object of the shard; with
    `replace`, objects the target holds for the shard and the base does not name are deleted
    (a shard landed before from a chain that was since compacted or rolled back). A delta
    deletes `removed` (names gone from the source) and lands `objects` (added or rewritten)."""

    dataset: str
    shard: int
    generation: int
    base: bool
    removed: frozenset[str]
    objects: Iterable[LandedObject]
    replace: bool = False
    # False only when the target cannot hold any of `objects` as landed by this generation yet
    # (its first attempt, not a replacing base): nothing is looked up before it is sent.
    may_hold: bool = True


@dataclass
class LandedContent:
    """What a target holds for one shard, as read from the target itself."""

    digest: int = 0  # sum mod 2**128, as codec.digests defines a shard's digest
    count: int = 0  # records, or objects
    problems: list[str] = field(default_factory=list)  # landed rows or objects changed behind
    # landing's back, each named (a row's key, an object's name) with what is wrong with it


class RecordsTarget(Protocol):
    def describe(self) -> str:
        """Where, for messages (never credentials)."""

    def prepare(self, header: tuple[str, ...] | None) -> None:
        """Create what the target needs (idempotent); `header`: a CSV dataset's columns."""

    def landed_generation(self, shard: int) -> int | None:
        """The last generation the target itself records as applied to the shard."""

    def apply(self, change: RecordsGeneration) -> None:
        """Apply one generation atomically; one at or below landed_generation changes nothing."""

    def content(self, shard: int) -> LandedContent:
        """The shard's digest and count over the target's rows (duplicates of a key included)."""


class ObjectsTarget(Protocol):
    def describe(self) -> str: ...

    def apply(self, change: ObjectsGeneration) -> None:
        """Delete, then land; idempotent (the same bytes at the same names)."""

    def contents(self, shards: int) -> dict[int, LandedContent]:
        """Every shard's content from one listing of the target (`shards`: the dataset's shard
        count, to place each name by sharding.shard_of)."""


class ShardFilesTarget(Protocol):
    """Records landed as files: one JSONL or CSV object per shard, rewritten whole with the
    shard's live records each time the shard lands (readers never see a half-applied delta)."""

    def describe(self) -> str: ...

    def landed_generation(self, shard: int) -> int | None:
        """The generation the shard's object says it holds (its metadata), None if absent."""

    def write_shard(
        self,
        shard: int,
        generation: int,
        header: tuple[str, ...] | None,
        records: Iterable[bytes],
    ) -> None:
        """Replace the shard's object with these records, each as archived without its line
        end (a CSV one starts with its header): a file needs neither keys nor fields."""

    def content(self, shard: int) -> LandedContent:
        """The shard's digest and count over the records in its object, read back."""
