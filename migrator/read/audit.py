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

This is the pass over each dataset; audit_chain.py walks one shard's ledger, and
audit_stored.py compares what it holds with what is stored and committed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass

from migrator.keys.provider import KeyProvider
from migrator.keys.signing import TrustedKeys
from migrator.plan.model import DatasetPlan, Plan
from migrator.read.audit_chain import LedgerWalker
from migrator.read.audit_key import dataset_trust
from migrator.read.audit_report import AuditReport, DatasetAudit, Finding, ShardAudit
from migrator.read.audit_stored import StoredChecks, check_state_head
from migrator.read.freshness import find_rollbacks, ledger_behind
from migrator.read.head_file import ExportedHead
from migrator.repository.chunks import stored_data_objects
from migrator.repository.generations import record_generations
from migrator.repository.names import segment_key
from migrator.repository.segments import list_segments
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore


@dataclass(eq=False)
class Auditor:
    """Audits with the plan's KEK and signing keys (`provider`: every check), or with the
    signing keys of an exported audit key file (`audit_keys`: no manifest is opened).
    expected: a head an auditor exported earlier, which the destination must not be older
    than (generation records and ledgers)."""

    plan: Plan
    store: ObjectStore
    _: KW_ONLY
    provider: KeyProvider | None = None
    audit_keys: TrustedKeys | None = None
    state: StateDB | None = None
    full: bool = False
    workers: int = 4
    expected: ExportedHead | None = None

    def __post_init__(self) -> None:
        if (self.provider is None) == (self.audit_keys is None):
            raise ValueError("audit with either the plan's KEK or audit keys")

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
        expected = self.expected
        known = expected.datasets.get(ds.name) if expected is not None else None
        if self.state is not None or known is not None:
            da.checks.append("freshness: the newest generation record against the known heads")
        for rollback in find_rollbacks(self.store, ds.name, state=self.state, head=expected):
            da.findings.append(Finding("rollback", rollback.object_key, rollback.message))
        committed = max(record_generations(self.store, ds.name), default=0)
        # The heads the state store committed, every shard's in one query.
        heads = None if self.state is None else self.state.ledger_heads(ds.name, range(ds.shards))
        window = 2 * self.workers
        walker = LedgerWalker(self.store, self.plan.name, pool, window)
        checks = StoredChecks(self.store, self.plan.name, pool, full=self.full, window=window)
        for shard in range(ds.shards):
            sa = ShardAudit(shard)
            da.shards.append(sa)
            live, ends = walker.walk(ds.name, shard, segments.get(shard, []), trust, sa)
            checks.objects(live, stored.get(shard, {}), committed, sa)
            if heads is not None:
                check_state_head(ds.name, shard, heads.get(shard), ends, sa)
            if (
                expected is not None
                and known is not None
                and (mark := known.ledger.get(shard)) is not None
            ):
                last = sa.head[0] if sa.head is not None else 0
                if behind := ledger_behind(mark, ends, last, expected.source):
                    sa.found(behind[0], segment_key(ds.name, shard, mark.segment), behind[1])
            if keyring is not None and keys is not None:
                for gen, mkey in manifests.get(shard, []):
                    checks.manifest(ds.name, shard, gen, mkey, keyring, keys, live, ends, sa)
        return da

    def _stored(
        self, ds: DatasetPlan, da: DatasetAudit
    ) -> tuple[dict[int, dict[str, tuple[int, int]]], dict[int, list[tuple[int, str]]]]:
        """Data objects (key -> generation, size) and manifests (generation, key) stored, by
        shard."""
        stored: dict[int, dict[str, tuple[int, int]]] = {}
        manifests: dict[int, list[tuple[int, str]]] = {}
        # Keys outside every shard's folder are not data: verify reports them.
        for parsed, info in stored_data_objects(self.store, ds.name):
            gen, shard = parsed.generation, parsed.shard
            if shard >= ds.shards:
                message = f"stored under shard {shard}, which the dataset does not have"
                da.findings.append(Finding("extra-object", info.key, message))
            elif parsed.is_manifest:
                manifests.setdefault(shard, []).append((gen, info.key))
            else:
                stored.setdefault(shard, {})[info.key] = (gen, info.size)
        return stored, manifests
