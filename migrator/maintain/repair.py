"""`migrator repair`: re-send damaged or missing chunks from the source (docs/REPAIR.md).

Each chosen shard of the dataset's newest generation is read back whole (the checks verify
makes). A chunk that fails is rebuilt from the source, compared with the plain digest its
manifest pins, and sealed again under the same identity (same object key, same data key) with a
fresh salt. Its new stored bytes change its manifest, the chain after it and the generation
records (repair_chain.py); all of it is journaled before the first put (repair_journal.py), then
stored, the audit ledger told (an `add` over the broken one), and the state store's digests
moved. A chunk the source cannot give back as it was is refused with the reason, and stays as
it was. The shard's lease and the dataset's generation lock keep runs and syncs out meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.generation import ShardHead
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import FormatError, StateError, UsageError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, key_for, load_keyring
from migrator.maintain.rebuild import chunk_rows
from migrator.maintain.repair_chain import reseal
from migrator.maintain.repair_journal import (
    Journal,
    JournaledChunk,
    JournaledObject,
    clear_journal,
    journal_dir,
    read_journal,
    write_journal,
)
from migrator.maintain.repair_lines import (
    Damaged,
    Refusal,
    RepairedChunk,
    RepairReport,
    manifest_refusal,
)
from migrator.maintain.repair_rebuild import NeedsOther, ShardRebuilder
from migrator.maintain.repair_source import (
    Unrepairable,
)
from migrator.plan.model import DatasetPlan
from migrator.read.chain import head_chain
from migrator.read.cutover_integrity import failed_checks
from migrator.read.freshness import find_rollbacks
from migrator.read.readback import ordered_map
from migrator.repository.chunks import chunk_identity, read_chunk
from migrator.repository.generations import latest_record
from migrator.repository.manifests import StoredManifest
from migrator.repository.sealed import put_sealed
from migrator.repository.shard_objects import put_chunk, read_stored
from migrator.state.leases import LeaseKeeper
from migrator.state.model import CommittedChunk
from migrator.write.stage import WriteStage

if TYPE_CHECKING:
    from migrator import Connection

__all__ = ["Refusal", "RepairReport", "RepairedChunk", "Repairer", "repair"]


class Repairer(WriteStage):
    """Repairs one dataset's shards under its generation lock, each under its lease."""

    def repair(
        self, dataset: str, shards: Iterable[int] | None = None, *, dry_run: bool = False
    ) -> RepairReport:
        ds = next((d for d in self.plan.datasets if d.name == dataset), None)
        if ds is None:
            raise UsageError(f"the plan has no dataset {dataset!r}")
        chosen = sorted(set(range(ds.shards) if shards is None else shards))
        if bad := [s for s in chosen if not 0 <= s < ds.shards]:
            raise UsageError(f"dataset {ds.name} has shards 0-{ds.shards - 1}, not {bad[0]}")
        report = RepairReport(ds.name, dry_run)
        keyring = load_keyring(self.store, self.provider, self.plan.name, ds.name)
        self.state.bind_dataset_key(ds.name, keyring.first)
        with self.state.lock(f"{ds.name}.generation"):
            latest = self.state.latest_generation(ds.name)
            if latest is None:
                raise UsageError(f"dataset {ds.name} has not been migrated yet: nothing to repair")
            if not latest.committed:
                still_open = (
                    f"generation {latest.generation} ({latest.kind}) is still open: finish it"
                    " (`migrator run`, or `migrator compact` for a compaction), then repair"
                )
                report.refused.append(Refusal(None, None, still_open))
                return report
            if not dry_run:
                self._resume(ds, keyring, latest.generation, report)
            for rollback in find_rollbacks(self.store, ds.name, state=self.state, head=None):
                older = (
                    f"{rollback.message}; repair rewrites nothing over a destination older than"
                    " the state store: run `migrator audit` and see docs/REPAIR.md"
                )
                report.refused.append(Refusal(None, rollback.object_key, older))
            record = latest_record(self.store, self.plan.name, ds.name, keyring)
            if report.refused or record is None:
                return report
            with self._leases() as keeper:
                for shard in chosen:
                    if not keeper.claim(ds.name, shard):
                        holder = self.state.lease_holders(ds.name).get(shard, ("?", 0.0))[0]
                        held = f"another worker ({holder}) holds the shard's lease: rerun later"
                        report.refused.append(Refusal(shard, None, held))
                        continue
                    try:
                        self._shard(ds, keyring, record.shards[shard], latest.generation, report)
                    finally:
                        keeper.release(ds.name, [shard])
        return report

    @contextlib.contextmanager
    def _leases(self) -> Iterator[LeaseKeeper]:
        """A lease keeper that every store write of the block is checked against."""
        keeper = LeaseKeeper(self.state, self.plan.lease_seconds)
        self.guard.keeper = keeper
        try:
            yield keeper
        finally:
            keeper.close()
            keeper.release_all()
            self.guard.keeper = None

    # --- one shard -----------------------------------------------------------------------

    def _shard(
        self,
        ds: DatasetPlan,
        keyring: Keyring,
        head: ShardHead,
        generation: int,
        report: RepairReport,
    ) -> None:
        shard = head.shard
        report.shards.append(shard)
        try:
            chain = head_chain(self.store, self.plan.name, ds.name, head, keyring)
        except FormatError as exc:
            report.refused.append(manifest_refusal(shard, exc))
            return
        damaged = self._read_back(chain, keyring, report)
        if not damaged:
            return
        kinds = {g.generation: g.kind for g in self.state.generations(ds.name)}
        rebuild = ShardRebuilder(
            self.plan, self.store, ds, keyring, [link.manifest for link in chain], kinds, shard
        )
        encoder = ChunkEncoder(self.plan.compression_level)
        fixed: dict[str, ChunkRef] = {}
        journaled: list[JournaledChunk] = []
        blobs: list[bytes] = []
        done: list[RepairedChunk] = []
        keys: dict[str, DataKey] = {}  # manifest object key -> the key that sealed it
        for d, plain in self._rebuilt(rebuild, damaged, report):
            if (key := keys.get(d.link.object_key)) is None:
                key = keys[d.link.object_key] = self._manifest_key(keyring, d.link)
            encoded = encoder.encode(plain, chunk_identity(d.link.manifest, d.ref), key)
            if encoded.plain_xxh3.hex() != d.ref.plain_xxh3:  # never upload other plaintext
                why = f"the rebuilt plaintext's digest is not the manifest's; {rebuild.hint}"
                report.refused.append(Refusal(shard, d.ref.object_key, why))
                continue
            new_ref = dataclasses.replace(
                d.ref, stored_size=encoded.stored_size, stored_xxh3=encoded.stored_xxh3.hex()
            )
            fixed[d.ref.object_key] = new_ref
            row = self._row(d.link.manifest, new_ref)
            meta = {
                "migrator-plan": self.plan.name,
                "migrator-format": "1",
                "migrator-key-id": key.key_id.hex(),
                "migrator-stored-xxh3": new_ref.stored_xxh3,
            }
            journaled.append(JournaledChunk(row, key.key_id.hex(), meta))
            blobs.append(bytes(encoded.data))
            gen = d.link.manifest.generation
            done.append(RepairedChunk(shard, gen, d.ref.object_key, d.problem))
        if not fixed:
            return
        if report.dry_run:
            report.repaired.extend(done)
            return
        try:
            resealed = reseal(self.store, keyring, encoder, chain, fixed)
        except Unrepairable as exc:
            for r in done:
                report.refused.append(Refusal(shard, r.object_key, f"{exc}; {rebuild.hint}"))
            return
        journal = Journal(
            ds.name,
            shard,
            generation,
            journaled,
            [JournaledObject(o.object_key, o.kind) for o in resealed.objects],
            resealed.manifests,
            resealed.records,
        )
        folder = journal_dir(self.plan.state_dir, ds.name, shard)
        write_journal(folder, journal, blobs + [o.data for o in resealed.objects])
        loaded = read_journal(folder)
        if loaded is None:
            raise StateError(f"{folder}: the repair journal just written does not read back")
        # Before the first put: runs and compactions of the dataset wait for this repair.
        self.state.mark_repair(ds.name, shard, generation)
        self._apply(keyring, *loaded, folder)
        report.repaired.extend(done)

    def _rebuilt(
        self, rebuild: ShardRebuilder, damaged: list[Damaged], report: RepairReport
    ) -> list[tuple[Damaged, bytes]]:
        """Each damaged chunk's plaintext, or its refusal; a chunk whose rebuilding reads
        another damaged one is tried again once that one is rebuilt."""
        done: list[tuple[Damaged, bytes]] = []
        pending = list(damaged)
        while pending:
            waiting: list[tuple[Damaged, Unrepairable]] = []
            for d in pending:
                try:
                    done.append((d, rebuild.plaintext(d)))
                except NeedsOther as exc:
                    waiting.append((d, exc))
                except Unrepairable as exc:
                    why = f"{exc}; {rebuild.hint}"
                    report.refused.append(Refusal(d.link.manifest.shard, d.ref.object_key, why))
            if len(waiting) == len(pending):
                for d, stuck in waiting:
                    why = f"{stuck}; {rebuild.hint}"
                    report.refused.append(Refusal(d.link.manifest.shard, d.ref.object_key, why))
                break
            pending = [d for d, _ in waiting]
        return done

    def _read_back(
        self, chain: list[StoredManifest], keyring: Keyring, report: RepairReport
    ) -> list[Damaged]:
        """Every chunk the chain lists, read and checked as verify does; the failing ones."""
        items = [(i, link, ref) for i, link in enumerate(chain) for ref in link.manifest.chunks]

        def check(item: tuple[int, StoredManifest, ChunkRef]) -> str | None:
            _, link, ref = item
            try:
                read_chunk(self.store, link.manifest, ref, keyring)
            except FormatError as exc:
                return f"{type(exc).__name__}: {exc}"
            return None

        found = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="repair") as pool:
            for (i, link, ref), problem in zip(
                items, ordered_map(pool, check, items, 4 * self.workers), strict=True
            ):
                report.chunks_checked += 1
                if problem is not None:
                    found.append(Damaged(link, i, ref, problem))
        return found

    def _manifest_key(self, keyring: Keyring, link: StoredManifest) -> DataKey:
        """The key that sealed the manifest seals its chunks (and keys their name tags)."""
        return key_for(keyring, read_stored(self.store, link.object_key), link.object_key)

    def _row(self, manifest: ShardManifest, ref: ChunkRef) -> CommittedChunk:
        """The state store's row of the chunk with its new stored digest (as rebuild makes
        one when the state store has none)."""
        old = self.state.committed_chunk(manifest.dataset, manifest.generation, ref.object_key)
        if old is None:
            old = next(r for r in chunk_rows(manifest) if r.object_key == ref.object_key)
        return dataclasses.replace(old, stored_size=ref.stored_size, stored_xxh3=ref.stored_xxh3)

    # --- storing what the journal holds ------------------------------------------------

    def _resume(
        self, ds: DatasetPlan, keyring: Keyring, generation: int, report: RepairReport
    ) -> None:
        """Finish the repairs a crash cut short, from their journals, before anything else."""
        root = journal_dir(self.plan.state_dir, ds.name, 0).parent
        if not root.is_dir():
            return
        marked = self.state.pending_repairs(ds.name)
        for folder in sorted(root.iterdir()):
            loaded = read_journal(folder)
            if loaded is None:
                continue
            journal, files = loaded
            if journal.generation != generation and journal.shard not in marked:
                clear_journal(folder)  # cut short before its first put: nothing to finish
                continue
            if journal.generation != generation:
                raise UsageError(
                    f"{folder}: a repair of dataset {ds.name} shard {journal.shard} was cut"
                    f" short at generation {journal.generation}, and generation {generation} was"
                    " committed since; its journal no longer applies: remove that folder, then"
                    " run `migrator verify` and repair again"
                )
            with self._leases() as keeper:
                if not keeper.claim(ds.name, journal.shard):
                    raise UsageError(
                        f"dataset {ds.name} shard {journal.shard}: an interrupted repair waits to"
                        " be finished, but another worker holds the shard's lease; rerun later"
                    )
                self._apply(keyring, journal, files, folder)
                report.resumed.append(journal.shard)

    def _apply(self, keyring: Keyring, journal: Journal, paths: list[Path], folder: Path) -> None:
        """Chunks, the ledger and their rows; then manifests and records; then their digests
        in the state store; then the journal goes. Each step may run again after a crash."""
        dataset = journal.dataset
        for jc, path in zip(journal.chunks, paths, strict=False):
            self.guard.check(dataset, jc.row.shard)
            put_chunk(self.store, jc.row.object_key, path.read_bytes(), jc.metadata)
        by_key: dict[str, list[CommittedChunk]] = {}
        for jc in journal.chunks:
            known = self.state.committed_chunk(dataset, jc.row.generation, jc.row.object_key)
            if known is None or known.stored_xxh3 != jc.row.stored_xxh3:  # not yet recorded
                by_key.setdefault(jc.key_id, []).append(jc.row)
        for key_id, rows in by_key.items():
            key = keyring.get(bytes.fromhex(key_id))
            if key is None:
                raise FormatError(f"data key {key_id} is not in dataset {dataset}'s keyring")
            writer = self.open_ledger(dataset, keyring.first, key)
            moves = writer.adds(rows)  # the segment first; the head moves with the rows
            self.state.commit_chunks(rows, fence=self.guard.fence(), ledger=moves)
        for obj, path in zip(journal.objects, paths[len(journal.chunks) :], strict=True):
            put_sealed(self.store, obj.object_key, path.read_bytes(), obj.kind)
        self.state.commit_repaired_digests(dataset, journal.manifests, journal.records)
        clear_journal(folder)
        self.state.clear_repair(dataset, journal.shard)


