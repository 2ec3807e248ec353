"""`migrator run`: route, chunk, encode, store and commit every dataset of a plan, resumably."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xxhash

from migrator.codec.chunk import ChunkEncoder, object_tagger
from migrator.codec.digests import (
    ObjectEntry,
    ObjectsMap,
    add,
    iter_spool_entries,
    objects_digest,
    pack_objects_map,
    pack_records_inventory,
    records_map_from_spool,
    spool_digest,
    to_hex,
    unpack_objects_map,
    unpack_records_map,
)
from migrator.codec.generation import GenerationRecord, ShardHead, seal_record
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.ledger import LedgerKeys
from migrator.codec.manifest import ChunkRef, ShardManifest, seal_manifest
from migrator.errors import StateError, UsageError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, load_or_create_keyring
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetPlan, Plan
from migrator.read.chain import check_destination_layout, plan_layout
from migrator.read.freshness import find_rollbacks
from migrator.repository.generations import put_record
from migrator.repository.manifests import put_manifest
from migrator.repository.names import (
    delta_spool_path,
    digests_path,
    generation_prefix,
    inventory_spool_path,
    manifest_key,
    object_part_key,
    records_chunk_key,
    shard_prefix,
    spool_dir,
    spool_path,
    spools_root,
)
from migrator.sharding import shard_of
from migrator.sources.base import Source, SourceObject
from migrator.sources.factory import open_source
from migrator.sources.framing import read_records_chunk
from migrator.sources.record_ends import stored_framing
from migrator.state.leases import (
    LeaseKeeper,
    dead_on_this_host,
    process_started_at,
    worker_identity,
)
from migrator.state.model import CommittedChunk, GenerationRow, ShardStatus
from migrator.state.private import open_private
from migrator.state.store import Fence, StateDB
from migrator.stores.base import ObjectStore
from migrator.write.deadletter import store_dead_letters
from migrator.write.ledger import LedgerItem, LedgerWriter
from migrator.write.pipeline import ChunkJob, ChunkPipeline
from migrator.write.route import RecordsSpec, route_records
from migrator.write.upload import abort_orphaned_uploads

BULK_GENERATION = 1  # the first run of a dataset; every later run is a sync generation
COMMIT_BATCH = 256
PARALLEL_ROUTING_BYTES = 32 * 1024 * 1024
PARALLEL_ROUTING_MIN_CORES = 4
COMMIT_SECONDS = 0.5
WORKER_CLAIM_SHARE = 16  # a worker claims ~1/16 of a dataset's shards at a time


class ProgressSink:
    """What the engine reports while it works; the CLI draws it, tests may count it."""

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        """A new phase of a dataset; bytes advance from 0 toward total."""

    def advance(self, nbytes: int) -> None:
        """nbytes of source data passed the phase."""


@dataclass
class DatasetReport:
    name: str
    kind: str
    shards: int
    chunks_written: int = 0
    chunks_skipped: int = 0
    records: int = 0
    bytes_in: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0
    orphaned_uploads: int = 0  # unfinished multipart uploads found and aborted
    generation: int = 0
    generation_kind: str = ""  # bulk | sync
    shards_changed: int = 0  # shards this generation wrote a manifest for
    removed: int = 0  # records or objects removed or replaced (tombstones)
    committed: bool = False  # the generation record is stored: restore sees this generation

    @property
    def compression_ratio(self) -> float:
        return self.bytes_in / self.bytes_stored if self.bytes_stored else 0.0


@dataclass
class RunReport:
    plan: str
    destination: str
    datasets: list[DatasetReport] = field(default_factory=list)
    seconds: float = 0.0
    bandwidth_limit: int | None = None  # bytes a second, when uploads were limited

    @property
    def bytes_in(self) -> int:
        return sum(d.bytes_in for d in self.datasets)

    @property
    def bytes_stored(self) -> int:
        return sum(d.bytes_stored for d in self.datasets)

    @property
    def chunks_written(self) -> int:
        return sum(d.chunks_written for d in self.datasets)

    @property
    def chunks_skipped(self) -> int:
        return sum(d.chunks_skipped for d in self.datasets)


class _Committer:
    """Batches confirmed chunks into state-store transactions; a shard whose chunks are all read
    and confirmed gets its manifest at once, so the pool never drains between shards."""

    def __init__(
        self,
        state: StateDB,
        report: DatasetReport,
        on_shard_done: Callable[[int], None],
        fence: Callable[[], Fence | None],
        ledger: LedgerWriter | None = None,
    ) -> None:
        self.state = state
        self.report = report
        self.on_shard_done = on_shard_done
        self.fence = fence
        self.ledger = ledger  # records each batch in its shards' audit ledgers
        self.batch: list[CommittedChunk] = []
        self.last = time.monotonic()
        self.outstanding: dict[int, int] = {}
        self.awaiting: set[int] = set()

    def submitted(self, shard: int) -> None:
        self.outstanding[shard] = self.outstanding.get(shard, 0) + 1

    def shard_read(self, shard: int) -> None:
        """Every chunk of the shard has been submitted (or was committed before)."""
        self.awaiting.add(shard)
        self._settle()

    def take(self, chunks: list[CommittedChunk], force: bool = False) -> None:
        for c in chunks:
            self.outstanding[c.shard] -= 1
            self.report.chunks_written += 1
            self.report.bytes_stored += c.stored_size
        self.batch.extend(chunks)
        now = time.monotonic()
        if force or len(self.batch) >= COMMIT_BATCH or now - self.last >= COMMIT_SECONDS:
            self._commit()
        self._settle()

    def _commit(self) -> None:
        if self.batch:
            # The batch's ledger segments are stored first; their heads move with its rows.
            moves = self.ledger.adds(self.batch) if self.ledger is not None else []
            self.state.commit_chunks(self.batch, fence=self.fence(), ledger=moves)
        self.batch = []
        self.last = time.monotonic()

    def _settle(self) -> None:
        ready = sorted(s for s in self.awaiting if not self.outstanding.get(s))
        if not ready:
            return
        self._commit()  # the manifest is built from the state store: commit its chunks first
        for shard in ready:
            self.awaiting.discard(shard)
            self.on_shard_done(shard)

    def flush(self) -> None:
        self.take([], force=True)


@dataclass
class _ShardDelta:
    """What a shard's manifest in this generation states beyond its chunks."""

    previous: int  # 0: a base
    previous_xxh3: str | None
    removed: tuple[str, ...]  # records: hex key hashes; objects: names
    removed_records: int
    removed_digest: int
    added_digest: int
    digest: int
    live_records: int
    inventory: bytes | Path  # packed inventory, or the file that holds it
    keep: Callable[[CommittedChunk], bool] | None = None  # objects: parts still current

    @property
    def base(self) -> bool:
        return self.previous == 0

    def inventory_bytes(self) -> bytes:
        return self.inventory.read_bytes() if isinstance(self.inventory, Path) else self.inventory


