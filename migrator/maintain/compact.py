"""`migrator compact`: fold each shard's chain of generations into a new base.

Every sync adds a delta to the shards it touched, so restore (and the gate's manifest reads)
grow with the number of syncs. Compaction rewrites the live content of every shard whose chain
is longer than one into a base in a new generation, commits it with a generation record (the
atomic switch: restore uses the old chains until that record exists), reads the new bases back,
and only then deletes the old generations. Rerunning it after a crash at any point resumes the
open compaction or finishes the deletion.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from migrator.codec.chunk import object_tagger
from migrator.codec.digests import from_hex
from migrator.codec.generation import GenerationKind, GenerationRecord
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.ledger_entry import EntryReason
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import MigratorError, StateError, TamperedError, UsageError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, check_signer_recorded, load_keyring
from migrator.plan.kinds import DatasetKind
from migrator.plan.model import DatasetPlan
from migrator.read.chain import (
    RecordKeys,
    check_plan_layout,
    csv_header_of,
    head_chain,
    live_parts,
    live_record_blocks,
    superseded,
)
from migrator.read.readback import ordered_map
from migrator.read.verify import Verifier
from migrator.repository.chunks import read_chunk
from migrator.repository.generations import delete_record, latest_record, record_generations
from migrator.repository.names import (
    MANIFEST_NAME,
    generation_prefix,
    manifest_key,
    object_part_key,
    spool_dir,
    spool_path,
)
from migrator.repository.shard_objects import delete_objects, list_shard_objects, read_stored
from migrator.state.model import ShardStatus
from migrator.state.private import open_private
from migrator.stores.base import ObjectInfo
from migrator.write.generation import commit_generation, refuse_while_repairing, remove_spools
from migrator.write.ledger import LedgerItem
from migrator.write.pipeline import ChunkJob
from migrator.write.reports import DatasetReport
from migrator.write.scope import WriteScope, encode_workers
from migrator.write.shard_delta import ShardDelta
from migrator.write.shard_writer import ShardWriter
from migrator.write.stage import WriteStage
from migrator.write.upload import abort_orphaned_uploads


@dataclass
class DatasetCompaction:
    name: str
    generation: int | None = None  # the compaction's generation (None: nothing to fold)
    shards_compacted: list[int] = field(default_factory=list)
    chunks_written: int = 0
    bytes_written: int = 0
    objects_deleted: int = 0  # old generations' chunks and manifests, after verification
    records_deleted: int = 0  # generation records older than the compaction
    seconds: float = 0.0


class CompactionError(MigratorError):
    """The new bases did not verify: nothing old was deleted."""


class Compactor(WriteStage):
    """Compaction holds each dataset's generation lock while it works: no shard leases."""

    def compact(self, only: set[str] | None = None) -> list[DatasetCompaction]:
        out = []
        for ds in self.plan.datasets:
            if only and ds.name not in only:
                continue
            started = time.monotonic()
            with self.state.lock(f"{ds.name}.generation"):
                result = self._dataset(ds)
            result.seconds = time.monotonic() - started
            out.append(result)
        return out

    def _dataset(self, ds: DatasetPlan) -> DatasetCompaction:
        result = DatasetCompaction(ds.name)
        keyring = load_keyring(self.store, self.provider, self.plan.name, ds.name)
        self.state.bind_dataset_key(ds.name, keyring.first)
        check_signer_recorded(keyring, self.provider)
        latest = self.state.latest_generation(ds.name)
        if latest is None:
            raise UsageError(f"dataset {ds.name} has not been migrated yet: nothing to compact")
        refuse_while_repairing(self.state, ds.name)
        if not latest.committed and latest.kind is not GenerationKind.COMPACT:
            raise UsageError(
                f"dataset {ds.name}: {latest.kind} generation {latest.generation} is still open;"
                " finish it with `migrator run` before compacting"
            )
        # New bases are sealed under the key the signed keyring names for their generation.
        key = keyring.sealing_key(latest.generation + (1 if latest.committed else 0))
        self.open_ledger(ds.name, keyring.first, key)
        if latest.committed:
            remove_spools(self.plan, ds.name, upto=latest.generation)  # left by a crash
            record = latest_record(self.store, self.plan.name, ds.name, keyring, latest.generation)
            if record is None:
                raise StateError(
                    f"dataset {ds.name}: generation {latest.generation} is committed in the state"
                    " store but its record is not at the destination"
                )
            targets = [h.shard for h in record.shards if len(h.chain) > 1]
            if targets:
                gen = latest.generation + 1
                self.state.open_generation(ds.name, gen, GenerationKind.COMPACT)
                abort_orphaned_uploads(self.store, self.state, generation_prefix(ds.name, gen))
                self._fold(ds, gen, key, keyring, record, targets, result)
        else:
            gen = latest.generation
            record = latest_record(self.store, self.plan.name, ds.name, keyring, gen - 1)
            if record is None:  # a compaction opens only over a committed generation
                raise StateError(
                    f"dataset {ds.name}: compaction {gen} is open, but no generation record"
                    " before it is at the destination"
                )
            targets = [h.shard for h in record.shards if len(h.chain) > 1]
            # A multipart upload begun but not journaled before a crash: nobody else aborts it.
            abort_orphaned_uploads(self.store, self.state, generation_prefix(ds.name, gen))
            self._fold(ds, gen, key, keyring, record, targets, result)
        self._sweep(ds, key, result)
        return result

    # --- writing the new bases ---------------------------------------------------------

    def _fold(
        self,
        ds: DatasetPlan,
        gen: int,
        key: DataKey,
        keyring: Keyring,
        record: GenerationRecord,
        targets: list[int],
        result: DatasetCompaction,
    ) -> None:
        result.generation = gen
        result.shards_compacted = targets
        dr = DatasetReport(ds.name, ds.kind, ds.shards, generation=gen)
        scope = self.write_scope(ds, gen, key, dr, encode_workers(self.plan))
        extra: dict[str, str] = {}
        done = scope.complete_shards()
        with (
            ShardWriter(scope, ds.kind, extra) as writer,
            ThreadPoolExecutor(self.workers, thread_name_prefix="compact") as pool,
        ):
            for shard in targets:
                if shard in done:
                    continue
                head = record.shards[shard]
                chain = [
                    link.manifest
                    for link in head_chain(self.store, self.plan.name, ds.name, head, keyring)
                ]
                delta = self._base_delta(ds, gen, shard, chain)
                scope.mark_running(shard)
                if ds.kind is DatasetKind.RECORDS:
                    check_plan_layout(ds, chain)  # the new base is stamped with the plan's
                    header = csv_header_of(chain)
                    if header is not None:
                        extra["csv_header"] = header
                    spool = self._live_spool(ds, gen, chain, keyring, pool)
                    writer.encode_spool(shard, spool)
                else:
                    self._objects(scope, shard, chain, keyring, writer)
                writer.shard_read(shard, delta)
            writer.settle()
        for shard in range(ds.shards):  # the others keep their chains
            if shard not in targets and self.state.shard_status(ds.name, gen, shard) is not (
                ShardStatus.COMPLETE
            ):
                self.state.complete_shard(ds.name, gen, shard, manifest_key=None)
        result.chunks_written = dr.chunks_written
        result.bytes_written = dr.bytes_stored
        if not commit_generation(self.plan, ds, gen, self.store, self.state, key):
            raise StateError(f"dataset {ds.name}: compaction {gen} has shards left unfinished")

    def _base_delta(
        self, ds: DatasetPlan, gen: int, shard: int, chain: list[ShardManifest]
    ) -> ShardDelta:
        """A base holding exactly what the chain holds: same digest, same inventory."""
        inventory = self.state.shard_inventory(ds.name, shard, gen)
        if inventory is None:
            raise StateError(
                f"dataset {ds.name} shard {shard}: the state store has no inventory to carry"
                " into the compacted base; rebuild the state first"
            )
        digest = from_hex(chain[-1].digest)
        live = sum(m.record_count - m.removed_records for m in chain)
        return ShardDelta(0, None, (), 0, 0, digest, digest, live, inventory)

    def _live_spool(
        self,
        ds: DatasetPlan,
        gen: int,
        chain: list[ShardManifest],
        keyring: Keyring,
        pool: ThreadPoolExecutor,
    ) -> Path:
        """The shard's live records in one spool (built once: a resumed compaction re-cuts the
        same chunks from it)."""
        folder = spool_dir(self.plan.state_dir, ds.name, gen)
        path = spool_path(folder, chain[-1].shard)
        if path.exists():
            return path
        folder.mkdir(parents=True, exist_ok=True)
        keys = RecordKeys(ds, chain) if any(superseded(chain)) else None

        def read(manifest: ShardManifest, refs: list[ChunkRef]) -> Iterator[bytes]:
            return ordered_map(
                pool, lambda ref: read_chunk(self.store, manifest, ref, keyring), refs, self.workers
            )

        tmp = path.with_name(path.name + ".tmp")
        with open_private(tmp, "wb") as fh:
            for block in live_record_blocks(chain, read, keys):
                fh.write(block)
        tmp.replace(path)
        return path

    def _objects(
        self,
        scope: WriteScope,
        shard: int,
        chain: list[ShardManifest],
        keyring: Keyring,
        writer: ShardWriter,
    ) -> None:
        """Every live part, decrypted from its old generation and sealed under the new one,
        named by its tag under the key that seals it (the old one's may differ)."""
        ds, gen, dr = scope.ds, scope.generation, scope.report
        new_tag = object_tagger(scope.key)
        # What an interrupted fold of this shard already committed: one query, not one a part.
        done = {c.object_key for c in self.state.shard_chunks(ds.name, gen, shard)}
        for manifest, gone in zip(chain, superseded(chain), strict=True):
            for ref in live_parts(manifest, gone):
                if ref.name is None or ref.name_tag is None:
                    raise TamperedError(
                        "objects manifest lists a part without its name",
                        object_key=manifest_key(ds.name, manifest.generation, manifest.shard),
                    )
                tag = new_tag(ref.name)
                okey = object_part_key(ds.name, gen, shard, tag, ref.sequence)
                if okey in done:
                    dr.chunks_skipped += 1
                    continue
                ident = ChunkIdentity(
                    ChunkKind.OBJECT_PART, self.plan.name, ds.name, gen, shard, ref.sequence, tag
                )
                job = ChunkJob(ident, okey, b"", 0, ref.name, 0, ref.version or "")
                job.load = functools.partial(read_chunk, self.store, manifest, ref, keyring)
                job.size = ref.plain_size
                writer.submit(job)
                writer.take_finished()

    # --- removing what the new bases replaced ------------------------------------------

    def _swept(
        self, ds: DatasetPlan, shard: int, gens: list[int], doomed: list[tuple[int, ObjectInfo]]
    ) -> list[LedgerItem]:
        """What the ledger records of the data objects a sweep deletes: each committed chunk
        of those generations (gone already if an earlier sweep was cut short), and any other
        object found under them but a manifest."""
        known = {
            c.object_key: LedgerItem.of(c)
            for g in gens
            for c in self.state.shard_chunks(ds.name, g, shard)
        }
        for g, info in doomed:
            # a manifest is not a data object: the ledger does not record manifests
            if info.key not in known and not info.key.endswith(f"/{MANIFEST_NAME}"):
                data = read_stored(self.store, info.key)
                known[info.key] = LedgerItem(
                    info.key, g, shard, len(data), xxhash.xxh3_128_hexdigest(data)
                )
        return list(known.values())

    def _sweep(self, ds: DatasetPlan, key: DataKey, result: DatasetCompaction) -> None:
        """Once the newest bases read back intact: delete the generations before them, and
        the generation records before the newest compaction (they name deleted manifests)."""
        garbage: dict[int, list[int]] = {}
        for shard in range(ds.shards):
            heads = self.state.shard_heads(ds.name, shard)
            bases = [h.generation for h in heads if h.base]
            if bases:
                old = [h.generation for h in heads if h.generation < bases[-1]]
                if old:
                    garbage[shard] = old
        if garbage:
            report = Verifier(
                self.plan, self.store, self.provider, self.state, workers=self.workers
            ).verify({ds.name}, set(garbage))
            if not report.ok:
                first = report.problems[0]
                raise CompactionError(
                    f"dataset {ds.name}: the compacted shards do not verify"
                    f" ({len(report.problems)} problems, first: {first.object_key}:"
                    f" {first.message}); the old generations are kept"
                )
            for shard, gens in sorted(garbage.items()):
                doomed = [
                    (g, info)
                    for g in gens
                    for info in list_shard_objects(self.store, ds.name, g, shard)
                ]
                # The ledger records the deletion first; it commits with the forgetting.
                moves = self.ledgers[ds.name].deletes(
                    self._swept(ds, shard, gens, doomed), EntryReason.COMPACTION
                )
                result.objects_deleted += delete_objects(self.store, (i.key for _, i in doomed))
                self.state.forget_shard_generations(ds.name, shard, gens, ledger=moves)
        committed = [
            g.generation
            for g in self.state.generations(ds.name)
            if g.kind is GenerationKind.COMPACT and g.committed
        ]
        if committed:
            newest = committed[-1]
            for g in record_generations(self.store, ds.name):
                if g < newest:
                    delete_record(self.store, ds.name, g)
                    result.records_deleted += 1
