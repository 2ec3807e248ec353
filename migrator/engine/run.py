"""`migrator run`: route, chunk, encode, store and commit every dataset of a plan, resumably."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from migrator.codec.chunk import ChunkEncoder, object_tagger
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.manifest import (
    ChunkRef,
    ShardManifest,
    manifest_key,
    object_part_key,
    records_chunk_key,
    seal_manifest,
)
from migrator.engine.pipeline import ChunkJob, ChunkPipeline
from migrator.engine.route import RecordsSpec, route_records, spool_path
from migrator.engine.upload import abort_orphaned_uploads
from migrator.errors import UsageError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import load_or_create_data_key
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetPlan, Plan
from migrator.sharding import shard_of
from migrator.sources.base import Source
from migrator.sources.factory import open_source
from migrator.state.model import CommittedChunk, ShardStatus
from migrator.state.sqlite import SqliteStateStore
from migrator.stores.base import ObjectStore

BULK_GENERATION = 1
COMMIT_BATCH = 256
COMMIT_SECONDS = 0.5


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
        self, state: SqliteStateStore, report: DatasetReport, on_shard_done: Callable[[int], None]
    ) -> None:
        self.state = state
        self.report = report
        self.on_shard_done = on_shard_done
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
        self.state.commit_chunks(self.batch)
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


class MigrationRun:
    """One plan's run against one store, key provider and state store (all injected)."""

    def __init__(
        self,
        plan: Plan,
        store: ObjectStore,
        provider: KeyProvider,
        state: SqliteStateStore,
        progress: ProgressSink | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.provider = provider
        self.state = state
        self.progress = progress or ProgressSink()
        self.workers = plan.workers or os.cpu_count() or 1
        self.open_source: Callable[[DatasetPlan], Source] = open_source

    def run(self, only: set[str] | None = None, shards: set[int] | None = None) -> RunReport:
        """Every dataset (or `only` these), every shard (or only `shards`: one Dagster
        partition, one worker's share). Shard runs of one plan may run in parallel processes."""
        started = time.monotonic()
        report = RunReport(self.plan.name, self.store.describe())
        for ds in self.plan.datasets:
            if only and ds.name not in only:
                continue
            if shards is not None and (bad := [s for s in shards if not 0 <= s < ds.shards]):
                raise UsageError(f"dataset {ds.name} has shards 0..{ds.shards - 1}, not {bad}")
            t0 = time.monotonic()
            # Shard runs in parallel processes must agree on one data key: create it under a lock.
            with _file_lock(self.plan.state_dir / "keys" / f"{ds.name}.lock"):
                key = load_or_create_data_key(self.store, self.provider, self.plan.name, ds.name)
            dr = DatasetReport(ds.name, ds.kind, ds.shards)
            gen = f"{ds.name}/g{BULK_GENERATION:06d}/"
            prefixes = [gen] if shards is None else [f"{gen}s{s:05d}/" for s in sorted(shards)]
            for prefix in prefixes:
                dr.orphaned_uploads += abort_orphaned_uploads(self.store, self.state, prefix)
            if ds.kind == "records":
                self._run_records(ds, key, dr, shards)
            else:
                self._run_objects(ds, key, dr, shards)
            dr.seconds = time.monotonic() - t0
            report.datasets.append(dr)
        report.seconds = time.monotonic() - started
        return report

    def _pipeline(self, key: DataKey) -> ChunkPipeline:
        return ChunkPipeline(
            self.store,
            key,
            level=self.plan.compression_level,
            workers=self.workers + self.plan.upload_concurrency,
            budget=self.plan.memory_budget // 2,
            metadata={"migrator-plan": self.plan.name},
            journal=self.state,
        )

    def _all_complete(self, ds: DatasetPlan) -> bool:
        done = {
            p.shard
            for p in self.state.shard_progress(ds.name, BULK_GENERATION)
            if p.status is ShardStatus.COMPLETE
        }
        return len(done) == ds.shards

    # --- records -----------------------------------------------------------------------

    def _run_records(
        self, ds: DatasetPlan, key: DataKey, dr: DatasetReport, only: set[int] | None
    ) -> None:
        spool_dir = self.plan.state_dir / "spool" / ds.name / f"g{BULK_GENERATION:06d}"
        if only is None and self._all_complete(ds):
            self._skip_complete(ds, dr)
            return
        assert ds.format is not None and ds.key is not None  # enforced by the plan model
        spec = RecordsSpec(
            dataset=ds.name,
            generation=BULK_GENERATION,
            fmt=ds.format,
            key_field=ds.key,
            shards=ds.shards,
            source=self.open_source(ds),
            csv_delimiter=ds.csv_delimiter,
        )
        # One router at a time: shard runs in parallel processes wait for it, then share it.
        with _file_lock(self.plan.state_dir / "spool" / f"{ds.name}.lock"):
            cp = self.state.route_checkpoint(spec.dataset, spec.generation)
            if cp is None or not cp.complete:
                total = sum(f.size for f in spec.source.list())
                self.progress.start(ds.name, "routing", total)
            cp = route_records(
                spec,
                self.state,
                spool_dir,
                buffer_budget=self.plan.memory_budget // 4,
                on_bytes=self.progress.advance,
            )
        selected = range(ds.shards) if only is None else sorted(only)
        dr.bytes_in = sum(cp.spool_sizes[s] for s in selected)
        extra = {}
        if cp.csv_header is not None:
            extra["csv_header"] = cp.csv_header.decode("utf-8", "surrogateescape")
        self.progress.start(ds.name, "encoding", dr.bytes_in)
        pipeline = self._pipeline(key)
        encoder = ChunkEncoder(self.plan.compression_level)
        committer = _Committer(
            self.state,
            dr,
            lambda shard: self._write_manifest(ds, shard, key, encoder, "records", extra, pipeline),
        )
        try:
            for shard in selected:
                status = self.state.shard_status(ds.name, BULK_GENERATION, shard)
                if status is ShardStatus.COMPLETE:
                    self._count_skipped(ds, shard, dr)
                    self.progress.advance(cp.spool_sizes[shard])
                    continue
                if status is ShardStatus.PENDING:
                    self.state.set_shard_status(
                        ds.name, BULK_GENERATION, shard, ShardStatus.RUNNING
                    )
                self._encode_spool(ds, shard, spool_path(spool_dir, shard), pipeline, committer, dr)
                committer.shard_read(shard)
            _settle_all(pipeline, committer)
        finally:
            committer.take(pipeline.drain(), force=True)
            pipeline.close()
        if self._all_complete(ds):
            shutil.rmtree(spool_dir, ignore_errors=True)

    def _encode_spool(
        self,
        ds: DatasetPlan,
        shard: int,
        path: Path,
        pipeline: ChunkPipeline,
        committer: _Committer,
        dr: DatasetReport,
    ) -> None:
        done = {c.sequence: c for c in self.state.shard_chunks(ds.name, BULK_GENERATION, shard)}
        size = path.stat().st_size if path.exists() else 0
        if size == 0:
            return
        is_csv = ds.format == "csv"
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
                buf, cut, records = _read_records_chunk(fh, offset, self.plan.chunk_size, is_csv)
                # A view, not a slice: the chunk reaches the encoder without another copy.
                data = memoryview(buf)[:cut] if cut < len(buf) else buf
                end = offset + cut
                ident = ChunkIdentity(
                    ChunkKind.RECORDS, self.plan.name, ds.name, BULK_GENERATION, shard, seq
                )
                job = ChunkJob(
                    ident,
                    records_chunk_key(ds.name, BULK_GENERATION, shard, seq),
                    data,
                    records,
                    None,
                    end,
                    "",
                )
                pipeline.submit(job)
                committer.submitted(shard)
                dr.records += records
                self.progress.advance(cut)
                committer.take(pipeline.finished())
                offset, seq = end, seq + 1

    # --- objects -----------------------------------------------------------------------

    def _run_objects(
        self, ds: DatasetPlan, key: DataKey, dr: DatasetReport, only: set[int] | None
    ) -> None:
        if only is None and self._all_complete(ds):
            self._skip_complete(ds, dr)
            return
        source = self.open_source(ds)
        # A complete shard is left as its manifest describes it: changes to its objects are for
        # an incremental sync's new generation, never rewritten under the sealed manifest.
        done = {
            p.shard
            for p in self.state.shard_progress(ds.name, BULK_GENERATION)
            if p.status is ShardStatus.COMPLETE
        }
        for shard in done if only is None else done & only:
            self._count_skipped(ds, shard, dr, count_input=True)

        def wanted(name: str) -> int | None:
            shard = shard_of(name.encode(), ds.shards)
            if shard in done:
                return None
            return shard if only is None or shard in only else None

        total = sum(f.size for f in source.list() if wanted(f.name) is not None)
        self.progress.start(ds.name, "encoding", total)
        selected = range(ds.shards) if only is None else sorted(only)
        for shard in selected:
            if self.state.shard_status(ds.name, BULK_GENERATION, shard) is ShardStatus.PENDING:
                self.state.set_shard_status(ds.name, BULK_GENERATION, shard, ShardStatus.RUNNING)
        tag = object_tagger(key)
        part_size = ds.part_size or self.plan.chunk_size
        # A first run has nothing to skip: no state look-up per part.
        fresh = not self.state.has_chunks(ds.name, BULK_GENERATION)
        pipeline = self._pipeline(key)
        encoder = ChunkEncoder(self.plan.compression_level)
        committer = _Committer(
            self.state,
            dr,
            lambda shard: self._write_manifest(ds, shard, key, encoder, "objects", {}, pipeline),
        )
        try:
            for src in source.list():
                picked = wanted(src.name)
                if picked is None:
                    continue
                shard = picked
                name_tag = tag(src.name)
                need: Callable[[int], bool] = _every_part
                if not fresh:
                    need = self._needed(ds, shard, name_tag, src.version, dr)
                for part, offset, length in _parts_needed(src.size, part_size, need):
                    ident = ChunkIdentity(
                        ChunkKind.OBJECT_PART,
                        self.plan.name,
                        ds.name,
                        BULK_GENERATION,
                        shard,
                        part,
                        name_tag,
                    )
                    okey = object_part_key(ds.name, BULK_GENERATION, shard, name_tag, part)
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
            for shard in selected:
                status = self.state.shard_status(ds.name, BULK_GENERATION, shard)
                if status is not ShardStatus.COMPLETE:
                    committer.shard_read(shard)
            _settle_all(pipeline, committer)
        finally:
            committer.take(pipeline.drain(), force=True)
            pipeline.close()

    def _needed(
        self,
        ds: DatasetPlan,
        shard: int,
        name_tag: bytes,
        version: str,
        dr: DatasetReport,
    ) -> Callable[[int], bool]:
        """Which parts of an object still need sending: not committed for this file version."""

        def need(part: int) -> bool:
            okey = object_part_key(ds.name, BULK_GENERATION, shard, name_tag, part)
            prior = self.state.committed_chunk(ds.name, BULK_GENERATION, okey)
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
        shard: int,
        key: DataKey,
        encoder: ChunkEncoder,
        kind: str,
        extra: dict[str, str],
        pipeline: ChunkPipeline,
    ) -> None:
        """Seal the shard's manifest from its committed chunks and store it on the pool; the
        shard is complete once the store confirmed the manifest."""
        tag = object_tagger(key)
        chunks = list(self.state.shard_chunks(ds.name, BULK_GENERATION, shard))
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
            )
            for c in chunks
        )
        manifest = ShardManifest(
            plan=self.plan.name,
            dataset=ds.name,
            generation=BULK_GENERATION,
            shard=shard,
            kind=kind,
            chunks=refs,
            record_count=sum(c.records for c in chunks),
            plain_bytes=sum(c.plain_size for c in chunks),
            stored_bytes=sum(c.stored_size for c in chunks),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            extra=dict(extra),
        )
        mkey = manifest_key(ds.name, BULK_GENERATION, shard)
        sealed = seal_manifest(manifest, key, encoder)
        pipeline.submit_task(
            lambda: self.store.put(mkey, sealed, {"migrator-kind": "manifest"}),
            lambda: self.state.set_shard_status(
                ds.name, BULK_GENERATION, shard, ShardStatus.COMPLETE, mkey
            ),
        )

    def _skip_complete(self, ds: DatasetPlan, dr: DatasetReport) -> None:
        for shard in range(ds.shards):
            self._count_skipped(ds, shard, dr, count_input=True)

    def _count_skipped(
        self, ds: DatasetPlan, shard: int, dr: DatasetReport, *, count_input: bool = False
    ) -> None:
        for c in self.state.shard_chunks(ds.name, BULK_GENERATION, shard):
            dr.chunks_skipped += 1
            dr.records += c.records
            dr.bytes_stored += c.stored_size
            if count_input:
                dr.bytes_in += c.plain_size


