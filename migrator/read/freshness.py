"""Freshness: is the destination as new as what is known to have been committed?

Every object at the destination is authenticated, but nothing there can say that a newer state
once existed: deleting the newest generation record (with or without the chunks, manifests and
ledger segments it explains) leaves an older destination that checks out in every byte. Only
something kept elsewhere knows better: the state store, which commits each generation with the
xxh3-128 of its record's stored bytes, and a head an auditor exported (`head_file.py`). Verify,
audit and restore compare the destination with both (docs/FORMAT.md §6.4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import xxhash

from migrator.errors import MissingObjectError, RollbackError
from migrator.read.head_file import ExportedHead, LedgerMark
from migrator.repository.generations import get_record_bytes, record_generations
from migrator.repository.names import generation_key
from migrator.state.db import StateDB
from migrator.state.model import GenerationRow
from migrator.stores.base import ObjectStore

STATE_SOURCE = "the state store"
_NO_LIMIT = 2**32  # above every generation (u32)


@dataclass(frozen=True, slots=True)
class Rollback:
    """A generation known to be committed that the destination no longer shows as it was.

    how: `behind` — the destination's newest record is older; `replaced` — the record at that
    generation is not the one committed (an earlier version put back, or a rewrite after a
    rollback); `absent` — its record is gone while older ones stay (no compaction does that).
    """

    dataset: str
    generation: int  # the generation known to be committed
    found: int  # the destination's newest generation record (at or before at_most); 0: none
    source: str  # who knows: "the state store", "the exported head FILE"
    how: Literal["behind", "replaced", "absent"]
    at_most: int | None = None  # a reader asked for the dataset as of this generation

    @property
    def object_key(self) -> str:
        return generation_key(self.dataset, self.generation)

    @property
    def message(self) -> str:
        where = f"rollback: dataset {self.dataset}: "
        limit = "" if self.at_most is None else f" at or before generation {self.at_most}"
        found = (
            f"the destination's newest generation record{limit} is {self.found}"
            if self.found
            else f"the destination has no generation record{limit}"
        )
        if self.how == "behind":
            return f"{where}generation {self.generation} is committed in {self.source} but {found}"
        if self.how == "replaced":
            return (
                f"{where}the destination's generation record {self.generation} is not the one"
                f" committed in {self.source} (its stored bytes differ): an earlier version put"
                " back, or a generation rewritten after a rollback"
            )
        return (
            f"{where}generation {self.generation} is committed in {self.source} but its record"
            f" is gone while older ones remain ({found})"
        )

    def error(self, hint: str = "") -> RollbackError:
        return RollbackError(self.message + hint, object_key=self.object_key)


def find_rollbacks(
    store: ObjectStore,
    dataset: str,
    *,
    state: StateDB | None,
    head: ExportedHead | None,
    at_most: int | None = None,
) -> list[Rollback]:
    """Compare the destination's generation records with the state store's committed
    generations and with an exported head; `at_most`: a reader asking for an older state, so
    only what was committed at or before it counts."""
    reader = _Records(store, dataset, at_most)
    if state is not None:
        reader.against_state(state.generations(dataset))
    known = head.datasets.get(dataset) if head is not None else None
    committed = known.committed if known is not None else None
    if head is not None and committed is not None and committed[0] <= (at_most or _NO_LIMIT):
        generation, record_sha256 = committed
        reader.against(generation, record_sha256, head.source, _sha256)
    return reader.found


def ledger_behind(
    known: LedgerMark, ends: Mapping[int, tuple[int, str]], last: int, source: str
) -> tuple[str, str] | None:
    """(audit finding, message) when a shard's ledger does not reach, or does not pass through,
    the head `source` names; `ends`: where the ledger ends after each segment it has, `last`:
    its last segment (0: none)."""
    mark = f"{source} names segment {known.segment} ({known.entries} entries, link"
    if known.segment > last:
        return "truncated", f"{mark} {known.link[:16]}…); the ledger ends at segment {last}"
    seen = ends.get(known.segment)
    if seen is not None and seen != (known.entries, known.link):
        return (
            "head-mismatch",
            f"{mark} {known.link[:16]}…); the ledger there has {seen[0]} entries, link"
            f" {seen[1][:16]}…",
        )
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _xxh3(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


class _Records:
    """The destination's generation records of one dataset, each read at most once."""

    def __init__(self, store: ObjectStore, dataset: str, at_most: int | None) -> None:
        self.store = store
        self.dataset = dataset
        self.at_most = at_most
        self.present = record_generations(store, dataset)  # every record, at_most or not
        seen = [g for g in self.present if at_most is None or g <= at_most]
        self.newest = seen[-1] if seen else 0  # what a reader of at_most would take
        self.data: dict[int, bytes | None] = {}
        self.found: list[Rollback] = []

    def against_state(self, rows: Sequence[GenerationRow]) -> None:
        """The state store's newest committed generation (at or before at_most) must be the
        destination's newest record, byte for byte. A destination ahead of the state store is
        no rollback (a crash between storing a record and committing it, or a stale copy)."""
        limit = _NO_LIMIT if self.at_most is None else self.at_most
        committed = [r for r in rows if r.committed and r.generation <= limit]
        if committed and committed[-1].generation >= self.newest:
            top = committed[-1]
            self.against(top.generation, top.record_xxh3, STATE_SOURCE, _xxh3)

    def against(
        self, generation: int, digest: str | None, source: str, hash_of: Callable[[bytes], str]
    ) -> None:
        """One generation `source` knows committed, and the digest of its record's bytes."""
        how: Literal["behind", "replaced", "absent"]
        newer = any(g > generation for g in self.present)
        older = any(g < generation for g in self.present)
        data = self._read(generation) if generation in self.present else None
        if data is not None:
            if digest is None or hash_of(data) == digest:
                return
            how = "replaced"
        elif not newer:
            how = "behind"
        elif older:
            how = "absent"
        else:
            return  # newer records and no older one: a compaction folded it with those before
        newest = max((g for g in self.present if g < generation), default=0)
        self.found.append(Rollback(self.dataset, generation, newest, source, how, self.at_most))

    def _read(self, generation: int) -> bytes | None:
        if generation not in self.data:
            try:
                self.data[generation] = get_record_bytes(self.store, self.dataset, generation)
            except MissingObjectError:  # deleted since the listing
                self.data[generation] = None
        return self.data[generation]
