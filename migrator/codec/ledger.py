"""The audit ledger's stored form (docs/FORMAT.md §11): hash-chained entries in signed segments.

Every chunk the engine commits, and every data object it deletes, is one entry in its shard's
ledger. Entries chain by SHA-256 from a genesis value bound to plan, dataset and shard; the
entries one commit batch adds to a shard are one segment object, whose header is signed by the
plan's signing key in its key service (migrator/keys/signing.py), never by anything a data key
gives. Its public key (the audit key) lets anyone check a ledger and write none.

Segments are here; their entries are in ledger_entry.py, the writer's keys in ledger_keys.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from migrator.codec.body import U32, U64
from migrator.codec.hex_fields import HEX_KEY_ID, HEX_SIGNATURE
from migrator.codec.ledger_entry import (
    GENESIS_LABEL,
    HEX256,
    KINDS,
    REASONS,
    EntryKind,
    EntryReader,
    EntryReason,
    LedgerEntry,
    entry_link,
    genesis_link,
)
from migrator.codec.ledger_keys import INFO_PLAIN_TAG_KEY, LedgerKeys
from migrator.errors import MisplacedChunkError, TamperedError, TruncatedError
from migrator.keys.signing import SignatureVerifier, canonical_json, signed_message

__all__ = [
    "GENESIS_LABEL",
    "INFO_PLAIN_TAG_KEY",
    "KINDS",
    "LEDGER_FORMAT",
    "LEDGER_VERSION",
    "REASONS",
    "EntryKind",
    "EntryReason",
    "LedgerEntry",
    "LedgerKeys",
    "LedgerSegment",
    "entry_link",
    "genesis_link",
    "open_segment",
    "parse_segment",
    "seal_segment",
    "signature_problem",
]

LEDGER_FORMAT = "migrator/audit-ledger"
LEDGER_VERSION = 2  # 1: signed with a key derived from the first data key; no longer read
SIGNED_LABEL = b"migrator/v2/audit-ledger/segment\n"

_HEADER_FIELDS = frozenset(
    (
        "format",
        "version",
        "plan",
        "dataset",
        "shard",
        "segment",
        "first_index",
        "count",
        "previous_link",
        "head_link",
        "signing_key",
        "signature",
    )
)


@dataclass(frozen=True, slots=True)
class LedgerSegment:
    plan: str
    dataset: str
    shard: int
    segment: int  # from 1, equal to the number in the object's key
    first_index: int  # index of its first entry
    count: int  # entries it holds, as signed
    previous_link: str  # the link it continues: the previous segment's head, or the genesis
    head_link: str  # its last entry's link (previous_link when it holds none)
    signing_key: str  # key id (fingerprint) of the signing key that signed it
    signature: str  # hex r || s: ECDSA P-256 signature of signed_bytes()
    entries: tuple[LedgerEntry, ...]

    def header(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "plan": self.plan,
            "dataset": self.dataset,
            "shard": self.shard,
            "segment": self.segment,
            "first_index": self.first_index,
            "count": self.count,
            "previous_link": self.previous_link,
            "head_link": self.head_link,
            "signing_key": self.signing_key,
            "signature": self.signature,
        }

    def signed_bytes(self) -> bytes:
        header = self.header()
        del header["signature"]
        return signed_message(SIGNED_LABEL, header)


def seal_segment(
    *,
    plan: str,
    dataset: str,
    shard: int,
    segment: int,
    first_index: int,
    previous_link: str,
    entries: Sequence[LedgerEntry],
    keys: LedgerKeys,
) -> bytes:
    """The stored segment: its signed header, then one line per entry."""
    head = entries[-1].link if entries else previous_link
    unsigned = LedgerSegment(
        plan,
        dataset,
        shard,
        segment,
        first_index,
        len(entries),
        previous_link,
        head,
        keys.signing_key_id,
        "",
        (),
    )
    header = unsigned.header() | {"signature": keys.sign(unsigned.signed_bytes()).hex()}
    lines = [canonical_json(header)]
    lines += [canonical_json(e.body() | {"link": e.link}) for e in entries]
    return b"\n".join(lines) + b"\n"


def signature_problem(segment: LedgerSegment, verifier: SignatureVerifier) -> str | None:
    """Why the segment's signature does not vouch for it (a key the verifier does not trust,
    or a signature that does not verify); None when it does."""
    public = verifier.public_key_for(segment.signing_key)
    if public is None:
        return (
            f"it names signing key {segment.signing_key}, which is not a signing key of the"
            f" plan (trusted: {verifier.describe()})"
        )
    if not public.verify(segment.signed_bytes(), bytes.fromhex(segment.signature)):
        return f"its signature does not verify with signing key {segment.signing_key}"
    return None


# --- reading -------------------------------------------------------------------------------


def parse_segment(
    data: bytes, *, plan: str, dataset: str, shard: int, segment: int, object_key: str
) -> LedgerSegment:
    """A segment's header and entries as stored, checked for shape and place only: indices,
    links and the signature are for `open_segment` or an audit to judge. A segment of another
    plan, dataset, shard or number is a MisplacedChunkError."""
    reader = EntryReader(object_key)
    if not data.endswith(b"\n"):
        raise TruncatedError(
            "audit ledger segment does not end with a line feed", object_key=object_key
        )
    lines = data[:-1].split(b"\n")
    doc = reader.document(lines[0], LEDGER_FORMAT, LEDGER_VERSION)
    f = reader.fields(doc, _HEADER_FIELDS, "header")
    if f["format"] != LEDGER_FORMAT or type(f["version"]) is not int:
        raise reader.bad(f"header: format is not {LEDGER_FORMAT!r} version {LEDGER_VERSION}")
    found = (
        reader.str_(f, "plan", "header"),
        reader.str_(f, "dataset", "header"),
        reader.int_(f, "shard", "header", U32),
        reader.int_(f, "segment", "header", U64),
    )
    if found != (plan, dataset, shard, segment):
        raise MisplacedChunkError(
            f"audit ledger segment is plan {found[0]!r} dataset {found[1]!r} shard {found[2]}"
            f" segment {found[3]}, expected plan {plan!r} dataset {dataset!r} shard {shard}"
            f" segment {segment}",
            object_key=object_key,
        )
    return LedgerSegment(
        plan=plan,
        dataset=dataset,
        shard=shard,
        segment=segment,
        first_index=reader.int_(f, "first_index", "header"),
        count=reader.int_(f, "count", "header"),
        previous_link=reader.hexed(f, "previous_link", "header", HEX256),
        head_link=reader.hexed(f, "head_link", "header", HEX256),
        signing_key=reader.hexed(f, "signing_key", "header", HEX_KEY_ID),
        signature=reader.hexed(f, "signature", "header", HEX_SIGNATURE),
        entries=tuple(reader.entry(line, n) for n, line in enumerate(lines[1:], start=2)),
    )


def open_segment(
    data: bytes,
    *,
    plan: str,
    dataset: str,
    shard: int,
    segment: int,
    verifier: SignatureVerifier,
    object_key: str,
    previous_link: str | None = None,
    first_index: int | None = None,
) -> LedgerSegment:
    """A segment whose signature, entry count, indices and links all hold (and that continues
    `previous_link` at `first_index`, when given); else the FormatError saying what is off."""
    seg = parse_segment(
        data, plan=plan, dataset=dataset, shard=shard, segment=segment, object_key=object_key
    )

    def tampered(message: str) -> TamperedError:
        return TamperedError(f"audit ledger segment {message}", object_key=object_key)

    if (problem := signature_problem(seg, verifier)) is not None:
        raise tampered(f"is not signed by the plan: {problem}")
    if len(seg.entries) < seg.count:
        raise TruncatedError(
            f"audit ledger segment holds {len(seg.entries)} of its {seg.count} entries",
            object_key=object_key,
        )
    if len(seg.entries) > seg.count:
        raise tampered(f"holds {len(seg.entries)} entries, it signed {seg.count}")
    if previous_link is not None and seg.previous_link != previous_link:
        raise tampered("does not continue the segment before it")
    if first_index is not None and seg.first_index != first_index:
        raise tampered(f"starts at entry {seg.first_index}, expected {first_index}")
    link = seg.previous_link
    for n, e in enumerate(seg.entries):
        if e.index != seg.first_index + n:
            raise tampered(f"entry {seg.first_index + n} is numbered {e.index}")
        if entry_link(link, e) != e.link:
            raise tampered(f"entry {e.index} does not follow the entry before it")
        link = e.link
    if link != seg.head_link:
        raise tampered("entries do not end at the head it signed")
    return seg
