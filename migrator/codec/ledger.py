"""The audit ledger's stored form (docs/FORMAT.md §11): hash-chained entries in signed segments.

Every chunk the engine commits, and every data object it deletes, is one entry in its shard's
ledger. Entries chain by SHA-256 from a genesis value bound to plan, dataset and shard; the
entries one commit batch adds to a shard are one segment object, whose header is signed by the
plan's signing key in its key service (migrator/keys/signing.py), never by anything a data key
gives. Its public key (the audit key) lets anyone check a ledger and write none.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from migrator.codec.body import U32, U64, BodyReader
from migrator.errors import MisplacedChunkError, TamperedError, TruncatedError
from migrator.keys.datakey import DataKey
from migrator.keys.signing import (
    SignatureVerifier,
    Signer,
    canonical_json,
    sign_checked,
    signed_message,
)

__all__ = [
    "LEDGER_FORMAT",
    "LEDGER_VERSION",
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
KINDS = ("add", "delete")
# Why an entry was written: a chunk stored; a part of an object that changed or vanished before
# its shard closed; a shard a sync left untouched, cleared of an interrupted attempt's chunks;
# an old generation a compaction folded away.
REASONS = {"add": ("stored",), "delete": ("stale-part", "untouched-shard", "compaction")}
INFO_PLAIN_TAG_KEY = b"migrator/v1/audit-ledger/plain-tag-key"
GENESIS_LABEL = b"migrator/v1/audit-ledger/genesis\n"
SIGNED_LABEL = b"migrator/v2/audit-ledger/segment\n"

_HEX256 = re.compile(r"[0-9a-f]{64}")
_HEX_SIGNATURE = re.compile(r"[0-9a-f]{128}")
_HEX_KEY_ID = re.compile(r"[0-9a-f]{32}")
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


_canonical = canonical_json


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


# --- object keys -------------------------------------------------------------------------


# --- keys ----------------------------------------------------------------------------------


class LedgerKeys:
    """What writing a dataset's ledger needs: the plan's signing key, and the tag key derived
    from the dataset's first data key (the one every keyring keeps first, so rotations never
    change it); an audit comparing tags needs no signer. Holds a secret: never print or pickle
    it."""

    __slots__ = ("_tag_key", "signer")

    def __init__(self, first: DataKey, signer: Signer | None = None) -> None:
        self.signer = signer
        self._tag_key = _hkdf(first.secret, INFO_PLAIN_TAG_KEY)

    def _signer(self) -> Signer:
        if self.signer is None:
            raise ValueError("these ledger keys only tag: they were made without a signer")
        return self.signer

    @property
    def signing_key_id(self) -> str:
        return self._signer().public_key().key_id

    def sign(self, message: bytes) -> bytes:
        """Made by the key service, checked against the public key the header names."""
        return sign_checked(self._signer(), message)[1]

    def plain_tag(self, plain_xxh3: str) -> str:
        """A keyed tag of a plaintext digest: the ledger names what a chunk held without
        showing its digest (one an observer could test guesses against)."""
        mac = hmac.new(self._tag_key, bytes.fromhex(plain_xxh3), hashlib.sha256)
        return mac.digest()[:16].hex()

    def __repr__(self) -> str:
        return f"LedgerKeys(signer={self.signer.describe() if self.signer else None})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("LedgerKeys cannot be pickled: key material stays in process memory")


# --- entries and segments ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    index: int  # position in the shard's ledger, from 0
    kind: str  # add | delete
    reason: str  # see REASONS
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


def genesis_link(plan: str, dataset: str, shard: int) -> str:
    """Where a shard's chain starts: a ledger copied to another plan, dataset or shard breaks."""
    bound = _canonical({"plan": plan, "dataset": dataset, "shard": shard})
    return hashlib.sha256(GENESIS_LABEL + bound).hexdigest()


def entry_link(previous: str, entry: LedgerEntry) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + _canonical(entry.body())).hexdigest()


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
    lines = [_canonical(header)]
    lines += [_canonical(e.body() | {"link": e.link}) for e in entries]
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


class _SegmentReader(BodyReader):
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
        if kind not in KINDS or reason not in REASONS[kind]:
            raise self.bad(f"{where}: kind {kind!r} with reason {reason!r} is not defined")
        plain_tag = self.opt_hex128(f, "plain_tag", where)
        key_id = self.opt_hex128(f, "key_id", where)
        plain_size = self.opt_int(f, "plain_size", where)
        if kind == "add" and None in (plain_size, plain_tag, key_id):
            raise self.bad(f"{where}: an add lacks its plain size, plain tag or key id")
        return LedgerEntry(
            index=self.int_(f, "index", where),
            kind=kind,
            reason=reason,
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
            link=self.hexed(f, "link", where, _HEX256),
        )


def parse_segment(
    data: bytes, *, plan: str, dataset: str, shard: int, segment: int, object_key: str
) -> LedgerSegment:
    """A segment's header and entries as stored, checked for shape and place only: indices,
    links and the signature are for `open_segment` or an audit to judge. A segment of another
    plan, dataset, shard or number is a MisplacedChunkError."""
    reader = _SegmentReader(object_key)
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
        previous_link=reader.hexed(f, "previous_link", "header", _HEX256),
        head_link=reader.hexed(f, "head_link", "header", _HEX256),
        signing_key=reader.hexed(f, "signing_key", "header", _HEX_KEY_ID),
        signature=reader.hexed(f, "signature", "header", _HEX_SIGNATURE),
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