class MigrationRun:
    """One plan's run against one store, key provider and state store (all injected).

    The first run of a dataset is its bulk copy (generation 1); each later run is an
    incremental sync: a new generation holding, per changed shard, the records and objects that
    changed and tombstones for those removed. A generation becomes visible to restore when its
    generation record is stored, after every shard of it is complete.
    """

    def __init__(
        self,
        plan: Plan,
        store: ObjectStore,
        provider: KeyProvider,
        state: StateDB,
        progress: ProgressSink | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.provider = provider
        self.state = state
        self.progress = progress or ProgressSink()
        self.workers = plan.workers or os.cpu_count() or 1
        self.open_source: Callable[[DatasetPlan], Source] = open_source
        self.keeper: LeaseKeeper | None = None
        self.ledgers: dict[str, LedgerWriter] = {}  # by dataset: who writes its audit ledgers

    def run(
        self,
        only: set[str] | None = None,
        shards: set[int] | None = None,
        *,
        worker: bool = False,
        claim: int | None = None,
    ) -> RunReport:
        """Every dataset (or `only` these), every shard (or only `shards`: one Dagster
        partition). Shards are leased in the state store: two runs never work one shard at once.

        By default a run leases all its shards, waiting for any another run holds, and then
        works them: an hourly sync overrunning into the next makes the later one wait, then sync
        anew. With `worker`, many processes (on many machines, over a shared state store) share
        one generation: each claims `claim` free shards at a time, works them and claims more;
        a shard whose worker died is taken over once its lease lapses, from its last committed
        chunk; whoever completes the last shard commits the generation."""
        started = time.monotonic()
        report = RunReport(self.plan.name, self.store.describe())
        self.keeper = LeaseKeeper(self.state, self.plan.lease_seconds)
        # A sync on top of a rolled-back destination would bury the generations it lost.
        # (A dataset the state store knows no generation of has nothing to lose: no listing.)
        for ds in self.plan.datasets:
            if (not only or ds.name in only) and self.state.generations(ds.name):
                for rollback in find_rollbacks(self.store, ds.name, state=self.state, head=None):
                    raise rollback.error()
        try:
            for ds in self.plan.datasets:
                if only and ds.name not in only:
                    continue
                if shards is not None and (bad := [s for s in shards if not 0 <= s < ds.shards]):
                    raise UsageError(f"dataset {ds.name} has shards 0..{ds.shards - 1}, not {bad}")
                t0 = time.monotonic()
                # Every run and worker of the plan must agree on one data key.
                with self.state.lock(f"{ds.name}.datakey"):
                    keyring = load_or_create_keyring(
                        self.store, self.provider, self.plan.name, ds.name
                    )
                self.state.bind_dataset_key(ds.name, keyring.first)  # names, digests: sealed
                self.ledgers[ds.name] = self.ledger_writer(ds.name, keyring.first, keyring.current)
                self.ledgers[ds.name].check_known()
                if ds.kind == "records":  # a sync keys records as the chains it extends
                    check_destination_layout(self.store, self.plan.name, ds, keyring)
                selected = sorted(range(ds.shards) if shards is None else shards)
                if worker:
                    dr = self._work_as_worker(ds, keyring, selected, claim, process_started_at())
                else:
                    dr = self._work_exclusively(ds, keyring, selected, shards)
                dr.seconds = time.monotonic() - t0
                report.datasets.append(dr)
        except BaseException:
            self.keeper.close()
            with contextlib.suppress(StateError):  # the first error is the one to report
                self.keeper.release_all()
            raise
        self.keeper.close()
        self.keeper.release_all()
        report.seconds = time.monotonic() - started
        return report

    def _work_exclusively(
        self, ds: DatasetPlan, keyring: Keyring, selected: list[int], shards: set[int] | None
    ) -> DatasetReport:
        """Lease every selected shard (in shard order, so runs never deadlock), then work."""
        for shard in selected:
            self._wait_for_lease(ds, shard)
        row = self._generation(ds)
        assert row is not None
        gen = row.generation
        key = self._sealing_key(ds, keyring, gen)
        dr = DatasetReport(ds.name, ds.kind, ds.shards, generation=gen)
        dr.generation_kind = row.kind
        prefixes = (
            [generation_prefix(ds.name, gen)]
            if shards is None
            else [shard_prefix(ds.name, gen, s) for s in selected]
        )
        for p in prefixes:
            dr.orphaned_uploads += abort_orphaned_uploads(self.store, self.state, p)
        self._work(ds, gen, key, dr, None if shards is None else set(selected))
        dr.committed = self._commit_generation(ds, gen, key)
        self._leases.release(ds.name, selected)
        return dr

    def _work_as_worker(
        self,
        ds: DatasetPlan,
        keyring: Keyring,
        selected: list[int],
        claim: int | None,
        started_at: float,
    ) -> DatasetReport:
        row = self._generation(ds, cohort_since=started_at)
        if row is None:  # this worker's cohort already finished the generation it belongs to
            latest = self.state.latest_generation(ds.name)
            assert latest is not None
            dr = DatasetReport(ds.name, ds.kind, ds.shards, generation=latest.generation)
            dr.generation_kind, dr.committed = latest.kind, True
            return dr
        gen = row.generation
        key = self._sealing_key(ds, keyring, gen)
        dr = DatasetReport(ds.name, ds.kind, ds.shards, generation=gen)
        dr.generation_kind = row.kind
        batch_size = claim or max(1, ds.shards // WORKER_CLAIM_SHARE)
        # Workers start their search at different shards, so they rarely contend for one.
        offset = int.from_bytes(xxhash.xxh3_64_digest(self._leases.owner.encode()), "big")
        order = [selected[(offset + i) % len(selected)] for i in range(len(selected))]
        while True:
            done = self._complete_shards(ds, gen)
            pending = [s for s in order if s not in done]
            if not pending:
                break
            holders = self.state.lease_holders(ds.name)
            batch: list[int] = []
            for shard in pending:
                holder = holders.get(shard)
                steal = None
                if holder is not None and holder[0] != self._leases.owner and holder[1] > 0:
                    if not dead_on_this_host(holder[0]):
                        continue  # another live worker has it
                    steal = holder[0]
                if not self._leases.claim(ds.name, shard, steal_from=steal):
                    continue
                if self.state.shard_status(ds.name, gen, shard) is ShardStatus.COMPLETE:
                    self._leases.release(ds.name, [shard])
                    continue
                batch.append(shard)
                if len(batch) >= batch_size:
                    break
            if not batch:  # the rest is leased to others: wait for them, or for a lapse
                time.sleep(self._poll_seconds())
                continue
            for shard in batch:
                prefix = shard_prefix(ds.name, gen, shard)
                dr.orphaned_uploads += abort_orphaned_uploads(self.store, self.state, prefix)
            self._work(ds, gen, key, dr, set(batch))
            self._leases.release(ds.name, batch)
        dr.committed = self._commit_generation(ds, gen, key)
        return dr

    def _work(
        self, ds: DatasetPlan, gen: int, key: DataKey, dr: DatasetReport, only: set[int] | None
    ) -> None:
        if ds.kind == "records":
            self._run_records(ds, gen, key, dr, only)
        else:
            self._run_objects(ds, gen, key, dr, only)

    def _wait_for_lease(self, ds: DatasetPlan, shard: int) -> None:
        while not self._leases.claim(ds.name, shard):
            holder = self.state.lease_holders(ds.name).get(shard)
            dead = holder is not None and dead_on_this_host(holder[0])
            if dead and holder and self._leases.claim(ds.name, shard, steal_from=holder[0]):
                return
            time.sleep(self._poll_seconds())

    def _sealing_key(self, ds: DatasetPlan, keyring: Keyring, gen: int) -> DataKey:
        """The key the signed keyring names for generation `gen` (never object metadata, which
        anyone who can write the destination can set); the ledger records chunks under it."""
        key = keyring.sealing_key(gen)
        self.ledgers[ds.name].key_id = key.key_id.hex()
        return key

    def ledger_writer(self, dataset: str, first: DataKey, key: DataKey) -> LedgerWriter:
        """The dataset's ledger writer: signs with the plan's signing key, tags plaintext
        digests with a key derived from its first data key, records chunks as sealed under
        `key`, and stores nothing for a shard in doubt."""
        return LedgerWriter(
            self.plan.name,
            dataset,
            self.store,
            self.state,
            LedgerKeys(first, self.provider.signer),
            key_id=key.key_id.hex(),
            who=self.keeper.owner if self.keeper is not None else worker_identity(),
            guard=lambda shard: self._check_lease(dataset, shard),
        )

    def _delete_chunks(
        self, ds: DatasetPlan, gen: int, shard: int, doomed: list[CommittedChunk], reason: str
    ) -> None:
        """Delete committed chunks at the destination and forget them: the ledger segment that
        records it is stored first and committed with the forgetting."""
        if not doomed:
            return
        self._check_lease(ds.name, shard)  # a worker that may have lost the shard deletes nothing
        ledger = self.ledgers.get(ds.name)
        moves = ledger.deletes(map(LedgerItem.of, doomed), reason) if ledger is not None else []
        for c in doomed:
            self.store.delete(c.object_key)
        self.state.forget_chunks(
            ds.name, gen, [c.object_key for c in doomed], fence=self._fence(), ledger=moves
        )

    @property
    def _leases(self) -> LeaseKeeper:
        assert self.keeper is not None, "leases are held only inside run()"
        return self.keeper

    def _poll_seconds(self) -> float:
        return min(1.0, self.plan.lease_seconds / 4)

    def _fence(self) -> Fence | None:
        return self.keeper.fence() if self.keeper is not None else None

    def _check_lease(self, dataset: str, shard: int) -> None:
        if self.keeper is not None:
            self.keeper.check(dataset, shard)

    def _generation(
        self, ds: DatasetPlan, cohort_since: float | None = None
    ) -> GenerationRow | None:
        """The open generation to work in: the bulk at first, later a new sync each time the
        last one is committed. Parallel shard runs join the same open generation. A worker
        (its process started at `cohort_since`) joins the open one, or finds the generation of
        the workers started with it committed already (None) and opens no other."""
        with self.state.lock(f"{ds.name}.generation"):
            latest = self.state.latest_generation(ds.name)
            if latest is None:
                return self.state.open_generation(ds.name, BULK_GENERATION, "bulk")
            if latest.committed:
                # A crash between the commit and the clean-up left its plaintext spools.
                remove_spools(self.plan, ds.name, upto=latest.generation)
                if cohort_since is not None and latest.started_at >= cohort_since:
                    return None
                return self.state.open_generation(ds.name, latest.generation + 1, "sync")
            if latest.kind == "compact":
                raise UsageError(
                    f"dataset {ds.name}: compaction into generation {latest.generation} was"
                    " interrupted; run `migrator compact` to finish it before syncing"
                )
            return latest

    def _pipeline(self, key: DataKey) -> ChunkPipeline:
        return ChunkPipeline(
            self.store,
            key,
            level=self.plan.compression_level,
            workers=self.workers + self.plan.upload_concurrency,
            budget=self.plan.memory_budget // 2,
            metadata={"migrator-plan": self.plan.name},
            journal=self.state,
            guard=lambda ident: self._check_lease(ident.dataset, ident.shard),
        )

    def _complete_shards(self, ds: DatasetPlan, gen: int) -> set[int]:
        return self.state.complete_shards(ds.name, gen)

    def _previous_head(self, ds: DatasetPlan, gen: int, shard: int) -> tuple[int, str | None]:
        """(generation, stored xxh3) of the shard's last manifest before `gen`; (0, None) if
        there is none, and this generation writes the shard's base."""
        heads = [h for h in self.state.shard_heads(ds.name, shard) if h.generation < gen]
        return (heads[-1].generation, heads[-1].manifest_xxh3) if heads else (0, None)

    # --- records -----------------------------------------------------------------------

    def _run_records(
        self, ds: DatasetPlan, gen: int, key: DataKey, dr: DatasetReport, only: set[int] | None
    ) -> None:
        folder = spool_dir(self.plan.state_dir, ds.name, gen)
        done = self._complete_shards(ds, gen)
        selected = range(ds.shards) if only is None else sorted(only)
        if all(s in done for s in selected):
            self._count_skipped(ds, gen, selected, dr)
            return
        assert ds.format is not None and ds.key is not None  # enforced by the plan model
        spec = RecordsSpec(
            dataset=ds.name,
            generation=gen,
            fmt=ds.format,
            key_field=ds.key,
            shards=ds.shards,
            source=self.open_source(ds),
            csv_delimiter=ds.csv_delimiter,
            csv_header=self.state.last_csv_header(ds.name, gen),
            on_bad_record=ds.on_bad_record,
            max_record_size=self.plan.max_record_size(ds),
        )
        # One router at a time: shard runs in parallel processes wait for it, then share it.
        with self.state.lock(f"{ds.name}.routing"):
            cp = self.state.route_checkpoint(spec.dataset, spec.generation)
            processes = 1
            if cp is None or not cp.complete:
                total = sum(f.size for f in spec.source.list())
                self.progress.start(ds.name, "routing", total)
                processes = routing_processes(total, self.workers)
            cp = route_records(
                spec,
                self.state,
                folder,
                buffer_budget=self.plan.memory_budget // 4,
                on_bytes=self.progress.advance,
                processes=processes,
            )
            store_dead_letters(self.plan, ds, gen, key, self.store, folder, cp.csv_header)
        extra = {}
        if cp.csv_header is not None:
            extra["csv_header"] = cp.csv_header.decode("utf-8", "surrogateescape")
        self._count_skipped(ds, gen, [s for s in selected if s in done], dr)
        todo: list[tuple[int, Path]] = []
        deltas: dict[int, _ShardDelta] = {}
        for shard in selected:
            if shard in done:
                continue
            _check_spool(ds, shard, folder, cp.spool_sizes[shard])
            delta, path = self._records_delta(ds, gen, shard, folder)
            if delta is None:  # nothing changed in the shard since its last generation
                self._complete_untouched(ds, gen, shard)
                continue
            deltas[shard] = delta
            todo.append((shard, path))
        sizes = {shard: path.stat().st_size if path.exists() else 0 for shard, path in todo}
        dr.bytes_in += sum(sizes.values())
        self.progress.start(ds.name, "encoding", sum(sizes.values()))
        pipeline = self._pipeline(key)
        encoder = ChunkEncoder(self.plan.compression_level)
        committer = _Committer(
            self.state,
            dr,
            lambda shard: self._write_manifest(
                ds, gen, shard, key, encoder, "records", extra, pipeline, deltas.pop(shard)
            ),
            self._fence,
            self.ledgers.get(ds.name),
        )
        try:
            for shard, path in todo:
                dr.shards_changed += 1
                dr.removed += len(deltas[shard].removed)
                if self.state.shard_status(ds.name, gen, shard) is ShardStatus.PENDING:
                    self.state.set_shard_status(ds.name, gen, shard, ShardStatus.RUNNING)
                self._encode_spool(ds, gen, shard, path, pipeline, committer, dr)
                committer.shard_read(shard)
            _settle_all(pipeline, committer)
        finally:
            committer.take(pipeline.drain(), force=True)
            pipeline.close()

    def _records_delta(
        self, ds: DatasetPlan, gen: int, shard: int, spool_dir: Path
    ) -> tuple[_ShardDelta | None, Path]:
        """Diff the shard's routed records against its inventory as of the last generation:
        (None, _) when nothing changed, else the delta and the spool of records to write."""
        spool = spool_path(spool_dir, shard)
        dpath = digests_path(spool_dir, shard)
        entries = dpath.read_bytes() if dpath.exists() else b""
        inventory_path = inventory_spool_path(spool_dir, shard)
        if not inventory_path.exists():
            _write_atomic(inventory_path, pack_records_inventory(entries))
        previous, previous_xxh3 = self._previous_head(ds, gen, shard)
        if previous == 0:
            digest, live = spool_digest(entries)
            return _ShardDelta(0, None, (), 0, 0, digest, digest, live, inventory_path), spool
        current = records_map_from_spool(entries)  # one pass gives the totals too
        digest = live = 0
        for e in current.values():
            digest = add(digest, e.digest)
            live += e.records
        blob = self.state.shard_inventory(ds.name, shard, gen)
        if blob is None:
            raise StateError(
                f"dataset {ds.name} shard {shard}: the state store has no inventory of"
                f" generation {previous}; rebuild the state before syncing"
            )
        before = unpack_records_map(blob)
        changed = {
            kh
            for kh, e in current.items()
            if (p := before.get(kh)) is None or p.digest != e.digest or p.records != e.records
        }
        gone = before.keys() - current.keys()
        if not changed and not gone:
            return None, spool
        dropped = gone | (changed & before.keys())
        removed_digest = added_digest = 0
        for kh in dropped:
            removed_digest = add(removed_digest, before[kh].digest)
        for kh in changed:
            added_digest = add(added_digest, current[kh].digest)
        delta_path = delta_spool_path(spool_dir, shard)
        if not delta_path.exists():  # a resumed run finds the very same delta spool
            _write_delta_spool(spool, entries, changed, delta_path)
        delta = _ShardDelta(
            previous,
            previous_xxh3,
            tuple(sorted(kh.hex() for kh in dropped)),
            sum(before[kh].records for kh in dropped),
            removed_digest,
            added_digest,
            digest,
            live,
            inventory_path,
        )
        return delta, delta_path

    def _encode_spool(
        self,
        ds: DatasetPlan,
        gen: int,
        shard: int,
        path: Path,
        pipeline: ChunkPipeline,
        committer: _Committer,
        dr: DatasetReport,
    ) -> None:
        done = {c.sequence: c for c in self.state.shard_chunks(ds.name, gen, shard)}
        size = path.stat().st_size if path.exists() else 0
        if size == 0:
            return
        framing = stored_framing(ds.csv_delimiter if ds.format == "csv" else None)
        with path.open("rb") as fh:
            offset, seq = 0, 0
            while offset < size:
                prior = done.get(seq)
                if prior is not None:
                    dr.chunks_skipped += 1
                    dr.records += prior.records
                    dr.bytes_stored += prior.stored_size
                    self.progress.advance(prior.source_end - offset)
                    offset, seq = prior.source_end, seq + 1
                    continue
                buf, cut, records = read_records_chunk(fh, offset, self.plan.chunk_size, framing)
                # A view, not a slice: the chunk reaches the encoder without another copy.
                data = memoryview(buf)[:cut] if cut < len(buf) else buf
                end = offset + cut
                ident = ChunkIdentity(ChunkKind.RECORDS, self.plan.name, ds.name, gen, shard, seq)
                job = ChunkJob(
                    ident, records_chunk_key(ds.name, gen, shard, seq), data, records, None, end, ""
                )
                pipeline.submit(job)
                committer.submitted(shard)
                dr.records += records
                self.progress.advance(cut)
                committer.take(pipeline.finished())
                offset, seq = end, seq + 1

    # --- objects -----------------------------------------------------------------------

    def _run_objects(
        self, ds: DatasetPlan, gen: int, key: DataKey, dr: DatasetReport, only: set[int] | None
    ) -> None:
        done = self._complete_shards(ds, gen)
        selected = range(ds.shards) if only is None else sorted(only)
        self._count_skipped(ds, gen, [s for s in selected if s in done], dr, count_input=True)
        if all(s in done for s in selected):
            return
        source = self.open_source(ds)
        part_size = ds.part_size or self.plan.chunk_size
        before: dict[int, ObjectsMap | None] = {}
        for shard in selected:
            if shard in done:
                continue
            previous, _ = self._previous_head(ds, gen, shard)
            blob = self.state.shard_inventory(ds.name, shard, gen) if previous else None
            if previous and blob is None:
                raise StateError(
                    f"dataset {ds.name} shard {shard}: the state store has no inventory of"
                    f" generation {previous}; rebuild the state before syncing"
                )
            before[shard] = unpack_objects_map(blob) if blob is not None else None
        current: dict[int, ObjectsMap] = {shard: {} for shard in before}
        sent: dict[int, set[str]] = {shard: set() for shard in before}

        def changed(src: SourceObject) -> int | None:
            """The shard of an object this generation must send, else None."""
            shard = shard_of(src.name.encode(), ds.shards)
            if shard not in current:
                return None
            entry = ObjectEntry(src.version, src.size)
            current[shard][src.name] = entry
            prior = before[shard]
            if prior is not None and prior.get(src.name) == entry:
                return None
            sent[shard].add(src.name)
            return shard

        # The progress bar's total (an upper bound on a sync); the listing below does the work.
        # This whole first listing also lets the source refuse names restore could not write
        # back (sources.base.RestorableNames) before any byte moves.
        total = sum(
            src.size for src in source.list() if shard_of(src.name.encode(), ds.shards) in current
        )
        self.progress.start(ds.name, "encoding", total)
        for shard in current:
            if self.state.shard_status(ds.name, gen, shard) is ShardStatus.PENDING:
                self.state.set_shard_status(ds.name, gen, shard, ShardStatus.RUNNING)
        tag = object_tagger(key)
        # A first run has nothing to skip: no state look-up per part.
        fresh = not self.state.has_chunks(ds.name, gen)
        pipeline = self._pipeline(key)
        encoder = ChunkEncoder(self.plan.compression_level)
        deltas: dict[int, _ShardDelta] = {}
        committer = _Committer(
            self.state,
            dr,
            lambda shard: self._write_manifest(
                ds, gen, shard, key, encoder, "objects", {}, pipeline, deltas.pop(shard)
            ),
            self._fence,
            self.ledgers.get(ds.name),
        )
        try:
            for src in source.list():
                picked = changed(src)
                if picked is None:
                    continue
                shard = picked
                name_tag = tag(src.name)
                need: Callable[[int], bool] = _every_part
                if not fresh:
                    need = self._needed(ds, gen, shard, name_tag, src.version, dr)
                for part, offset, length in _parts_needed(src.size, part_size, need):
                    ident = ChunkIdentity(
                        ChunkKind.OBJECT_PART, self.plan.name, ds.name, gen, shard, part, name_tag
                    )
                    okey = object_part_key(ds.name, gen, shard, name_tag, part)
                    job = ChunkJob(ident, okey, b"", 0, src.name, 0, src.version)
                    job.load = functools.partial(source.read_range, src, offset, length)
                    job.size = length
                    pipeline.submit(job)
                    committer.submitted(shard)
                    self.progress.advance(length)
                    committer.take(pipeline.finished())
                dr.bytes_in += src.size
            _settle_all(pipeline, committer)
            # Objects arrive in listing order, spread over all shards: all finish together.
            for shard in sorted(current):
                delta = _objects_delta(
                    before[shard],
                    current[shard],
                    sent[shard],
                    part_size,
                    *self._previous_head(ds, gen, shard),
                )
                if delta is None:
                    self._complete_untouched(ds, gen, shard)
                    continue
                dr.shards_changed += 1
                dr.removed += len(delta.removed)
                deltas[shard] = delta
                committer.shard_read(shard)
            _settle_all(pipeline, committer)
        finally:
            committer.take(pipeline.drain(), force=True)
            pipeline.close()

    def _needed(
        self,
        ds: DatasetPlan,
        gen: int,
        shard: int,
        name_tag: bytes,
        version: str,
        dr: DatasetReport,
    ) -> Callable[[int], bool]:
        """Which parts of an object still need sending: not committed for this file version."""

        def need(part: int) -> bool:
            okey = object_part_key(ds.name, gen, shard, name_tag, part)
            prior = self.state.committed_chunk(ds.name, gen, okey)
            if prior is not None and prior.source_version == version:
                dr.chunks_skipped += 1
                dr.bytes_stored += prior.stored_size
                self.progress.advance(prior.plain_size)
                return False
            return True

        return need

    # --- shared ------------------------------------------------------------------------

    def _write_manifest(
        self,
        ds: DatasetPlan,
        gen: int,
        shard: int,
        key: DataKey,
        encoder: ChunkEncoder,
        kind: str,
        extra: dict[str, str],
        pipeline: ChunkPipeline,
        delta: _ShardDelta,
    ) -> None:
        """Seal the shard's manifest from its committed chunks and store it on the pool; the
        shard is complete once the store confirmed the manifest."""
        tag = object_tagger(key)
        chunks = list(self.state.shard_chunks(ds.name, gen, shard))
        if delta.keep is not None:
            # parts of an object that changed or vanished before the shard closed
            stale = [c for c in chunks if not delta.keep(c)]
            self._delete_chunks(ds, gen, shard, stale, "stale-part")
            chunks = [c for c in chunks if delta.keep(c)]
        # The manifest binds where the shard's audit ledger ends: an audit checks it is there.
        manifest_extra: dict[str, Any] = dict(extra)
        head = self.state.ledger_head(ds.name, shard)
        if head is not None:
            manifest_extra["ledger"] = {
                "segment": head.segment,
                "entries": head.entries,
                "head": head.link,
            }
        refs = tuple(
            ChunkRef(
                sequence=c.sequence,
                object_key=c.object_key,
                plain_size=c.plain_size,
                stored_size=c.stored_size,
                records=c.records,
                plain_xxh3=c.plain_xxh3,
                stored_xxh3=c.stored_xxh3,
                name=c.name,
                name_tag=tag(c.name).hex() if c.name is not None else None,
                version=c.source_version if c.name is not None else None,
            )
            for c in chunks
        )
        manifest = ShardManifest(
            plan=self.plan.name,
            dataset=ds.name,
            generation=gen,
            shard=shard,
            kind=kind,
            chunks=refs,
            record_count=sum(c.records for c in chunks),
            plain_bytes=sum(c.plain_size for c in chunks),
            stored_bytes=sum(c.stored_size for c in chunks),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            extra=manifest_extra,
            previous=delta.previous,
            previous_xxh3=delta.previous_xxh3,
            removed=delta.removed,
            removed_records=delta.removed_records,
            added_digest=to_hex(delta.added_digest),
            removed_digest=to_hex(delta.removed_digest),
            digest=to_hex(delta.digest),
            records_layout=plan_layout(ds) if kind == "records" else None,
        )
        mkey = manifest_key(ds.name, gen, shard)
        sealed = seal_manifest(manifest, key, encoder)
        stored_xxh3 = xxhash.xxh3_128_hexdigest(sealed)

        def store_manifest() -> None:
            self._check_lease(ds.name, shard)
            put_manifest(self.store, ds.name, gen, shard, sealed)

        pipeline.submit_task(
            store_manifest,
            lambda: self.state.complete_shard(
                ds.name,
                gen,
                shard,
                manifest_key=mkey,
                manifest_xxh3=stored_xxh3,
                base=delta.base,
                inventory=delta.inventory_bytes(),
                live_records=delta.live_records,
                digest=to_hex(delta.digest),
                removed_records=delta.removed_records,
                fence=self._fence(),
            ),
        )

    def _complete_untouched(self, ds: DatasetPlan, gen: int, shard: int) -> None:
        """No manifest for the shard in this generation; parts an interrupted attempt sent
        for an object gone since are removed first, so nothing unlisted stays behind."""
        stale = list(self.state.shard_chunks(ds.name, gen, shard))
        self._check_lease(ds.name, shard)
        self._delete_chunks(ds, gen, shard, stale, "untouched-shard")
        self.state.complete_shard(ds.name, gen, shard, manifest_key=None, fence=self._fence())

    def _commit_generation(self, ds: DatasetPlan, gen: int, key: DataKey) -> bool:
        """Store the generation record once every shard of the generation is complete: from
        then on restore sees it. True when it is (now or before) committed."""
        with self.state.lock(f"{ds.name}.generation"):
            return commit_generation(self.plan, ds, gen, self.store, self.state, key)

    def _count_skipped(
        self,
        ds: DatasetPlan,
        gen: int,
        shards: Iterable[int],
        dr: DatasetReport,
        *,
        count_input: bool = False,
    ) -> None:
        for shard in shards:
            for c in self.state.shard_chunks(ds.name, gen, shard):
                dr.chunks_skipped += 1
                dr.records += c.records
                dr.bytes_stored += c.stored_size
                if count_input or ds.kind == "records":
                    dr.bytes_in += c.plain_size


def commit_generation(
    plan: Plan, ds: DatasetPlan, gen: int, store: ObjectStore, state: StateDB, key: DataKey
) -> bool:
    """The generation record from the state store's shard heads (callers hold the lock)."""
    rows = {g.generation: g for g in state.generations(ds.name)}
    row = rows.get(gen)
    if row is None:
        return False
    spool = spool_dir(plan.state_dir, ds.name, gen)
    if row.committed:
        shutil.rmtree(spool, ignore_errors=True)  # a crash may have come between the two
        return True
    progress = {p.shard: p for p in state.shard_progress(ds.name, gen)}
    if any(
        (p := progress.get(s)) is None or p.status is not ShardStatus.COMPLETE
        for s in range(ds.shards)
    ):
        return False
    heads: list[ShardHead] = []
    changed_records = changed_bytes = 0
    for shard in range(ds.shards):
        stored = [h for h in state.shard_heads(ds.name, shard) if h.generation <= gen]
        if not stored:
            raise StateError(f"dataset {ds.name} shard {shard}: complete without any manifest")
        base = max(i for i, h in enumerate(stored) if h.base)
        chain = stored[base:]
        last = chain[-1]
        heads.append(
            ShardHead(
                shard,
                tuple(h.generation for h in chain),
                last.manifest_xxh3,
                last.live_records if ds.kind == "records" else 0,
                last.digest,
            )
        )
        if last.generation == gen:
            changed_records += progress[shard].records + last.removed_records
            changed_bytes += progress[shard].plain_bytes
    earlier = [g for g in rows.values() if g.committed and g.generation < gen]
    previous = earlier[-1] if earlier else None
    finished = time.time()
    record = GenerationRecord(
        plan=plan.name,
        dataset=ds.name,
        generation=gen,
        kind=row.kind,
        started_at=_iso(row.started_at),
        finished_at=_iso(finished),
        seconds=round(finished - row.started_at, 3),
        previous=previous.generation if previous else 0,
        previous_xxh3=previous.record_xxh3 if previous else None,
        changed_records=changed_records,
        changed_bytes=changed_bytes,
        shards=tuple(heads),
    )
    sealed = seal_record(record, key, ChunkEncoder(plan.compression_level))
    put_record(store, ds.name, gen, sealed)
    state.commit_generation(
        ds.name,
        gen,
        changed_records=changed_records,
        changed_bytes=changed_bytes,
        record_xxh3=xxhash.xxh3_128_hexdigest(sealed),
        finished_at=finished,
    )
    for shard in range(ds.shards):
        state.prune_inventories(ds.name, shard, gen + 1)
    shutil.rmtree(spool, ignore_errors=True)
    return True


def _check_spool(ds: DatasetPlan, shard: int, spool_dir: Path, routed: int) -> None:
    """The shard's spool is what routing wrote: a worker that does not share the router's
    state_dir would otherwise see no records and write the shard as empty or deleted."""
    path = spool_path(spool_dir, shard)
    size = path.stat().st_size if path.exists() else 0
    if size != routed:
        raise StateError(
            f"dataset {ds.name} shard {shard}: the spool {path} holds {size:,} bytes, routing"
            f" wrote {routed:,}; every worker of a plan must see the same state_dir (a shared"
            " volume)"
        )


def remove_spools(plan: Plan, dataset: str, *, upto: int) -> None:
    """Remove the spools (routed plaintext) of generations up to `upto`, all committed."""
    root = spools_root(plan.state_dir, dataset)
    if not root.is_dir():
        return
    for folder in root.iterdir():
        number = folder.name[1:]
        if folder.name[:1] == "g" and number.isdigit() and int(number) <= upto:
            shutil.rmtree(folder, ignore_errors=True)


def routing_processes(source_bytes: int, workers: int) -> int:
    """Worker processes for routing: only for more than a few blocks, and only with cores to
    spare beside the reading process (on 2 cores it measured no faster than one process:
    the reader's copies and writes take the other core; docs/PERFORMANCE.md)."""
    cores = os.cpu_count() or 1
    if source_bytes < PARALLEL_ROUTING_BYTES or cores < PARALLEL_ROUTING_MIN_CORES:
        return 1
    return min(workers, cores - 1)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _objects_delta(
    before: ObjectsMap | None,
    current: ObjectsMap,
    sent: set[str],
    part_size: int,
    previous: int,
    previous_xxh3: str | None,
) -> _ShardDelta | None:
    """A shard's objects delta from its inventory before and its listing now; None if equal."""

    def keep(c: CommittedChunk) -> bool:
        entry = current.get(c.name or "")
        return (
            c.name in sent
            and entry is not None
            and entry.version == c.source_version
            and c.sequence < max(1, -(-entry.size // part_size))
        )

    digest = objects_digest(current)
    inventory = pack_objects_map(current)
    added = 0
    for name in sent:
        added = add(added, current[name].digest(name))
    if before is None or previous == 0:
        return _ShardDelta(0, None, (), 0, 0, added, digest, 0, inventory, keep)
    gone = before.keys() - current.keys()
    if not sent and not gone:
        return None
    dropped = gone | (sent & before.keys())
    removed_digest = 0
    for name in dropped:
        removed_digest = add(removed_digest, before[name].digest(name))
    return _ShardDelta(
        previous,
        previous_xxh3,
        tuple(sorted(dropped)),
        0,
        removed_digest,
        added,
        digest,
        0,
        inventory,
        keep,
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_delta_spool(spool: Path, entries: bytes, changed: set[bytes], target: Path) -> None:
    """The records of changed keys, in spool order: what a sync writes for the shard."""
    tmp = target.with_name(target.name + ".tmp")
    with spool.open("rb", buffering=8 * 1024 * 1024) as src, open_private(tmp, "wb") as out:
        for kh, length in iter_spool_entries(entries):
            record = src.read(length)
            if kh in changed:
                out.write(record)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


def _settle_all(pipeline: ChunkPipeline, committer: _Committer) -> None:
    """Drain, commit and raise the first failure, until committing starts no more work (a
    shard's last commit submits its manifest)."""
    while True:
        committer.take(pipeline.drain(), force=True)
        pipeline.check()
        if pipeline.idle():
            return


def _every_part(part: int) -> bool:
    return True


def _parts_needed(
    size: int, part_size: int, need: Callable[[int], bool]
) -> Iterator[tuple[int, int, int]]:
    """(part, offset, length) of the parts still needed; an empty file is one empty part."""
    parts = max(1, -(-size // part_size))
    for part in range(parts):
        if need(part):
            offset = part * part_size
            yield part, offset, min(part_size, size - offset)
