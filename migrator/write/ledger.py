"""Writing the audit ledger (docs/FORMAT.md §11).

A commit batch adds one segment to each shard it touches. The segment is stored first; the
state store then commits the batch and moves the shard's ledger head in the same transaction.
A crash in between leaves a segment the next attempt overwrites under the same number, since
the head it starts from has not moved.
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from migrator.codec.ledger import (
    EntryKind,
    EntryReason,
    LedgerEntry,
    LedgerKeys,
    entry_link,
    genesis_link,
    seal_segment,
)
from migrator.errors import StateError
from migrator.repository.segments import list_segments, put_segment, shard_segments
from migrator.state.db import StateDB
from migrator.state.model import CommittedChunk, LedgerHead, LedgerMove
from migrator.stores.base import ObjectStore

PUT_THREADS = 8  # a batch spread over many shards stores their segments in parallel


@dataclass(frozen=True, slots=True)
class LedgerItem:
    """An object an entry is about: what the ledger records of it."""

    object_key: str
    generation: int
    shard: int
    stored_size: int
    stored_xxh3: str
    plain_size: int | None = None
    plain_xxh3: str | None = None

    @classmethod
    def of(cls, c: CommittedChunk) -> LedgerItem:
        return cls(
            c.object_key,
            c.generation,
            c.shard,
            c.stored_size,
            c.stored_xxh3,
            c.plain_size,
            c.plain_xxh3,
        )


def os_user() -> str:
    """Who the writer runs as; a uid where no user name is known (a bare container)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class LedgerWriter:
    """Appends to the ledgers of one dataset's shards, for one writer.

    `guard(shard)` runs before a segment is stored and may refuse by raising (a worker whose
    lease on the shard is in doubt stores nothing more for it, as for its chunks)."""

    def __init__(
        self,
        plan: str,
        dataset: str,
        store: ObjectStore,
        state: StateDB,
        keys: LedgerKeys,
        *,
        key_id: str,
        who: str,
        guard: Callable[[int], None] | None = None,
    ) -> None:
        self.plan = plan
        self.dataset = dataset
        self.store = store
        self.state = state
        self.keys = keys  # the plan's signing key, and the dataset's plain-tag key
        # Fingerprint (hex) of the data key its chunks are sealed under: the generation's key,
        # set again once the run knows which generation it works in.
        self.key_id = key_id
        self.who = who
        self.user = os_user()
        self.guard = guard
        # check_known listed the whole dataset's ledger and found no shard's begun beyond a
        # first segment: a shard without a head needs no listing of its own before it begins.
        self._listed_all = False

    def adds(self, chunks: Iterable[CommittedChunk]) -> list[LedgerMove]:
        """Store the segments recording a batch of stored chunks; commit the moves with it."""
        return self._append([LedgerItem.of(c) for c in chunks], EntryKind.ADD, EntryReason.STORED)

    def deletes(self, items: Iterable[LedgerItem], reason: EntryReason) -> list[LedgerMove]:
        """Store the segments recording objects about to be deleted; commit the moves with
        their forgetting, once they are deleted."""
        return self._append(list(items), EntryKind.DELETE, reason)

    def _append(
        self, items: list[LedgerItem], kind: EntryKind, reason: EntryReason
    ) -> list[LedgerMove]:
        groups: dict[int, list[LedgerItem]] = {}
        for item in items:
            groups.setdefault(item.shard, []).append(item)
        if not groups:
            return []
        heads = self.state.ledger_heads(self.dataset, groups)
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        writes: list[tuple[int, int, Callable[[], bytes]]] = []
        moves: list[LedgerMove] = []
        tag = self.keys.plain_tag
        for shard, group in sorted(groups.items()):
            head = heads.get(shard)
            if head is None:
                if not self._listed_all:
                    self._check_unbegun(shard)
                head = LedgerHead(
                    self.dataset, shard, 0, 0, genesis_link(self.plan, self.dataset, shard)
                )
            link, entries = head.link, []
            for n, item in enumerate(group):
                entry = LedgerEntry(
                    index=head.entries + n,
                    kind=kind,
                    reason=reason,
                    at=at,
                    who=self.who,
                    user=self.user,
                    object_key=item.object_key,
                    generation=item.generation,
                    stored_size=item.stored_size,
                    stored_xxh3=item.stored_xxh3,
                    plain_size=item.plain_size,
                    plain_tag=None if item.plain_xxh3 is None else tag(item.plain_xxh3),
                    key_id=self.key_id if kind is EntryKind.ADD else None,
                    link="",
                )
                link = entry_link(link, entry)
                entries.append(dataclasses.replace(entry, link=link))
            segment = head.segment + 1
            seal = functools.partial(
                seal_segment,
                plan=self.plan,
                dataset=self.dataset,
                shard=shard,
                segment=segment,
                first_index=head.entries,
                previous_link=head.link,
                entries=entries,
                keys=self.keys,
            )
            writes.append((shard, segment, seal))
            after = LedgerHead(self.dataset, shard, segment, head.entries + len(entries), link)
            moves.append(LedgerMove(head.segment, after))
        if len(writes) == 1:
            self._put(writes[0])
        else:
            with ThreadPoolExecutor(min(PUT_THREADS, len(writes)), "ledger") as pool:
                list(pool.map(self._put, writes))
        return moves

    def _put(self, write: tuple[int, int, Callable[[], bytes]]) -> None:
        """Sign (a call to the key service) and store one segment; a batch's run in parallel."""
        shard, segment, seal = write
        if self.guard is not None:
            self.guard(shard)
        put_segment(self.store, self.dataset, shard, segment, seal())

    def check_known(self) -> None:
        """Before any work on the dataset: a state store that knows none of its ledgers must
        find none stored either (it was lost: a run would redo stored work and begin every
        ledger anew). One look-up, and a listing only then."""
        if self.state.ledger_begun(self.dataset):
            return  # each shard without a head is checked on its own as it begins
        for shard, numbered in list_segments(self.store, self.dataset)[0].items():
            self._check_unbegun(shard, numbered[-1])
        self._listed_all = True

    def _check_unbegun(self, shard: int, last: tuple[int, str] | None = None) -> None:
        """The state store knows no ledger of the shard: the destination must hold none beyond
        a first segment a crash left uncommitted (which this writer then overwrites)."""
        found = [last] if last is not None else shard_segments(self.store, self.dataset, shard)
        for number, key in found:
            if number > 1:
                raise StateError(
                    f"dataset {self.dataset} shard {shard}: the destination holds audit ledger"
                    f" segments ({key}) this state store does not know; use the state store"
                    " that wrote them, or rebuild one with `migrator state rebuild`"
                )
