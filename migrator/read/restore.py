"""`migrator restore`: rebuild a dataset from the destination alone (manifests + keyring)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from itertools import groupby
from pathlib import Path

from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import UsageError
from migrator.keys.keyring import Keyring, load_keyring
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.read.chain import (
    RecordKeys,
    chain_framing,
    chain_layout,
    csv_header_of,
    head_chain,
    live_parts,
    live_record_blocks,
    superseded,
)
from migrator.read.freshness import find_rollbacks
from migrator.read.head_file import ExportedHead
from migrator.read.readback import ordered_map
from migrator.read.restore_files import RestoreFolder
from migrator.records.framing import RecordFraming
from migrator.repository.chunks import read_chunk
from migrator.repository.generations import latest_record
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore

_ROLLBACK_HINT = (
    "; nothing was restored. To restore the destination as it now is anyway, pass"
    " --allow-rollback; for an older generation, --generation N"
)


@dataclass
class RestoreReport:
    dataset: str
    files: int = 0
    records: int = 0
    bytes: int = 0
    generation: int = 0  # the generation record restored: the source as of that run or sync
    rollbacks: list[str] = field(default_factory=list)  # allowed by allow_rollback, still said


@dataclass(eq=False)
class Restorer:
    """state, expected: what knows which generations were committed (the state store, a head
    an auditor exported); a destination older than either is refused (RollbackError) unless
    allow_rollback."""

    plan: Plan
    store: ObjectStore
    provider: KeyProvider
    _: KW_ONLY
    workers: int = 4
    state: StateDB | None = None
    expected: ExportedHead | None = None
    allow_rollback: bool = False

    def restore(self, dataset: str, out: Path, generation: int | None = None) -> RestoreReport:
        """The dataset as of its latest committed generation (or `generation`, or the last one
        before it): each shard's base, then its deltas in order."""
        ds = next((d for d in self.plan.datasets if d.name == dataset), None)
        if ds is None:
            names = ", ".join(d.name for d in self.plan.datasets)
            raise UsageError(f"no dataset {dataset!r} in the plan (it has: {names})")
        key = load_keyring(self.store, self.provider, self.plan.name, ds.name)
        rollbacks = find_rollbacks(
            self.store, ds.name, state=self.state, head=self.expected, at_most=generation
        )
        if rollbacks and not self.allow_rollback:
            raise rollbacks[0].error(_ROLLBACK_HINT)
        record = latest_record(self.store, self.plan.name, ds.name, key, generation)
        if record is None:
            when = "" if generation is None else f" at or before generation {generation}"
            raise UsageError(
                f"dataset {ds.name} has no committed generation at the destination{when}"
                " (its first run has not finished every shard)"
            )
        if len(record.shards) != ds.shards:
            raise UsageError(
                f"dataset {ds.name}: generation {record.generation} has {len(record.shards)}"
                f" shards, the plan says {ds.shards}"
            )
        report = RestoreReport(ds.name, generation=record.generation)
        report.rollbacks = [r.message for r in rollbacks]
        with (
            RestoreFolder(out, ds.name) as folder,
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="restore") as pool,
        ):
            into = _DatasetRestore(self.store, key, pool, self.workers * 2, folder, report)
            for head in record.shards:
                chain = head_chain(self.store, self.plan.name, ds.name, head, key)
                manifests = [link.manifest for link in chain]
                if ds.kind is DatasetKind.RECORDS:
                    into.records(ds, manifests)
                else:
                    into.objects(manifests)
        folder.finish()  # fewer objects written than the manifests list: named, never exit 0
        return report


@dataclass(eq=False)
class _DatasetRestore:
    """One dataset's restore under way: its chunks read with `key` on `pool`, `window` at once,
    written into `folder` and counted in `report`."""

    store: ObjectStore
    key: Keyring
    pool: ThreadPoolExecutor
    window: int
    folder: RestoreFolder
    report: RestoreReport

    def chunks(self, manifest: ShardManifest, refs: list[ChunkRef]) -> Iterator[bytes]:
        def read(ref: ChunkRef) -> bytes:
            return read_chunk(self.store, manifest, ref, self.key)

        return ordered_map(self.pool, read, refs, self.window)

    def records(self, ds: DatasetPlan, chain: list[ShardManifest]) -> None:
        # framed and keyed as the manifests record it (the plan's word only for old ones)
        ext = chain_layout(ds, chain).format
        target = f"shard-{chain[-1].shard:05d}.{ext}"
        header = csv_header_of(chain)
        keys = RecordKeys(ds, chain) if any(superseded(chain)) else None
        with self.folder.whole_file(target) as fh:
            blocks = live_record_blocks(chain, self.chunks, keys)
            held = [] if header is None else _until_a_record(blocks)
            if header is not None:
                ending = _line_end_of_first(held[-1:], chain_framing(ds, chain))
                fh.write(header.encode("utf-8", "surrogateescape") + ending)
            for block in _chained(held, blocks):
                fh.write(block)
                self.report.bytes += len(block)
        self.report.files += 1
        self.report.records += live_records_of(chain)

    def objects(self, chain: list[ShardManifest]) -> None:
        for manifest, gone in zip(chain, superseded(chain), strict=True):
            refs = sorted(live_parts(manifest, gone), key=lambda r: (r.name or "", r.sequence))
            self._write_objects(manifest, refs)

    def _write_objects(self, manifest: ShardManifest, refs: list[ChunkRef]) -> None:
        """Each object whole at its name; one the folder cannot hold is named, its parts unread."""
        wanted: list[ChunkRef] = []
        for name, parts in groupby(refs, key=_name):
            if self.folder.accepts(name):
                wanted.extend(parts)
        pieces = zip(wanted, self.chunks(manifest, wanted), strict=True)
        for name, group in groupby(pieces, key=lambda piece: _name(piece[0])):
            size = self.folder.write_object(name, (data for _, data in group))
            if size is not None:
                self.report.files += 1
                self.report.bytes += size


def _chained(held: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from held
    yield from rest


def _until_a_record(blocks: Iterator[bytes]) -> list[bytes]:
    """The blocks up to the first that holds a record (all of them if none does)."""
    held: list[bytes] = []
    for block in blocks:
        held.append(block)
        if block:
            break
    return held


def _line_end_of_first(held: list[bytes], framing: RecordFraming) -> bytes:
    """The CSV header row's line end as restored: that of the shard's first record (CRLF when
    it keeps a CR before its LF), so a CRLF file comes back CRLF (FORMAT.md §1.4)."""
    first = held[0] if held else b""
    end = framing.first_end(first, True)
    return b"\r\n" if end >= 2 and first[end - 2 : end] == b"\r\n" else b"\n"


def live_records_of(chain: list[ShardManifest]) -> int:
    return sum(m.record_count - m.removed_records for m in chain)


def _name(ref: ChunkRef) -> str:
    """An object part's name; never None in a manifest that opened (FORMAT.md §5.2)."""
    return ref.name or ""
