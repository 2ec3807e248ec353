"""A shard's audit ledger, once walked (audit_chain.py), against what is stored and what was
committed: each data object under the shard is the object of a live add (with that size and,
with `full`, that stored xxh3-128) and each live add's object is stored; each manifest binds a
head on the chain and lists chunks the ledger added as it records them; the state store's
ledger head is on the chain.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass

import xxhash

from migrator.codec.ledger import EntryKind, LedgerEntry, LedgerKeys
from migrator.errors import FormatError, MissingObjectError
from migrator.keys.keyring import Keyring
from migrator.read.audit_chain import LedgerEnds, LiveEntries
from migrator.read.audit_report import ShardAudit
from migrator.read.readback import ordered_map
from migrator.repository.manifests import load_manifest
from migrator.repository.names import segment_key
from migrator.repository.shard_objects import read_stored
from migrator.state.model import LedgerHead
from migrator.stores.base import ObjectStore


@dataclass(eq=False)
class StoredChecks:
    """With `full`, reads every stored object on `pool`, at most `window` at once."""

    store: ObjectStore
    plan: str
    pool: ThreadPoolExecutor
    _: KW_ONLY
    full: bool
    window: int

    def objects(
        self,
        live: LiveEntries,
        stored: dict[str, tuple[int, int]],
        committed: int,
        sa: ShardAudit,
    ) -> None:
        """`committed`: the newest generation with a generation record."""
        sa.stored = len(stored)
        sa.live = sum(1 for e in live.values() if e.kind == EntryKind.ADD)
        to_read: list[tuple[str, LedgerEntry]] = []
        for key, (gen, size) in sorted(stored.items()):
            e = live.get(key)
            if e is None:
                why = "stored, but no ledger entry adds it"
                if gen > committed:
                    why += (
                        f"; its generation {gen} is still open (a run cut short between storing"
                        " it and recording it?): finish the run, then audit again"
                    )
                sa.found("extra-object", key, why)
            elif e.kind != EntryKind.ADD:
                sa.found(
                    "extra-object",
                    key,
                    f"stored, but entry {e.index} recorded its deletion ({e.at}, {e.who})",
                )
            elif size != e.stored_size:
                sa.found(
                    "size-mismatch",
                    key,
                    f"stored object is {size} bytes; entry {e.index} recorded {e.stored_size}",
                )
            else:
                to_read.append((key, e))
        for key, e in sorted(live.items()):
            if e.kind == EntryKind.ADD and key not in stored:
                sa.found(
                    "missing-object",
                    key,
                    f"entry {e.index} added it ({e.at}, {e.who}) and none deleted it, but it"
                    " is not stored",
                )
        if not self.full:
            return
        digests = ordered_map(self.pool, self._digest, [k for k, _ in to_read], self.window)
        for (key, e), digest in zip(to_read, digests, strict=True):
            if digest is None:
                sa.found("missing-object", key, "listed, then absent when read")
            elif digest != e.stored_xxh3:
                sa.found(
                    "digest-mismatch",
                    key,
                    f"stored bytes hash to {digest}; entry {e.index} recorded {e.stored_xxh3}",
                )

    def _digest(self, key: str) -> str | None:
        try:
            return xxhash.xxh3_128_hexdigest(read_stored(self.store, key))
        except MissingObjectError:
            return None

    def manifest(
        self,
        dataset: str,
        shard: int,
        gen: int,
        mkey: str,
        keyring: Keyring,
        keys: LedgerKeys,
        live: LiveEntries,
        ends: LedgerEnds,
        sa: ShardAudit,
    ) -> None:
        """The head the manifest binds is on the chain; each chunk it lists is a live add
        with the same sizes and digests."""
        try:
            manifest = load_manifest(self.store, self.plan, dataset, gen, shard, keyring)
        except FormatError as exc:
            sa.found("manifest-unreadable", mkey, str(exc).removeprefix(f"{mkey}: "))
            return
        m = manifest.manifest
        bound = m.extra.get("ledger")
        last = sa.head[0] if sa.head is not None else 0
        if isinstance(bound, dict) and {"segment", "entries", "head"} <= bound.keys():
            segment = bound["segment"]
            if isinstance(segment, int) and segment > last:
                sa.found(
                    "truncated",
                    mkey,
                    f"the manifest binds ledger segment {segment}; the ledger ends at {last}",
                )
            elif ends.get(segment) not in (None, (bound["entries"], bound["head"])):
                sa.found(
                    "head-mismatch",
                    mkey,
                    f"the manifest binds {bound['entries']} entries at segment {segment}; the"
                    " ledger there does not end so",
                )
        elif m.chunks:
            sa.found("head-mismatch", mkey, "the manifest binds no ledger head")
        for ref in m.chunks:
            e = live.get(ref.object_key)
            if e is None or e.kind != EntryKind.ADD:
                sa.found(
                    "manifest-mismatch",
                    ref.object_key,
                    f"listed by the manifest of generation {gen}; the ledger holds no live add"
                    " for it",
                )
            elif (e.stored_xxh3, e.stored_size, e.plain_size, e.plain_tag) != (
                ref.stored_xxh3,
                ref.stored_size,
                ref.plain_size,
                keys.plain_tag(ref.plain_xxh3),
            ):
                sa.found(
                    "manifest-mismatch",
                    ref.object_key,
                    f"the manifest of generation {gen} and entry {e.index} record different"
                    " sizes or digests",
                )


def check_state_head(
    dataset: str, shard: int, committed: LedgerHead | None, ends: LedgerEnds, sa: ShardAudit
) -> None:
    """The shard's ledger against `committed`, the head the state store committed (None:
    it committed none)."""
    last = sa.head[0] if sa.head is not None else 0
    if committed is None:
        committed = LedgerHead(dataset, shard, 0, 0, ends[0][1])
    where = f"the state store committed segment {committed.segment} ({committed.entries}"
    if committed.segment > last:
        sa.found(
            "truncated",
            segment_key(dataset, shard, committed.segment),
            f"{where} entries); the ledger ends at segment {last}",
        )
    elif committed.segment in ends and ends[committed.segment] != (
        committed.entries,
        committed.link,
    ):
        entries, link = ends[committed.segment]
        sa.found(
            "head-mismatch",
            segment_key(dataset, shard, committed.segment),
            f"{where} entries, link {committed.link[:16]}…); the ledger there has"
            f" {entries} entries, link {link[:16]}…",
        )
    elif committed.segment < last:
        sa.notes.append(
            f"segments {committed.segment + 1}..{last} were stored but not committed (a"
            " crash between a segment's put and its commit): the next run overwrites them"
        )