def _read_records_chunk(
    fh: BinaryIO, offset: int, target: int, is_csv: bool
) -> tuple[bytes, int, int]:
    """(buffer, cut, records): the chunk is buffer[:cut], from offset to the last record end
    within `target` bytes, or one whole record when a single record is larger than the target.

    The spool holds records each ending in a line feed; a CSV record may hold quoted line feeds,
    so there the cut is the last line feed at which the quote count is even.
    """
    fh.seek(offset)
    data = fh.read(target)
    cut, records = _record_ends(data, is_csv)
    if cut > 0 or not data:
        return data, cut, records
    more = bytearray(data)
    while True:
        block = fh.read(target)
        if not block:
            whole = bytes(more)
            return whole, len(whole), _record_ends(whole, is_csv)[1]
        more += block
        cut, records = _record_ends(bytes(more), is_csv)
        if cut > 0:
            return bytes(more), cut, records


def _record_ends(data: bytes, is_csv: bool) -> tuple[int, int]:
    """(end of the last whole record, records before it), in one pass over the data."""
    if not is_csv:
        cut = data.rfind(b"\n") + 1
        return cut, data.count(b"\n", 0, cut)
    end = count = quotes = pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return end, count
        quotes += data.count(b'"', pos, nl)
        if quotes % 2 == 0:
            end = nl + 1
            count += 1
        pos = nl + 1


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on one machine (flock), released on exit or death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
