"""`migrator verify`: read the destination back and prove it against its own manifests.

It trusts no local state for the verdict: the state store, and a head an auditor exported, are
only used to notice what the destination lost: chunks a manifest no longer lists (truncation),
and generations committed after its newest generation record (a rollback, read/freshness.py).
"""

from __future__ import annotations

import functools
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, InitVar, dataclass, field

from migrator.codec.digests import MOD, add, record_digest, to_hex
from migrator.codec.generation import GenerationRecord
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import (
    FormatError,
    MigratorError,
    MissingObjectError,
    TamperedError,
    TruncatedError,
    UnexpectedObjectError,
)
from migrator.keys.keyring import Keyring, load_keyring
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetKind, Plan
from migrator.read.chain import (
    chain_framing,
    follow_chain,
    listed_objects,
    live_records,
    load_chain,
)
from migrator.read.freshness import find_rollbacks
from migrator.read.head_file import ExportedHead
from migrator.read.readback import ordered_map
from migrator.records.framing import RecordFraming, split_stored_records
from migrator.repository.chunks import check_by_head, read_chunk
from migrator.repository.generations import load_record, record_generations
from migrator.repository.manifests import StoredManifest
from migrator.repository.names import data_key_object, generation_key, manifest_key
from migrator.repository.shard_objects import list_shard_objects
from migrator.state.db import StateDB
from migrator.state.tables.verifications import Verdict
from migrator.stores.base import ObjectStore


@dataclass(frozen=True, slots=True)
class Problem:
    dataset: str
    shard: int | None
    object_key: str | None
    error: str  # the error class name: TamperedError, MissingObjectError, ...
    message: str


@dataclass
class VerifyReport:
    datasets: int = 0
    shards: int = 0
    chunks_listed: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    quick: bool = False  # objects were checked by HEAD, not read back

    @property
    def ok(self) -> bool:
        return not self.problems


def _problem(dataset: str, shard: int | None, exc: MigratorError, key: str | None) -> Problem:
    object_key = getattr(exc, "object_key", None) or key
    return Problem(dataset, shard, object_key, type(exc).__name__, str(exc))


