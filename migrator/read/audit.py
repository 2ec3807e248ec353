"""`migrator audit`: check a destination's audit ledgers (docs/FORMAT.md §11) against themselves
and against what is stored, for a third party to read.

Per dataset and shard: every segment is read in order, and the chain must be whole (no missing
segment or entry, nothing reordered, replayed, inserted, altered or forged); it must pass through
the head the state store committed and every head a manifest binds; and it must explain the
stored data: each data object under the shard is the object of a live add (its latest entry,
with that size and, with `full`, that stored xxh3-128), and each live add's object is stored.
With the dataset's data keys (the KEK) each manifest's chunks are compared with their entries
too; with only an audit key file (`migrator keys audit-key`) nothing is decrypted. Signatures
are checked with the plan's signing keys (audit_key.py), never with anything a data key gives.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import xxhash

from migrator.codec.ledger import (
    LedgerEntry,
    LedgerKeys,
    LedgerSegment,
    entry_link,
    genesis_link,
    parse_segment,
    signature_problem,
)
from migrator.errors import FormatError, MisplacedChunkError, MissingObjectError
from migrator.keys.keyring import Keyring
from migrator.keys.provider import KeyProvider
from migrator.keys.signing import SignatureVerifier, TrustedKeys
from migrator.plan.model import DatasetPlan, Plan
from migrator.read.audit_key import dataset_trust
from migrator.read.audit_report import AuditReport, DatasetAudit, Finding, ShardAudit
from migrator.read.freshness import find_rollbacks, ledger_behind
from migrator.read.head_file import ExportedHead
from migrator.read.readback import ordered_map
from migrator.repository.generations import record_generations
from migrator.repository.manifests import load_manifest
from migrator.repository.names import (
    data_objects_prefix,
    parse_shard_object,
    segment_key,
    shard_object_pattern,
)
from migrator.state.model import LedgerHead
from migrator.state.store import StateDB
from migrator.stores.base import ObjectStore
from migrator.write.ledger import list_segments


def _span(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:3]))
    return shown + (f" and {len(numbers) - 3} more" if len(numbers) > 3 else "")


class Auditor:
    """Audits with the plan's KEK and signing keys (`provider`: every check), or with the
    signing keys of an exported audit key file (`audit_keys`: no manifest is opened)."""

    def __init__(
        self,
        plan: Plan,
        store: ObjectStore,
        *,
        provider: KeyProvider | None = None,
        audit_keys: TrustedKeys | None = None,
        state: StateDB | None = None,
        full: bool = False,
        workers: int = 4,
        expected: ExportedHead | None = None,
    ) -> None:
        """expected: a head an auditor exported earlier, which the destination must not be
        older than (generation records and ledgers)."""
        if (provider is None) == (audit_keys is None):
            raise ValueError("audit with either the plan's KEK or audit keys")
        self.plan = plan
        self.store = store
        self.provider = provider
        self.audit_keys = audit_keys
        self.state = state
        self.full = full
        self.workers = workers
        self.expected = expected

    def audit(self, only: set[str] | None = None) -> AuditReport:
        report = AuditReport(self.plan.name, self.full)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="audit") as pool:
            for ds in self.plan.datasets:
                if not only or ds.name in only:
                    report.datasets.append(self._dataset(ds, pool))
        return report

    def _dataset(self, ds: DatasetPlan, pool: ThreadPoolExecutor) -> DatasetAudit:
        da = DatasetAudit(ds.name)
        who = dataset_trust(
            self.store,
            self.plan.name,
            ds.name,
            provider=self.provider,
            audit_keys=self.audit_keys,
        )
        if who.trust is None:
            da.notes.append("never migrated: the dataset has no data key, hence no ledger")
            return da
        if who.problem is not None:
            da.findings.append(Finding("untrusted-keyring", who.keyring_object, who.problem))
        keyring, keys, trust = who.keyring, who.tags, who.trust
        da.verify_key = ", ".join(who.key_ids)
        da.checks = ["ledger chain and signatures", "stored objects against the ledger"]
        if self.full:
            da.checks.append("stored objects' xxh3-128 (--full)")
        if self.state is not None:
            da.checks.append("ledger heads the state store committed")
        if keyring is not None:
            da.checks.append("manifests: bound ledger heads and chunks")
        else:
            da.notes.append(
                "audited with the audit key alone: manifests were not opened"
                if who.problem is None
                else "the keyring is not vouched for: manifests were not opened"
            )
        segments, strays = list_segments(self.store, ds.name)
        for key in strays:
            da.findings.append(
                Finding("unexpected-ledger-object", key, "not a segment of any shard's ledger")
            )
        for shard in sorted(set(segments) - set(range(ds.shards))):
            for _, key in segments[shard]:
                message = f"a segment of shard {shard}, which the dataset does not have"
                da.findings.append(Finding("unexpected-ledger-object", key, message))
        stored, manifests = self._stored(ds, da)
        known = self.expected.datasets.get(ds.name) if self.expected is not None else None
        if self.state is not None or known is not None:
            da.checks.append("freshness: the newest generation record against the known heads")
        for rollback in find_rollbacks(self.store, ds.name, state=self.state, head=self.expected):
            da.findings.append(Finding("rollback", rollback.object_key, rollback.message))
        committed = max(record_generations(self.store, ds.name), default=0)
        # The heads the state store committed, every shard's in one query.
        heads = None if self.state is None else self.state.ledger_heads(ds.name, range(ds.shards))
        for shard in range(ds.shards):
            sa = ShardAudit(shard)
            da.shards.append(sa)
            live, ends = self._walk(ds.name, shard, segments.get(shard, []), trust, sa, pool)
            self._objects(live, stored.get(shard, {}), committed, sa, pool)
            if heads is not None:
                self._state_head(ds.name, shard, heads.get(shard), ends, sa)
            if known is not None and (mark := known.ledger.get(shard)) is not None:
                assert self.expected is not None
                last = sa.head[0] if sa.head is not None else 0
                if behind := ledger_behind(mark, ends, last, self.expected.source):
                    sa.found(behind[0], segment_key(ds.name, shard, mark.segment), behind[1])
            if keyring is not None and keys is not None:
                for gen, mkey in manifests.get(shard, []):
                    self._manifest(ds.name, shard, gen, mkey, keyring, keys, live, ends, sa)
        return da

    def _stored(
        self, ds: DatasetPlan, da: DatasetAudit
    ) -> tuple[dict[int, dict[str, tuple[int, int]]], dict[int, list[tuple[int, str]]]]:
        """Data objects (key -> generation, size) and manifests (generation, key) stored, by
        shard."""
        stored: dict[int, dict[str, tuple[int, int]]] = {}
        manifests: dict[int, list[tuple[int, str]]] = {}
        for info in self.store.list(data_objects_prefix(ds.name)):
            parsed = parse_shard_object(ds.name, info.key)
            if parsed is None:
                continue  # not under a shard's folder: not data (verify reports it)
            gen, shard = parsed.generation, parsed.shard
            if shard >= ds.shards:
                message = f"stored under shard {shard}, which the dataset does not have"
                da.findings.append(Finding("extra-object", info.key, message))
            elif parsed.is_manifest:
                manifests.setdefault(shard, []).append((gen, info.key))
            else:
                stored.setdefault(shard, {})[info.key] = (gen, info.size)
        return stored, manifests

    # --- the chain ---------------------------------------------------------------------

    def _walk(
        self,
        dataset: str,
        shard: int,
        numbered: list[tuple[int, str]],
        trust: SignatureVerifier,
        sa: ShardAudit,
        pool: ThreadPoolExecutor,
    ) -> tuple[dict[str, LedgerEntry], dict[int, tuple[int, str]]]:
        """Read the shard's segments in order and check them; (each object's latest entry,
        where the ledger ends after each segment: entries, link)."""
        link = genesis_link(self.plan.name, dataset, shard)
        next_index, expected, lost = 0, 1, False
        live: dict[str, LedgerEntry] = {}
        ends: dict[int, tuple[int, str]] = {0: (0, link)}
        owned = shard_object_pattern(dataset, shard)
        fetched = ordered_map(pool, lambda item: self._read(item[1]), numbered, 2 * self.workers)
        for (number, okey), data in zip(numbered, fetched, strict=True):
            if number > expected:
                gone = _span(list(range(expected, number)))
                sa.found(
                    "segment-missing",
                    segment_key(dataset, shard, expected),
                    f"segment {gone} of the shard's ledger is absent: the entries it held are gone",
                )
                lost = True
            expected = number + 1
            if data is None:
                sa.found("segment-missing", okey, "listed, then absent when read")
                lost = True
                continue
            try:
                seg = parse_segment(
                    data,
                    plan=self.plan.name,
                    dataset=dataset,
                    shard=shard,
                    segment=number,
                    object_key=okey,
                )
            except MisplacedChunkError as exc:
                sa.found("misplaced", okey, str(exc).removeprefix(f"{okey}: "))
                lost = True
                continue
            except FormatError as exc:
                sa.found("malformed", okey, str(exc).removeprefix(f"{okey}: "))
                lost = True
                continue
            sa.segments += 1
            if (problem := signature_problem(seg, trust)) is not None:
                sa.found(
                    "forged",
                    okey,
                    f"the segment is not signed by the plan: {problem}; it was altered, or"
                    " written by someone without the plan's signing key",
                )
            if not lost and seg.first_index > next_index:
                sa.found(
                    "gap",
                    okey,
                    f"entries {next_index}..{seg.first_index - 1} are missing before this segment",
                )
            elif not lost and seg.first_index < next_index:
                sa.found(
                    "out-of-order",
                    okey,
                    f"starts at entry {seg.first_index}; the ledger before it ended at entry"
                    f" {next_index - 1}",
                )
            elif not lost and seg.previous_link != link:
                sa.found("broken-chain", okey, "does not continue the segment before it")
            self._entries(seg, okey, sa)
            for e in seg.entries:
                self._apply(e, okey, owned, live, sa)
            link, next_index, lost = seg.head_link, seg.first_index + seg.count, False
            ends[number] = (next_index, link)
        if numbered:
            sa.head = (expected - 1, next_index, link)
        return live, ends

    def _read(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except MissingObjectError:
            return None

    def _entries(self, seg: LedgerSegment, okey: str, sa: ShardAudit) -> None:
        """A segment's entries against its signed header: indices, then links."""
        first, end = seg.first_index, seg.first_index + seg.count
        indices = [e.index for e in seg.entries]
        seen = Counter(indices)
        present = [i for i in seen if first <= i < end]
        missing = seg.count - len(present)
        suspect = False
        if missing:
            suspect = True
            examples: list[int] = []
            i = first
            while len(examples) < 4 and i < end:  # at most len(seen) + 4 steps
                if i not in seen:
                    examples.append(i)
                i += 1
            top = max(present, default=first - 1)
            if examples[0] > top:
                sa.found(
                    "truncated",
                    okey,
                    f"the segment signs {seg.count} entries from {first}; entries"
                    f" {top + 1}..{end - 1} at its end are missing",
                )
            else:
                sa.found(
                    "gap", okey, f"{missing} entries missing from the segment: {_span(examples)}"
                )
        beyond = sorted(i for i in seen if not first <= i < end)
        if beyond:
            suspect = True
            sa.found(
                "forged",
                okey,
                f"entries numbered {_span(beyond)} lie outside the {seg.count} from {first}"
                " the segment's header signs: added by someone without the plan's signing key",
            )
        repeated = sorted(i for i, n in seen.items() if n > 1)
        backwards = next(((a, b) for a, b in pairwise(indices) if b <= a), None)
        if repeated or backwards:
            suspect = True
            what = f"entry {backwards[1]} follows entry {backwards[0]}" if backwards else ""
            if repeated:
                what += ("; " if what else "") + f"entries {_span(repeated)} appear twice"
            sa.found("out-of-order", okey, f"{what}: entries reordered, replayed or inserted")
        if suspect:
            return  # the links can only repeat what is found
        link = seg.previous_link
        for e in seg.entries:
            if entry_link(link, e) != e.link:
                sa.found(
                    "altered-entry",
                    okey,
                    f"entry {e.index} ({e.object_key}) does not hash to its chain value: its"
                    " content was changed after it was written",
                )
                return
            link = e.link
        if link != seg.head_link:
            sa.found("forged", okey, "the entries do not end at the head the header signs")

    def _apply(
        self,
        e: LedgerEntry,
        okey: str,
        owned: re.Pattern[str],
        live: dict[str, LedgerEntry],
        sa: ShardAudit,
    ) -> None:
        sa.entries += 1
        sa.writers.add(f"{e.who} ({e.user})")
        sa.first_at = e.at if sa.first_at is None else min(sa.first_at, e.at)
        sa.last_at = e.at if sa.last_at is None else max(sa.last_at, e.at)
        match = owned.fullmatch(e.object_key)
        if match is None or int(match.group(1)) != e.generation:
            sa.found(
                "misplaced",
                okey,
                f"entry {e.index} names {e.object_key} of generation {e.generation}: not an"
                f" object of generation {e.generation} of shard {sa.shard}",
            )
        if e.kind == "add":
            sa.adds += 1
        else:
            sa.deletes += 1
            prior = live.get(e.object_key)
            if prior is None or prior.kind != "add":
                sa.found(
                    "unexplained-delete",
                    okey,
                    f"entry {e.index} deletes {e.object_key}, which no earlier entry added",
                )
        live[e.object_key] = e

    # --- against what is stored --------------------------------------------------------

    def _objects(
        self,
        live: dict[str, LedgerEntry],
        stored: dict[str, tuple[int, int]],
        committed: int,
        sa: ShardAudit,
        pool: ThreadPoolExecutor,
    ) -> None:
        """`committed`: the newest generation with a generation record."""
        sa.stored = len(stored)
        sa.live = sum(1 for e in live.values() if e.kind == "add")
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
            elif e.kind != "add":
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
            if e.kind == "add" and key not in stored:
                sa.found(
                    "missing-object",
                    key,
                    f"entry {e.index} added it ({e.at}, {e.who}) and none deleted it, but it"
                    " is not stored",
                )
        if not self.full:
            return
        digests = ordered_map(pool, self._digest, [k for k, _ in to_read], 2 * self.workers)
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
        data = self._read(key)
        return None if data is None else xxhash.xxh3_128_hexdigest(data)

    def _state_head(
        self,
        dataset: str,
        shard: int,
        committed: LedgerHead | None,
        ends: dict[int, tuple[int, str]],
        sa: ShardAudit,
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

    def _manifest(
        self,
        dataset: str,
        shard: int,
        gen: int,
        mkey: str,
        keyring: Keyring,
        keys: LedgerKeys,
        live: dict[str, LedgerEntry],
        ends: dict[int, tuple[int, str]],
        sa: ShardAudit,
    ) -> None:
        """The head the manifest binds is on the chain; each chunk it lists is a live add
        with the same sizes and digests."""
        try:
            manifest = load_manifest(self.store, self.plan.name, dataset, gen, shard, keyring)
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
            if e is None or e.kind != "add":
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
