"""The entries of an audit ledger (docs/FORMAT.md §11): what each says, how they chain by
SHA-256 from a genesis value bound to plan, dataset and shard, and how one is read back."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from migrator.codec.body import U32, BodyReader
from migrator.keys.signing import canonical_json

__all__ = [
    "GENESIS_LABEL",
    "HEX256",
    "KINDS",
    "REASONS",
    "EntryKind",
    "EntryReader",
    "EntryReason",
    "LedgerEntry",
    "entry_link",
    "genesis_link",
]

GENESIS_LABEL = b"migrator/v1/audit-ledger/genesis\n"
HEX256 = re.compile(r"[0-9a-f]{64}")  # a SHA-256 link


class EntryKind(StrEnum):
    """What an entry records; stored as its value."""

    ADD = "add"  # a chunk stored
    DELETE = "delete"  # a stored object deleted


class EntryReason(StrEnum):
    """Why an entry was written; stored as its value."""

    STORED = "stored"  # a chunk stored
    # A part of an object that changed or vanished before its shard closed.
    STALE_PART = "stale-part"
    # A shard a sync left untouched, cleared of an interrupted attempt's chunks.
    UNTOUCHED_SHARD = "untouched-shard"
    COMPACTION = "compaction"  # an old generation a compaction folded away


KINDS = tuple(str(kind) for kind in EntryKind)
REASONS = {
    EntryKind.ADD: (EntryReason.STORED,),
    EntryKind.DELETE: (
        EntryReason.STALE_PART,
        EntryReason.UNTOUCHED_SHARD,
        EntryReason.COMPACTION,
    ),
}
_ENTRY_FIELDS = frozenset(
    (
        "index",
        "kind",
        "reason",
        "at",
        "who",
        "user",
        "object_key",
        "generation",
        "stored_size",
        "stored_xxh3",
        "plain_size",
        "plain_tag",
        "key_id",
        "link",
    )
)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    index: int  # position in the shard's ledger, from 0
    kind: EntryKind
    reason: EntryReason  # one of REASONS[kind]
    at: str  # ISO-8601 UTC: when the writer recorded it
    who: str  # the writer: its worker identity (name:pid:nonce)
    user: str  # the OS user the writer ran as
    object_key: str
    generation: int
    stored_size: int
    stored_xxh3: str  # hex xxh3-128 of the stored bytes (ciphertext: reveals nothing)
    plain_size: int | None  # add: plaintext bytes; delete: as known, else None
    plain_tag: str | None  # add: keyed tag of the plaintext's xxh3-128 (LedgerKeys.plain_tag)
    key_id: str | None  # add: the data key that sealed the chunk (its fingerprint); delete: None
    link: str  # hex SHA-256: entry_link(the previous entry's link, this entry)

    def body(self) -> dict[str, Any]:
        """Every field but `link`: what the link hashes."""
        return {
            "index": self.index,
            "kind": self.kind,
            "reason": self.reason,
            "at": self.at,
            "who": self.who,
            "user": self.user,
            "object_key": self.object_key,
            "generation": self.generation,
            "stored_size": self.stored_size,
            "stored_xxh3": self.stored_xxh3,
            "plain_size": self.plain_size,
            "plain_tag": self.plain_tag,
            "key_id": self.key_id,
        }


def genesis_link(plan: str, dataset: str, shard: int) -> str:
    """Where a shard's chain starts: a ledger copied to another plan, dataset or shard breaks."""
    bound = canonical_json({"plan": plan, "dataset": dataset, "shard": shard})
    return hashlib.sha256(GENESIS_LABEL + bound).hexdigest()


def entry_link(previous: str, entry: LedgerEntry) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + canonical_json(entry.body())).hexdigest()


class EntryReader(BodyReader):
    """Reads a ledger segment's entries; anything off is a TamperedError naming the line."""

    what = "audit ledger segment"

    def hexed(self, obj: Mapping[str, Any], name: str, where: str, pattern: re.Pattern[str]) -> str:
        value = self.str_(obj, name, where)
        if not pattern.fullmatch(value):
            raise self.bad(f"{where}.{name} is not {pattern.pattern} hex")
        return value

    def opt_int(self, obj: Mapping[str, Any], name: str, where: str) -> int | None:
        return None if obj[name] is None else self.int_(obj, name, where)

    def entry(self, line: bytes, number: int) -> LedgerEntry:
        where = f"entry on line {number}"
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise self.bad(f"{where} is not JSON: {exc}") from None
        f = self.fields(doc, _ENTRY_FIELDS, where)
        kind = self.str_(f, "kind", where)
        reason = self.str_(f, "reason", where)
        if kind not in KINDS or reason not in REASONS[EntryKind(kind)]:
            raise self.bad(f"{where}: kind {kind!r} with reason {reason!r} is not defined")
        plain_tag = self.opt_hex128(f, "plain_tag", where)
        key_id = self.opt_hex128(f, "key_id", where)
        plain_size = self.opt_int(f, "plain_size", where)
        if kind == EntryKind.ADD and None in (plain_size, plain_tag, key_id):
            raise self.bad(f"{where}: an add lacks its plain size, plain tag or key id")
        return LedgerEntry(
            index=self.int_(f, "index", where),
            kind=EntryKind(kind),
            reason=EntryReason(reason),
            at=self.str_(f, "at", where),
            who=self.str_(f, "who", where),
            user=self.str_(f, "user", where),
            object_key=self.str_(f, "object_key", where),
            generation=self.int_(f, "generation", where, U32),
            stored_size=self.int_(f, "stored_size", where),
            stored_xxh3=self.hex128(f, "stored_xxh3", where),
            plain_size=plain_size,
            plain_tag=plain_tag,
            key_id=key_id,
            link=self.hexed(f, "link", where, HEX256),
        )
