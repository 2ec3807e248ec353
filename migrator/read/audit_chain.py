"""Walking one shard's audit ledger (docs/FORMAT.md §11) for `migrator audit`: every segment
read in order, its signature, its entries and their chain values checked. The walk leaves each
object's latest entry and where the ledger ends after each segment, which the checks against
what is stored (audit_stored.py) and the dataset's pass (audit.py) compare with.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

from migrator.codec.ledger import (
    EntryKind,
    LedgerEntry,
    LedgerSegment,
    entry_link,
    genesis_link,
    parse_segment,
    signature_problem,
)
from migrator.errors import FormatError, MisplacedChunkError, MissingObjectError
from migrator.keys.signing import SignatureVerifier
from migrator.read.audit_report import ShardAudit
from migrator.read.readback import ordered_map
from migrator.repository.names import segment_key, shard_object_pattern
from migrator.repository.segments import read_segment
from migrator.stores.base import ObjectStore

LiveEntries = dict[str, LedgerEntry]  # each object's latest entry, by object key
LedgerEnds = dict[int, tuple[int, str]]  # after each segment (0: none yet): entries, link


def span(numbers: list[int]) -> str:
    """A few of the numbers, and how many more: for messages about gaps."""
    shown = ", ".join(map(str, numbers[:3]))
    return shown + (f" and {len(numbers) - 3} more" if len(numbers) > 3 else "")


@dataclass(eq=False)
class LedgerWalker:
    """Reads a dataset's segments on `pool`, at most `window` at once, in ledger order."""

    store: ObjectStore
    plan: str
    pool: ThreadPoolExecutor
    window: int

    def walk(
        self,
        dataset: str,
        shard: int,
        numbered: list[tuple[int, str]],
        trust: SignatureVerifier,
        sa: ShardAudit,
    ) -> tuple[LiveEntries, LedgerEnds]:
        """Read the shard's segments in order and check them; (each object's latest entry,
        where the ledger ends after each segment: entries, link)."""
        link = genesis_link(self.plan, dataset, shard)
        next_index, expected, lost = 0, 1, False
        live: LiveEntries = {}
        ends: LedgerEnds = {0: (0, link)}
        owned = shard_object_pattern(dataset, shard)
        fetched = ordered_map(self.pool, self._read, [key for _, key in numbered], self.window)
        for (number, okey), data in zip(numbered, fetched, strict=True):
            if number > expected:
                gone = span(list(range(expected, number)))
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
                    plan=self.plan,
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
            _check_entries(seg, okey, sa)
            for e in seg.entries:
                _apply(e, okey, owned, live, sa)
            link, next_index, lost = seg.head_link, seg.first_index + seg.count, False
            ends[number] = (next_index, link)
        if numbered:
            sa.head = (expected - 1, next_index, link)
        return live, ends

    def _read(self, key: str) -> bytes | None:
        try:
            return read_segment(self.store, key)
        except MissingObjectError:
            return None


def _check_entries(seg: LedgerSegment, okey: str, sa: ShardAudit) -> None:
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
            sa.found("gap", okey, f"{missing} entries missing from the segment: {span(examples)}")
    beyond = sorted(i for i in seen if not first <= i < end)
    if beyond:
        suspect = True
        sa.found(
            "forged",
            okey,
            f"entries numbered {span(beyond)} lie outside the {seg.count} from {first}"
            " the segment's header signs: added by someone without the plan's signing key",
        )
    repeated = sorted(i for i, n in seen.items() if n > 1)
    backwards = next(((a, b) for a, b in pairwise(indices) if b <= a), None)
    if repeated or backwards:
        suspect = True
        what = f"entry {backwards[1]} follows entry {backwards[0]}" if backwards else ""
        if repeated:
            what += ("; " if what else "") + f"entries {span(repeated)} appear twice"
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
    e: LedgerEntry, okey: str, owned: re.Pattern[str], live: LiveEntries, sa: ShardAudit
) -> None:
    """Count an entry, and check it names an object of its own generation and shard."""
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
    if e.kind == EntryKind.ADD:
        sa.adds += 1
    else:
        sa.deletes += 1
        prior = live.get(e.object_key)
        if prior is None or prior.kind != EntryKind.ADD:
            sa.found(
                "unexplained-delete",
                okey,
                f"entry {e.index} deletes {e.object_key}, which no earlier entry added",
            )
    live[e.object_key] = e
