"""`migrator restore`: rebuild a dataset from the destination alone (manifests + keyring)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.engine.chain import (
    RecordKeys,
    csv_header_of,
    head_chain,
    latest_record,
    live_parts,
    live_record_blocks,
    superseded,
)
from migrator.engine.readback import ordered_map, read_chunk
from migrator.errors import TamperedError, UsageError
from migrator.keys.keyring import Keyring, load_keyring
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetPlan, Plan
from migrator.stores.base import ObjectStore


@dataclass
class RestoreReport:
    dataset: str
    files: int = 0
    records: int = 0
    bytes: int = 0
    generation: int = 0  # the generation record restored: the source as of that run or sync


class Restorer:
    def __init__(
        self, plan: Plan, store: ObjectStore, provider: KeyProvider, *, workers: int = 4
    ) -> None:
        self.plan = plan
        self.store = store
        self.provider = provider
        self.workers = workers

    def restore(self, dataset: str, out: Path, generation: int | None = None) -> RestoreReport:
        """The dataset as of its latest committed generation (or `generation`, or the last one
        before it): each shard's base, then its deltas in order."""
        ds = next((d for d in self.plan.datasets if d.name == dataset), None)
        if ds is None:
            names = ", ".join(d.name for d in self.plan.datasets)
            raise UsageError(f"no dataset {dataset!r} in the plan (it has: {names})")
        key = load_keyring(self.store, self.provider, self.plan.name, ds.name)
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
        out.mkdir(parents=True, exist_ok=True)
        report = RestoreReport(ds.name, generation=record.generation)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="restore") as pool:
            for head in record.shards:
                chain = head_chain(self.store, self.plan.name, ds.name, head, key)
                manifests = [link.manifest for link in chain]
                if ds.kind == "records":
                    self._restore_records(ds, manifests, key, out, pool, report)
                else:
                    self._restore_objects(manifests, key, out, pool, report)
        return report

    def _chunks(
        self, manifest: ShardManifest, refs: list[ChunkRef], key: Keyring, pool: ThreadPoolExecutor
    ) -> Iterator[bytes]:
        return ordered_map(
            pool, lambda ref: read_chunk(self.store, manifest, ref, key), refs, self.workers * 2
        )

    def _restore_records(
        self,
        ds: DatasetPlan,
        chain: list[ShardManifest],
        key: Keyring,
        out: Path,
        pool: ThreadPoolExecutor,
        report: RestoreReport,
    ) -> None:
        ext = "csv" if ds.format == "csv" else "jsonl"
        target = out / f"shard-{chain[-1].shard:05d}.{ext}"
        header = csv_header_of(chain)
        keys = RecordKeys(ds, header) if any(superseded(chain)) else None
        with _AtomicFile(target) as fh:
            if header is not None:
                fh.write(header.encode("utf-8", "surrogateescape") + b"\n")
            for block in live_record_blocks(
                chain, lambda m, refs: self._chunks(m, refs, key, pool), keys
            ):
                fh.write(block)
                report.bytes += len(block)
        report.files += 1
        report.records += live_records_of(chain)

    def _restore_objects(
        self,
        chain: list[ShardManifest],
        key: Keyring,
        out: Path,
        pool: ThreadPoolExecutor,
        report: RestoreReport,
    ) -> None:
        for manifest, gone in zip(chain, superseded(chain), strict=True):
            refs = sorted(live_parts(manifest, gone), key=lambda r: (r.name or "", r.sequence))
            self._write_objects(manifest, refs, key, out, pool, report)

    def _write_objects(
        self,
        manifest: ShardManifest,
        refs: list[ChunkRef],
        key: Keyring,
        out: Path,
        pool: ThreadPoolExecutor,
        report: RestoreReport,
    ) -> None:
        current: _AtomicFile | None = None
        current_name: str | None = None
        try:
            for ref, data in zip(refs, self._chunks(manifest, refs, key, pool), strict=True):
                if ref.name != current_name:
                    if current is not None:
                        current.commit()
                        report.files += 1
                    current_name = ref.name
                    current = _AtomicFile(out / _safe_relative(ref))
                    current.open()
                assert current is not None
                current.write(data)
                report.bytes += len(data)
            if current is not None:
                current.commit()
                report.files += 1
                current = None
        finally:
            if current is not None:
                current.discard()


def live_records_of(chain: list[ShardManifest]) -> int:
    return sum(m.record_count - m.removed_records for m in chain)


def _safe_relative(ref: ChunkRef) -> Path:
    """The manifest is authenticated, but a restore must never write outside its folder."""
    name = ref.name or ""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise TamperedError(f"unsafe object name {name!r} in manifest", object_key=ref.object_key)
    return Path(*rel.parts)


class _AtomicFile:
    """Write to a temp file beside the target, rename into place on success."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = target.with_name(f".{target.name}.restoring")
        self._fh: BinaryIO | None = None

    def open(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.tmp.open("wb")

    def write(self, data: bytes) -> None:
        assert self._fh is not None
        self._fh.write(data)

    def commit(self) -> None:
        assert self._fh is not None
        self._fh.close()
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> _AtomicFile:
        self.open()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
