"""`migrator state rebuild`: a lost state store rebuilt from the destination alone.

The state store is an index of the destination, never the only truth: generation records,
manifest chains and the chunks themselves hold everything a next sync needs. Objects'
inventories come from manifests; records' inventories (key hash and digest of every live
record) need the records themselves, so every live records chunk is read back once.
"""

from __future__ import annotations

import functools
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import xxhash

from migrator.codec.digests import (
    DIGEST_ENTRY,
    ObjectsMap,
    pack_objects_map,
    pack_records_inventory,
)
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import StateError
from migrator.keys.keyring import Keyring, ledger_trust, load_keyring
from migrator.plan.kinds import DatasetKind
from migrator.plan.model import DatasetPlan
from migrator.read.chain import (
    RecordKeys,
    csv_header_of,
    head_chain,
    listed_objects,
    superseded,
)
from migrator.read.readback import ordered_map
from migrator.records.framing import split_stored_records
from migrator.repository.chunks import read_chunk
from migrator.repository.generations import load_record, record_generations
from migrator.repository.segments import ledger_ends, list_segments
from migrator.state.model import CommittedChunk, RouteCheckpoint
from migrator.stores.base import ObjectStore
from migrator.write.stage import PlanStage


@dataclass
class RebuildReport:
    dataset: str
    generations: list[int] = field(default_factory=list)
    shards: int = 0
    chunks: int = 0
    records_read: int = 0  # live records read back for the records inventories
    ledgers: int = 0  # shards whose audit ledger head was restored


class StateRebuilder(PlanStage):
    def rebuild(self) -> list[RebuildReport]:
        reports = []
        for ds in self.plan.datasets:
            if self.state.generations(ds.name):
                raise StateError(
                    f"{self.state.path}: the state store already knows dataset {ds.name};"
                    " rebuild into an empty state directory"
                )
            reports.append(self._dataset(ds))
        return reports

    def _dataset(self, ds: DatasetPlan) -> RebuildReport:
        report = RebuildReport(ds.name)
        gens = record_generations(self.store, ds.name)
        segments, _ = list_segments(self.store, ds.name)
        if not gens and not segments:
            return report  # nothing stored: the next run starts the bulk afresh
        key = load_keyring(self.store, self.provider, self.plan.name, ds.name)
        self.state.bind_dataset_key(ds.name, key.first)  # the rows it writes are sealed
        # Each shard's audit ledger goes on from where it ends, committed or not: never anew.
        trust = ledger_trust(key, self.provider)
        for end in ledger_ends(self.store, self.plan.name, ds.name, segments, trust):
            self.state.set_ledger_head(end)
            report.ledgers += 1
        if not gens:
            return report  # nothing committed: the next run starts the bulk afresh
        records = [load_record(self.store, self.plan.name, ds.name, g, key) for g in gens]
        latest, _ = records[-1]
        for record, record_xxh3 in records:
            self.state.open_generation(ds.name, record.generation, record.kind)
            report.generations.append(record.generation)
            self.state.commit_generation(
                ds.name,
                record.generation,
                started_at=datetime.fromisoformat(record.started_at).timestamp(),
                finished_at=datetime.fromisoformat(record.finished_at).timestamp(),
                changed_records=record.changed_records,
                changed_bytes=record.changed_bytes,
                record_xxh3=record_xxh3,
            )
        header: str | None = None
        with ThreadPoolExecutor(self.workers, thread_name_prefix="rebuild") as pool:
            for head in latest.shards:
                links = head_chain(self.store, self.plan.name, ds.name, head, key)
                chain = [link.manifest for link in links]
                header = header or csv_header_of(chain)
                for link in links:
                    self._chunks(link.manifest, report)
                inventory = (
                    self._records_inventory(ds, chain, key, pool, report)
                    if ds.kind is DatasetKind.RECORDS
                    else _objects_inventory(chain)
                )
                for link in links:
                    m = link.manifest
                    self.state.complete_shard(
                        ds.name,
                        m.generation,
                        m.shard,
                        manifest_key=link.object_key,
                        manifest_xxh3=link.stored_xxh3,
                        base=m.is_base,
                        inventory=inventory if link is links[-1] else None,
                        live_records=_live_until(chain, m.generation),
                        digest=m.digest,
                        removed_records=m.removed_records,
                    )
                # Every later generation left this shard untouched.
                for gen in report.generations:
                    if gen not in head.chain and gen > head.chain[0]:
                        self.state.complete_shard(ds.name, gen, head.shard, manifest_key=None)
                report.shards += 1
        # The CSV header the next sync must keep (see RecordsSpec.csv_header).
        if header is not None:
            self.state.save_route_checkpoint(
                ds.name,
                latest.generation,
                RouteCheckpoint(
                    0, "", (0,) * ds.shards, header.encode("utf-8", "surrogateescape"), True
                ),
            )
        return report

    def _chunks(self, manifest: ShardManifest, report: RebuildReport) -> None:
        rows = chunk_rows(manifest)
        self.state.commit_chunks(rows)
        report.chunks += len(rows)

    def _records_inventory(
        self,
        ds: DatasetPlan,
        chain: list[ShardManifest],
        key: Keyring,
        pool: ThreadPoolExecutor,
        report: RebuildReport,
    ) -> bytes:
        """The digest spool of the shard's live records, as routing would have written it."""
        keys = RecordKeys(ds, chain)
        entries = bytearray()
        for manifest, gone_hex in zip(chain, superseded(chain), strict=True):
            gone = {bytes.fromhex(kh) for kh in gone_hex}  # key hashes, as the records hash
            refs = sorted(manifest.chunks, key=lambda r: r.sequence)
            read = functools.partial(_read, self.store, manifest, key=key)
            chunks = ordered_map(pool, read, refs, self.workers)
            for ref, data in zip(refs, chunks, strict=True):
                for record in split_stored_records(data, keys.framing, ref.records):
                    if not record.strip():
                        continue
                    kh = keys.hash(record)
                    if kh in gone:
                        continue
                    entries += DIGEST_ENTRY.pack(
                        kh, xxhash.xxh3_128_digest(record), len(record) + 1
                    )
                    report.records_read += 1
        return pack_records_inventory(bytes(entries))


def chunk_rows(manifest: ShardManifest) -> list[CommittedChunk]:
    """The state store's rows of the manifest's chunks, as its entries give them (a records
    chunk's end is its offset in the shard's routed records)."""
    ends = itertools.accumulate(ref.plain_size for ref in manifest.chunks)
    return [
        CommittedChunk(
            manifest.dataset,
            manifest.generation,
            manifest.shard,
            ref.object_key,
            ref.sequence,
            ref.name,
            ref.records,
            ref.plain_size,
            ref.stored_size,
            ref.plain_xxh3,
            ref.stored_xxh3,
            end if ref.name is None else 0,
            ref.version or "",
        )
        for ref, end in zip(manifest.chunks, ends, strict=True)
    ]


def _read(store: ObjectStore, manifest: ShardManifest, ref: ChunkRef, *, key: Keyring) -> bytes:
    return read_chunk(store, manifest, ref, key)


def _objects_inventory(chain: list[ShardManifest]) -> bytes:
    live: ObjectsMap = {}
    for manifest in chain:  # a later generation removes, then (re)writes
        for name in manifest.removed:
            live.pop(name, None)
        live.update(listed_objects(manifest.chunks))
    return pack_objects_map(live)


def _live_until(chain: list[ShardManifest], generation: int) -> int:
    return sum(m.record_count - m.removed_records for m in chain if m.generation <= generation)