def repair(
    conn: Connection,
    dataset: str,
    shards: Iterable[int] | None = None,
    *,
    dry_run: bool = False,
    workers: int = 4,
) -> RepairReport:
    """Find and repair the damaged or missing chunks of `dataset` (every shard, or `shards`);
    `dry_run`: find them and rebuild each from the source, store nothing. After a repair the
    repaired shards are read back in full (`migrator.verify`), which records their verdict."""
    import migrator

    if conn.state is None:
        raise UsageError("a repair needs the state store the runs wrote")
    # Shards whose check had failed are read back again even if nothing here was repaired:
    # what repair does not mend (an object the manifest does not list, a truncated manifest)
    # must fail the repair, not pass unseen.
    chosen = None if shards is None else set(shards)
    failed = {s for _, s, _ in failed_checks(conn.state, [dataset])}
    stage = Repairer(conn.plan, conn.store, conn.keys, conn.state, workers=workers)
    report = stage.repair(dataset, shards, dry_run=dry_run)
    touched = {r.shard for r in report.repaired} | set(report.resumed)
    recheck = sorted(touched | {s for s in failed if chosen is None or s in chosen})
    if recheck and not dry_run:
        report.verify = migrator.verify(conn, [dataset], recheck, sample=1.0, workers=workers)
        report.rechecked = recheck
    return report
