"""`migrator verify`: read the destination back and prove it against its own manifests.

It trusts no local state for the verdict: the state store is only used to notice a shard whose
manifest lists fewer chunks than were once committed (truncation).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from migrator.codec.manifest import ChunkRef, ShardManifest, manifest_key, open_manifest
from migrator.engine.readback import read_chunk
from migrator.errors import (
    FormatError,
    MigratorError,
    MissingObjectError,
    TruncatedError,
    UnexpectedObjectError,
)
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import data_key_object, load_data_key
from migrator.keys.provider import KeyProvider
from migrator.plan.model import Plan
from migrator.state.sqlite import SqliteStateStore
from migrator.stores.base import ObjectStore

GENERATION = 1


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

    @property
    def ok(self) -> bool:
        return not self.problems


def _problem(dataset: str, shard: int | None, exc: MigratorError, key: str | None) -> Problem:
    object_key = getattr(exc, "object_key", None) or key
    return Problem(dataset, shard, object_key, type(exc).__name__, str(exc))


class Verifier:
    def __init__(
        self,
        plan: Plan,
        store: ObjectStore,
        provider: KeyProvider,
        state: SqliteStateStore | None,
        *,
        sample: float = 1.0,
        seed: int | None = None,
        workers: int = 4,
    ) -> None:
        self.plan = plan
        self.store = store
        self.provider = provider
        self.state = state
        self.sample = sample
        self.rng = random.Random(seed)  # sampling, not security: any spread will do
        self.workers = workers

    def verify(self, only: set[str] | None = None) -> VerifyReport:
        report = VerifyReport()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="verify") as pool:
            for ds in self.plan.datasets:
                if only and ds.name not in only:
                    continue
                report.datasets += 1
                try:
                    key = load_data_key(self.store, self.provider, self.plan.name, ds.name)
                except MigratorError as exc:
                    report.problems.append(_problem(ds.name, None, exc, data_key_object(ds.name)))
                    continue
                for shard in range(ds.shards):
                    self._verify_shard(ds.name, shard, key, pool, report)
        return report

    def _verify_shard(
        self, dataset: str, shard: int, key: DataKey, pool: ThreadPoolExecutor, report: VerifyReport
    ) -> None:
        report.shards += 1
        mkey = manifest_key(dataset, GENERATION, shard)
        try:
            manifest = open_manifest(
                self.store.get(mkey),
                plan=self.plan.name,
                dataset=dataset,
                generation=GENERATION,
                shard=shard,
                key=key,
                object_key=mkey,
            )
        except MissingObjectError:
            exc = MissingObjectError(
                "shard manifest is missing: shard not migrated", object_key=mkey
            )
            report.problems.append(_problem(dataset, shard, exc, mkey))
            return
        except FormatError as exc:
            report.problems.append(_problem(dataset, shard, exc, mkey))
            return
        report.chunks_listed += manifest.chunk_count
        report.records += manifest.record_count
        self._check_against_state(manifest, mkey, report)
        listed = {ref.object_key for ref in manifest.chunks}
        present: set[str] = set()
        prefix = mkey.rsplit("/", 1)[0] + "/"
        for info in self.store.list(prefix):
            if info.key == mkey:
                continue
            present.add(info.key)
            if info.key not in listed:
                exc2 = UnexpectedObjectError(
                    "object under the shard's prefix is not in its manifest", object_key=info.key
                )
                report.problems.append(_problem(dataset, shard, exc2, info.key))
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
        futures = [(ref, pool.submit(self._check_chunk, manifest, ref, key)) for ref in to_check]
        for ref, fut in futures:
            err = fut.result()
            report.chunks_checked += 1
            report.bytes_checked += ref.stored_size
            if err is not None:
                report.problems.append(_problem(dataset, shard, err, ref.object_key))

    def _check_chunk(
        self, manifest: ShardManifest, ref: ChunkRef, key: DataKey
    ) -> MigratorError | None:
        try:
            read_chunk(self.store, manifest, ref, key)
        except MigratorError as exc:
            return exc
        return None

    def _check_against_state(
        self, manifest: ShardManifest, mkey: str, report: VerifyReport
    ) -> None:
        if self.state is None:
            return
        committed = sum(
            1 for _ in self.state.shard_chunks(manifest.dataset, GENERATION, manifest.shard)
        )
        if committed > manifest.chunk_count:
            exc = TruncatedError(
                f"manifest lists {manifest.chunk_count} chunks but {committed} were committed",
                object_key=mkey,
            )
            report.problems.append(_problem(manifest.dataset, manifest.shard, exc, mkey))