@dataclass(eq=False)
class Verifier:
    """quick: HEAD each object instead of reading it back (presence, size, and the digest and
    key id recorded in its metadata); manifests are still read and authenticated.
    head: an auditor's exported head the destination must not be older than."""

    plan: Plan
    store: ObjectStore
    provider: KeyProvider
    state: StateDB | None
    _: KW_ONLY
    sample: float = 1.0
    seed: InitVar[int | None] = None
    workers: int = 4
    quick: bool = False
    head: ExportedHead | None = None
    rng: random.Random = field(init=False)
    started: float = field(init=False, default=0.0)

    def __post_init__(self, seed: int | None) -> None:
        self.rng = random.Random(seed)  # sampling, not security: any spread will do

    def verify(self, only: set[str] | None = None, shards: set[int] | None = None) -> VerifyReport:
        """Every dataset (or `only` these), every shard (or only `shards`: one partition's).

        A shard's chain comes from the latest generation record; a shard the state store knows
        a newer manifest of (a sync still open) is followed from that manifest back to its base.
        """
        report = VerifyReport(quick=self.quick)
        # A verdict is as of when its pass began: damage done while it ran may have been read
        # before, so a failure found meanwhile must stay newer than this pass (cutover gate).
        self.started = time.time()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="verify") as pool:
            for ds in self.plan.datasets:
                if only and ds.name not in only:
                    continue
                report.datasets += 1
                try:
                    key = load_keyring(self.store, self.provider, self.plan.name, ds.name)
                except MigratorError as exc:
                    report.problems.append(_problem(ds.name, None, exc, data_key_object(ds.name)))
                    continue
                before = len(report.problems)
                record = self._record(ds.name, key, report)
                whole = report.problems[before:]  # the dataset's own: every shard shares them
                selected = [s for s in range(ds.shards) if shards is None or s in shards]
                load = functools.partial(self._chain, ds.name, key, record)
                verdicts: list[Verdict] = []
                for shard, chain in zip(
                    selected, ordered_map(pool, load, selected, 16), strict=True
                ):
                    report.shards += 1
                    start = len(report.problems)
                    if isinstance(chain, Problem):
                        report.problems.append(chain)
                        verdicts.append(self._verdict(shard, None, [*whole, chain]))
                        continue
                    self._check_record(ds.kind, ds.name, shard, record, chain, report)
                    try:  # records split as their manifests record the framing
                        manifests = [link.manifest for link in chain]
                        is_records = ds.kind is DatasetKind.RECORDS
                        framing = chain_framing(ds, manifests) if is_records else None
                    except FormatError as exc:
                        report.problems.append(_problem(ds.name, shard, exc, None))
                        verdicts.append(
                            self._verdict(shard, chain, whole + report.problems[start:])
                        )
                        continue
                    for link in chain:
                        gen = link.manifest.generation
                        listed = list_shard_objects(self.store, ds.name, gen, shard)
                        present = {o.key for o in listed}
                        self._verify_manifest(
                            ds.name, shard, key, link, present, pool, report, framing
                        )
                    verdicts.append(self._verdict(shard, chain, whole + report.problems[start:]))
                if self.state is not None:
                    self.state.record_verdicts(ds.name, verdicts)
        return report

    def _verdict(
        self, shard: int, chain: list[StoredManifest] | None, problems: list[Problem]
    ) -> Verdict:
        """What the gate keeps of this pass for one shard (only with a state store)."""
        head = chain[-1] if chain else None
        first = problems[0] if problems else None
        return Verdict(
            shard,
            head.manifest.generation if head is not None else 0,
            head.stored_xxh3 if head is not None else None,
            passed=not problems,
            problems=len(problems),
            first_problem=f"{first.error}: {first.message}" if first is not None else None,
            object_key=first.object_key if first is not None else None,
            sample=self.sample,
            quick=self.quick,
            checked_at=self.started,
        )

    def _check_record(
        self,
        kind: DatasetKind,
        dataset: str,
        shard: int,
        record: GenerationRecord | None,
        chain: list[StoredManifest],
        report: VerifyReport,
    ) -> None:
        """The head manifest is the very one the generation record names, and the record's
        count of live records agrees with the chain it names."""
        if record is None or shard >= len(record.shards):
            return
        head, last = record.shards[shard], chain[-1]
        if head.head != last.manifest.generation:
            return  # a newer head than the record names, the state store's
        if head.head_xxh3 != last.stored_xxh3:
            problem = TamperedError(
                f"manifest is not the one generation record {record.generation} names",
                object_key=last.object_key,
            )
            report.problems.append(_problem(dataset, shard, problem, last.object_key))
            return
        if kind is DatasetKind.RECORDS and head.records != live_records(chain):
            problem = TamperedError(
                f"generation record says {head.records} live records, the chain holds"
                f" {live_records(chain)}",
                object_key=generation_key(dataset, record.generation),
            )
            report.problems.append(_problem(dataset, shard, problem, None))

    def _record(self, dataset: str, key: Keyring, report: VerifyReport) -> GenerationRecord | None:
        gens = record_generations(self.store, dataset)
        if self.state is not None:
            # the state store knows which generations were committed: their records must be there
            committed = [g.generation for g in self.state.generations(dataset) if g.committed]
            for gen in sorted(set(committed) - set(gens)):
                if not gens or not gens[0] < gen < gens[-1]:
                    continue  # before: removed by a compaction after it; after: a rollback
                gkey = generation_key(dataset, gen)
                exc = MissingObjectError("committed generation record is absent", object_key=gkey)
                report.problems.append(_problem(dataset, None, exc, gkey))
        for rollback in find_rollbacks(self.store, dataset, state=self.state, head=self.head):
            report.problems.append(_problem(dataset, None, rollback.error(), rollback.object_key))
        if not gens:
            return None
        try:
            return load_record(self.store, self.plan.name, dataset, gens[-1], key)[0]
        except FormatError as exc:
            report.problems.append(_problem(dataset, None, exc, generation_key(dataset, gens[-1])))
            return None

    def _chain(
        self, dataset: str, key: Keyring, record: GenerationRecord | None, shard: int
    ) -> list[StoredManifest] | Problem:
        """The shard's authenticated chain of manifests, or the problem that stops it."""
        head = record.shards[shard] if record is not None and shard < len(record.shards) else None
        newer, newer_xxh3 = 0, None
        if self.state is not None:
            stored = self.state.shard_heads(dataset, shard)
            if stored and (head is None or stored[-1].generation > head.head):
                newer, newer_xxh3 = stored[-1].generation, stored[-1].manifest_xxh3
        mkey = manifest_key(dataset, newer or (head.head if head else 1), shard)
        try:
            if newer or head is None:
                return follow_chain(
                    self.store, self.plan.name, dataset, shard, newer or 1, key, newer_xxh3
                )
            # the head's digest is checked apart, so a replaced head still has its chunks checked
            return load_chain(self.store, self.plan.name, dataset, shard, head.chain, key)
        except MissingObjectError as exc:
            missing = exc.object_key or mkey
            what = "shard not migrated" if head is None and not newer else "chain is broken"
            exc2 = MissingObjectError(f"shard manifest is missing: {what}", object_key=missing)
            return _problem(dataset, shard, exc2, missing)
        except FormatError as exc:
            return _problem(dataset, shard, exc, mkey)

    def _verify_manifest(
        self,
        dataset: str,
        shard: int,
        key: Keyring,
        link: StoredManifest,
        listed_here: set[str],
        pool: ThreadPoolExecutor,
        report: VerifyReport,
        framing: RecordFraming | None = None,
    ) -> None:
        manifest, mkey = link.manifest, link.object_key
        report.chunks_listed += manifest.chunk_count
        report.records += manifest.record_count - manifest.removed_records
        self._check_against_state(manifest, mkey, report)
        listed = {ref.object_key for ref in manifest.chunks}
        present = listed_here - {mkey}
        for key_seen in sorted(present - listed):
            exc2 = UnexpectedObjectError(
                "object under the shard's prefix is not in its manifest", object_key=key_seen
            )
            report.problems.append(_problem(dataset, shard, exc2, key_seen))
        to_check: list[ChunkRef] = []
        for ref in manifest.chunks:
            if ref.object_key not in present:
                exc3 = MissingObjectError(
                    "listed in the manifest but absent", object_key=ref.object_key
                )
                report.problems.append(_problem(dataset, shard, exc3, ref.object_key))
            elif self.sample >= 1.0 or self.rng.random() < self.sample:
                to_check.append(ref)
        if not to_check and self.sample < 1.0:
            candidates = [r for r in manifest.chunks if r.object_key in present]
            if candidates:
                to_check.append(self.rng.choice(candidates))
        # Every chunk read back: what the records hold must add up to the manifest's claim.
        is_records = manifest.kind == DatasetKind.RECORDS
        whole = is_records and not self.quick and len(to_check) == len(listed)
        check = functools.partial(
            self._check_chunk, manifest, key=key, framing=framing if whole else None
        )
        futures = [(ref, pool.submit(check, ref)) for ref in to_check]
        added, clean = 0, True
        for ref, fut in futures:
            err, digest = fut.result()
            report.chunks_checked += 1
            report.bytes_checked += ref.stored_size
            if err is not None:
                clean = False
                report.problems.append(_problem(dataset, shard, err, ref.object_key))
            added = add(added, digest)
        if manifest.kind == DatasetKind.OBJECTS:
            added, whole = _objects_added(manifest), True
        if whole and clean and to_hex(added) != manifest.added_digest:
            exc4 = TamperedError(
                "what the manifest's chunks hold does not add up to its added digest",
                object_key=mkey,
            )
            report.problems.append(_problem(dataset, shard, exc4, mkey))

    def _check_chunk(
        self,
        manifest: ShardManifest,
        ref: ChunkRef,
        *,
        key: Keyring,
        framing: RecordFraming | None,
    ) -> tuple[MigratorError | None, int]:
        """(the problem, or None; the order-independent digest of the chunk's records when
        `framing` says how to split them)."""
        try:
            if self.quick:
                return check_by_head(self.store, ref, key), 0
            plain = read_chunk(self.store, manifest, ref, key)
            if framing is None:
                return None, 0
            total = 0
            for record in split_stored_records(plain, framing, ref.records):
                total += int.from_bytes(record_digest(record))
            return None, total % MOD
        except MigratorError as exc:
            return exc, 0

    def _check_against_state(
        self, manifest: ShardManifest, mkey: str, report: VerifyReport
    ) -> None:
        if self.state is None:
            return
        committed = self.state.chunk_count(manifest.dataset, manifest.generation, manifest.shard)
        if committed > manifest.chunk_count:
            exc = TruncatedError(
                f"manifest lists {manifest.chunk_count} chunks but {committed} were committed",
                object_key=mkey,
            )
            report.problems.append(_problem(manifest.dataset, manifest.shard, exc, mkey))


def _objects_added(manifest: ShardManifest) -> int:
    """The digest of the objects a manifest lists, from their names, sizes and versions."""
    total = 0
    for name, entry in listed_objects(manifest.chunks).items():
        total = add(total, entry.digest(name))
    return total
