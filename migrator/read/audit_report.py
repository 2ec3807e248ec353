"""What an audit found (`migrator/read/audit.py`), per dataset and shard, in the words a
third party reads: each finding by name, what each ledger holds, who wrote it and when."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Every finding an audit can report, by name, with what it means.
FINDINGS: dict[str, str] = {
    "gap": "entries are missing from the middle of the ledger",
    "truncated": "the ledger ends before entries it is known to have held",
    "out-of-order": "an entry index repeats or goes back: entries reordered, replayed or inserted",
    "altered-entry": "an entry's content no longer hashes to its chain value",
    "forged": "a signature does not verify, or entries lie outside what a signature covers",
    "segment-missing": "a segment of the ledger is absent",
    "broken-chain": "a segment does not continue the one before it",
    "misplaced": "a segment or entry belongs to another plan, dataset, shard or position",
    "malformed": "a segment cannot be parsed",
    "unexpected-ledger-object": "an object under the ledger's prefix is no segment of it",
    "unexplained-delete": "an entry deletes an object no earlier entry added",
    "extra-object": "a stored data object that no live ledger entry explains",
    "missing-object": "an object the ledger added and never deleted is not stored",
    "size-mismatch": "a stored object's size differs from its ledger entry",
    "digest-mismatch": "a stored object's xxh3-128 differs from its ledger entry (--full)",
    "head-mismatch": "the ledger does not pass through a head the state store or a manifest binds",
    "manifest-mismatch": "a manifest's chunk disagrees with the ledger's entry for it",
    "manifest-unreadable": "a manifest cannot be opened",
    "untrusted-keyring": "the dataset's keyring is not signed by a signing key the plan (or the"
    " audit key file) trusts: its data keys are refused",
    "rollback": "the destination is older than a generation the state store or an exported head"
    " knows committed: its newest generation record (or its whole tail) was removed or replaced",
}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # a key of FINDINGS
    object_key: str | None
    message: str


@dataclass
class ShardAudit:
    shard: int
    segments: int = 0
    entries: int = 0
    adds: int = 0
    deletes: int = 0
    live: int = 0  # objects the ledger holds added and not deleted
    stored: int = 0  # data objects stored under the shard
    first_at: str | None = None
    last_at: str | None = None
    writers: set[str] = field(default_factory=set)  # "who (user)"
    head: tuple[int, int, str] | None = None  # where the ledger ends: segment, entries, link
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def found(self, kind: str, object_key: str | None, message: str) -> None:
        self.findings.append(Finding(kind, object_key, message))

    def to_json(self) -> dict[str, Any]:
        head = None
        if self.head is not None:
            head = dict(zip(("segment", "entries", "link"), self.head, strict=True))
        return {
            "shard": self.shard,
            "segments": self.segments,
            "entries": self.entries,
            "adds": self.adds,
            "deletes": self.deletes,
            "live_objects": self.live,
            "stored_objects": self.stored,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "writers": sorted(self.writers),
            "head": head,
            "findings": [_finding_json(f) for f in self.findings],
            "notes": self.notes,
        }


@dataclass
class DatasetAudit:
    dataset: str
    verify_key: str = ""  # the signing keys (key ids) the keyring lists, signatures checked with
    checks: list[str] = field(default_factory=list)
    shards: list[ShardAudit] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # not of one shard
    notes: list[str] = field(default_factory=list)

    def all_findings(self) -> list[tuple[int | None, Finding]]:
        out: list[tuple[int | None, Finding]] = [(None, f) for f in self.findings]
        out += [(s.shard, f) for s in self.shards for f in s.findings]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "audit_key": self.verify_key,
            "checks": self.checks,
            "findings": [_finding_json(f) for f in self.findings],
            "notes": self.notes,
            "shards": [s.to_json() for s in self.shards],
        }


@dataclass
class AuditReport:
    plan: str
    full: bool
    datasets: list[DatasetAudit] = field(default_factory=list)

    @property
    def findings(self) -> int:
        return sum(len(d.all_findings()) for d in self.datasets)

    @property
    def ok(self) -> bool:
        return self.findings == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "ok": self.ok,
            "full": self.full,
            "findings": self.findings,
            "kinds": FINDINGS,
            "datasets": [d.to_json() for d in self.datasets],
        }


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"kind": f.kind, "object_key": f.object_key, "message": f.message}
