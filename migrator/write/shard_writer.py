"""Writing a generation's shards: chunks through the pipeline, commits, then each manifest.

A run and a compaction write a shard the same way: its chunks are sealed and stored on the
pipeline's pool, committed to the state store in batches, and once every chunk of the shard
is committed its manifest is sealed from the state store's rows and stored; the shard is
complete when the store confirmed the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import xxhash

from migrator.codec.chunk import ChunkEncoder, object_tagger
from migrator.codec.digests import to_hex
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.ledger_entry import EntryReason
from migrator.codec.manifest import ChunkRef, ShardManifest, seal_manifest
from migrator.plan.kinds import DatasetKind
from migrator.read.chain import plan_layout
from migrator.records.blocks import read_records_chunk
from migrator.records.chunk_cuts import chunk_cut, read_exactly, record_ends
from migrator.records.framing import stored_framing
from migrator.repository.manifests import put_manifest
from migrator.repository.names import manifest_key, records_chunk_key
from migrator.write.committer import Committer
from migrator.write.pipeline import ChunkJob, ChunkPipeline
from migrator.write.scope import WriteScope
from migrator.write.shard_delta import ShardDelta
from migrator.write.stale_chunks import delete_chunks


class ShardWriter:
    """Writes shards of one kind of dataset for one scope. `extra`: what every
    manifest states besides its chunks (read as each manifest is sealed). Use it as a context
    manager: leaving it commits what the store confirmed and stops the pool."""

    def __init__(self, scope: WriteScope, kind: DatasetKind, extra: dict[str, str]) -> None:
        self.scope = scope
        self.kind = kind
        self.extra = extra
        self.deltas: dict[int, ShardDelta] = {}  # shards read, awaiting their manifest
        plan = scope.plan
        self.pipeline = ChunkPipeline(
            scope.store,
            scope.key,
            level=plan.compression_level,
            workers=scope.workers + plan.upload_concurrency,
            budget=plan.memory_budget // 2,
            metadata={"migrator-plan": plan.name},
            journal=scope.state,
            guard=lambda ident: scope.guard.check(ident.dataset, ident.shard),
        )
        self.encoder = ChunkEncoder(plan.compression_level)
        self.committer = Committer(
            scope.state,
            scope.report,
            self._write_manifest,
            scope.guard.fence,
            scope.ledger,
            batch=scope.commit_batch,
        )

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.committer.take(self.pipeline.drain(), force=True)
        self.pipeline.close()

    def submit(self, job: ChunkJob) -> None:
        """Hand a chunk to the pool (blocks while the memory budget is spent)."""
        self.pipeline.submit(job)
        self.committer.submitted(job.identity.shard)

    def take_finished(self) -> None:
        """Commit what the store confirmed since (when a batch is due)."""
        self.committer.take(self.pipeline.finished())

    def shard_read(self, shard: int, delta: ShardDelta) -> None:
        """Every chunk of the shard is submitted: its manifest follows once they are committed."""
        self.deltas[shard] = delta
        self.committer.shard_read(shard)

    def settle(self) -> None:
        """Drain, commit and raise the first failure, until committing starts no more work (a
        shard's last commit submits its manifest)."""
        while True:
            self.committer.take(self.pipeline.drain(), force=True)
            self.pipeline.check()
            if self.pipeline.idle():
                return

    def encode_spool(self, shard: int, path: Path) -> None:
        """Cut a records spool into chunks and submit those not committed before: the cuts
        depend on the spool alone, so a resumed shard skips exactly its committed chunks."""
        size = path.stat().st_size if path.exists() else 0
        self.encode_stream(shard, lambda: path.open("rb"), size)

    def encode_stream(
        self,
        shard: int,
        open_spool: Callable[[], BinaryIO],
        size: int,
        entries: bytes | None = None,
    ) -> None:
        """encode_spool over `size` bytes of a stream (a shard's routed segments). `entries`:
        the stream's records' digest entries, in its order, when known: their lengths give the
        record ends, so chunks are cut without scanning the records for them (the same cuts)."""
        scope, dr = self.scope, self.scope.report
        ds, gen, plan = scope.ds, scope.generation, scope.plan
        done = {c.sequence: c for c in scope.state.shard_chunks(ds.name, gen, shard)}
        if size == 0:
            return
        framing = stored_framing(ds.csv_delimiter if ds.format == "csv" else None)
        ends = record_ends(entries, size) if entries is not None else None
        with open_spool() as fh:
            offset, seq = 0, 0
            while offset < size:
                prior = done.get(seq)
                if prior is not None:
                    dr.chunks_skipped += 1
                    dr.records += prior.records
                    dr.bytes_stored += prior.stored_size
                    scope.progress.advance(prior.source_end - offset)
                    offset, seq = prior.source_end, seq + 1
                    continue
                buf: bytes | bytearray
                if ends is None:
                    buf, cut, records = read_records_chunk(fh, offset, plan.chunk_size, framing)
                else:
                    cut, records = chunk_cut(ends, offset, plan.chunk_size)
                    buf = read_exactly(fh, offset, cut)
                # A view, not a slice: the chunk reaches the encoder without another copy.
                data = memoryview(buf)[:cut] if cut < len(buf) else buf
                end = offset + cut
                ident = ChunkIdentity(ChunkKind.RECORDS, plan.name, ds.name, gen, shard, seq)
                job = ChunkJob(
                    ident, records_chunk_key(ds.name, gen, shard, seq), data, records, None, end, ""
                )
                self.submit(job)
                dr.records += records
                scope.progress.advance(cut)
                self.take_finished()
                offset, seq = end, seq + 1

    def _write_manifest(self, shard: int) -> None:
        """Seal the shard's manifest from its committed chunks and store it on the pool; the
        shard is complete once the store confirmed the manifest."""
        scope = self.scope
        ds, gen, state = scope.ds, scope.generation, scope.state
        delta = self.deltas.pop(shard)
        tag = object_tagger(scope.key)
        chunks = list(state.shard_chunks(ds.name, gen, shard))
        if delta.keep is not None:
            # parts of an object that changed or vanished before the shard closed
            stale = [c for c in chunks if not delta.keep(c)]
            delete_chunks(scope, shard, stale, EntryReason.STALE_PART)
            chunks = [c for c in chunks if delta.keep(c)]
        # The manifest binds where the shard's audit ledger ends: an audit checks it is there.
        manifest_extra: dict[str, Any] = dict(self.extra)
        head = state.ledger_head(ds.name, shard)
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
            plan=scope.plan.name,
            dataset=ds.name,
            generation=gen,
            shard=shard,
            kind=self.kind,
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
            records_layout=plan_layout(ds) if self.kind is DatasetKind.RECORDS else None,
        )
        mkey = manifest_key(ds.name, gen, shard)
        sealed = seal_manifest(manifest, scope.key, self.encoder)
        stored_xxh3 = xxhash.xxh3_128_hexdigest(sealed)

        def store_manifest() -> None:
            scope.guard.check(ds.name, shard)
            put_manifest(scope.store, ds.name, gen, shard, sealed)

        self.pipeline.submit_task(
            store_manifest,
            lambda: state.complete_shard(
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
                fence=scope.guard.fence(),
            ),
        )
