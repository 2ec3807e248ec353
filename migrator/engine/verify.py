"""`migrator verify`: read the destination back and prove it against its own manifests.

It trusts no local state for the verdict: the state store is only used to notice a shard whose
manifest lists fewer chunks than were once committed (truncation).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from migrator.codec.manifest import ChunkRef, ShardManifest, manifest_key, open_manifest
from migrator.engine.readback import ordered_map, read_chunk
from migrator.errors import (
    FormatError,
    MigratorError,
    MissingObjectError,
    TamperedError,
    TruncatedError,
    UnexpectedObjectError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import data_key_object, load_data_key
from migrator.keys.provider import KeyProvider
from migrator.plan.model import Plan
from migrator.state.sqlite import SqliteStateStore
from migrator.stores.base import ObjectInfo, ObjectStore

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
    quick: bool = False  # objects were checked by HEAD, not read back

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
        quick: bool = False,
    ) -> None:
        """quick: HEAD each object instead of reading it back (presence, size, and the digest
        and key id recorded in its metadata); manifests are still read and authenticated."""
        self.quick = quick
        self.plan = plan
        self.store = store
        self.provider = provider
        self.state = state
        self.sample = sample
        self.rng = random.Random(seed)  # sampling, not security: any spread will do
        self.workers = workers

    def verify(self, only: set[str] | None = None, shards: set[int] | None = None) -> VerifyReport:
        """Every dataset (or `only` these), every shard (or only `shards`: one partition's)."""
        report = VerifyReport(quick=self.quick)
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
                gen = f"{ds.name}/g{GENERATION:06d}/"
                selected = [s for s in range(ds.shards) if shards is None or s in shards]
                fetch = functools.partial(self._fetch_manifest, ds.name)
                fetched = ordered_map(pool, fetch, selected, 16)
                # All shards: one listing of the generation walked alongside them (keys come in
                # order, each shard's a run of it); a few shards: one listing each.
                listing = _ShardRuns(self.store.list(gen)) if shards is None else None
                for shard, manifest_bytes in zip(selected, fetched, strict=True):
                    if listing is not None:
                        present = listing.take(shard)
                    else:
                        present = {o.key for o in self.store.list(f"{gen}s{shard:05d}/")}
                    self._verify_shard(ds.name, shard, key, manifest_bytes, present, pool, report)
        return report

    def _fetch_manifest(self, dataset: str, shard: int) -> bytes | None:
        try:
            return self.store.get(manifest_key(dataset, GENERATION, shard))
        except MissingObjectError:
            return None

    def _verify_shard(
        self,
        dataset: str,
        shard: int,
        key: DataKey,
        manifest_bytes: bytes | None,
        listed_here: set[str],
        pool: ThreadPoolExecutor,
        report: VerifyReport,
    ) -> None:
        report.shards += 1
        mkey = manifest_key(dataset, GENERATION, shard)
        try:
            if manifest_bytes is None:
                raise MissingObjectError("absent", object_key=mkey)
            manifest = open_manifest(
                manifest_bytes,
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
            if self.quick:
                return _head_check(self.store, ref, key)
            read_chunk(self.store, manifest, ref, key)
        except MigratorError as exc:
            return exc
        return None

    def _check_against_state(
        self, manifest: ShardManifest, mkey: str, report: VerifyReport
    ) -> None:
        if self.state is None:
            return
        committed = self.state.chunk_count(manifest.dataset, GENERATION, manifest.shard)
        if committed > manifest.chunk_count:
            exc = TruncatedError(
                f"manifest lists {manifest.chunk_count} chunks but {committed} were committed",
                object_key=mkey,
            )
            report.problems.append(_problem(manifest.dataset, manifest.shard, exc, mkey))


class _ShardRuns:
    """Splits one key-ordered listing of a generation into each shard's set of keys."""

    def __init__(self, listing: Iterator[ObjectInfo]) -> None:
        self._it = listing
        self._next: ObjectInfo | None = next(self._it, None)

    def take(self, shard: int) -> set[str]:
        marker = f"/s{shard:05d}/"
        out: set[str] = set()
        while self._next is not None:
            key = self._next.key
            shard_of_key = _shard_in(key)
            if shard_of_key is None or shard_of_key < shard:
                self._next = next(self._it, None)  # not a shard's object: skip it
                continue
            if marker not in key:
                break
            out.add(key)
            self._next = next(self._it, None)
        return out


def _shard_in(key: str) -> int | None:
    parts = key.split("/")
    if len(parts) > 2 and parts[2].startswith("s") and parts[2][1:].isdigit():
        return int(parts[2][1:])
    return None


def _head_check(store: ObjectStore, ref: ChunkRef, key: DataKey) -> MigratorError | None:
    info = store.head(ref.object_key)
    if info is None:
        return MissingObjectError("listed in the manifest but absent", object_key=ref.object_key)
    if info.size < ref.stored_size:
        return TruncatedError(
            f"stored object is {info.size} bytes, manifest says {ref.stored_size}",
            object_key=ref.object_key,
        )
    recorded = info.metadata.get("migrator-stored-xxh3")
    if recorded is None:
        return TamperedError(
            "object lacks the metadata it was stored with (rewritten by something else?)",
            object_key=ref.object_key,
        )
    if info.size > ref.stored_size or recorded != ref.stored_xxh3:
        return TamperedError(
            "stored object's size or recorded digest differs from its manifest",
            object_key=ref.object_key,
        )
    key_id = info.metadata.get("migrator-key-id")
    if key_id is not None and key_id != key.key_id.hex():
        return WrongKeyError("object's metadata names another data key", object_key=ref.object_key)
    return None
