"""The head an auditor exports (`migrator audit --export-head FILE`) and later holds the
destination to (`--expect-head FILE`): per dataset, the newest committed generation, the SHA-256
of its stored generation record, and where each shard's audit ledger ends.

Everything at the destination can be put back to an older, consistent state by whoever can
delete there; only something kept elsewhere remembers that a newer state existed. The file is
not signed, so it is worth what its custody is worth: keep it where the destination's writers
cannot change it (the auditor's own storage, a ticket, a write-once bucket of another account).
SHA-256 of the stored bytes, not a keyed digest: an auditor holding no key can compare it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from migrator.errors import MissingObjectError
from migrator.plan.model import Plan
from migrator.read.exported_file import exported_bytes, file_error, read_exported
from migrator.repository.generations import get_record_bytes, record_generations
from migrator.repository.names import generation_key
from migrator.stores.base import ObjectStore

HEAD_FORMAT = "migrator/head"
HEAD_VERSION = 1
_U32 = 2**32 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class LedgerMark:
    """Where a shard's audit ledger ended: its last segment, its entries, its chain value."""

    segment: int
    entries: int
    link: str


@dataclass(frozen=True, slots=True)
class DatasetHead:
    generation: int  # the newest committed generation; 0: none was committed yet
    record_sha256: str | None  # SHA-256 (hex) of that generation record's stored bytes
    ledger: Mapping[int, LedgerMark]  # by shard; shards without a ledger are absent

    @property
    def committed(self) -> tuple[int, str] | None:
        """(the newest committed generation, the SHA-256 of its record), or None when none
        was committed (read_head_file leaves record_sha256 null only then)."""
        if self.generation == 0 or self.record_sha256 is None:
            return None
        return self.generation, self.record_sha256


@dataclass(frozen=True, slots=True)
class ExportedHead:
    name: str  # how messages name the file: the path as given
    plan: str
    datasets: Mapping[str, DatasetHead]

    @property
    def source(self) -> str:
        """The phrase messages name it by: '... committed in the exported head FILE'."""
        return f"the exported head {self.name}"


def newest_record(store: ObjectStore, dataset: str) -> tuple[int, bytes | None]:
    """The newest generation with a record at the destination and the record's stored bytes
    (0 and None before the first generation is committed)."""
    gens = record_generations(store, dataset)
    if not gens:
        return 0, None
    try:
        return gens[-1], get_record_bytes(store, dataset, gens[-1])
    except MissingObjectError:  # deleted between the listing and the read: look again
        return newest_record(store, dataset)


def dataset_head(store: ObjectStore, dataset: str, ledger: Mapping[int, LedgerMark]) -> DatasetHead:
    generation, data = newest_record(store, dataset)
    digest = None if data is None else hashlib.sha256(data).hexdigest()
    return DatasetHead(generation, digest, dict(ledger))


def head_document(plan: str, destination: str, heads: Mapping[str, DatasetHead]) -> bytes:
    """What `--export-head` writes: public values only (generation numbers, digests of
    ciphertext, ledger chain values), nothing that decrypts or signs."""
    datasets: dict[str, Any] = {}
    for name, head in sorted(heads.items()):
        datasets[name] = {
            "generation": head.generation,
            "record": generation_key(name, head.generation) if head.generation else None,
            "record_sha256": head.record_sha256,
            "ledger": {
                str(shard): {"segment": m.segment, "entries": m.entries, "link": m.link}
                for shard, m in sorted(head.ledger.items())
            },
        }
    exported_at = datetime.now(UTC).isoformat(timespec="seconds")
    return exported_bytes(
        HEAD_FORMAT,
        HEAD_VERSION,
        {
            "plan": plan,
            "destination": destination,
            "exported_at": exported_at,
            "datasets": datasets,
        },
    )


def read_head_file(path: Path, plan: Plan) -> ExportedHead:
    """The heads in an exported file, by dataset; a UsageError names the file and the field."""
    bad = functools.partial(file_error, path)
    doc = read_exported(path, "head file", HEAD_FORMAT)
    if doc.get("version") != HEAD_VERSION:
        raise bad(f"head file version {doc.get('version')!r} is not supported")
    if doc.get("plan") != plan.name:
        raise bad(f"holds the head of plan {doc.get('plan')!r}, not {plan.name!r}")
    datasets = doc.get("datasets")
    if not isinstance(datasets, dict):
        raise bad("datasets is not an object")
    known = {d.name for d in plan.datasets}
    heads: dict[str, DatasetHead] = {}
    for name, entry in datasets.items():
        if name not in known:
            raise bad(f"names dataset {name!r}, which the plan does not have")
        if not isinstance(entry, dict):
            raise bad(f"datasets.{name} is not an object")
        try:
            heads[name] = _dataset_head(entry, name)
        except ValueError as exc:
            raise bad(f"datasets.{name}.{exc}") from None
    return ExportedHead(str(path), plan.name, heads)


def _dataset_head(entry: Mapping[str, Any], name: str) -> DatasetHead:
    """Raises ValueError('FIELD is ...') for the first field that is wrong."""
    generation = _count(entry, "generation", _U32)
    digest = entry.get("record_sha256")
    if generation == 0:
        if digest is not None:
            raise ValueError("record_sha256 must be null when generation is 0")
    elif not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ValueError("record_sha256 is not 64 lowercase hex digits")
    record = entry.get("record")
    if record is not None and record != generation_key(name, generation):
        raise ValueError(f"record is not the key of generation {generation}")
    ledger = entry.get("ledger", {})
    if not isinstance(ledger, dict):
        raise ValueError("ledger is not an object")
    marks: dict[int, LedgerMark] = {}
    for shard, mark in ledger.items():
        if not (isinstance(shard, str) and shard.isdigit() and isinstance(mark, dict)):
            raise ValueError(f"ledger.{shard} is not a shard's ledger head")
        link = mark.get("link")
        if not isinstance(link, str) or not _HEX64.fullmatch(link):
            raise ValueError(f"ledger.{shard}.link is not 64 lowercase hex digits")
        marks[int(shard)] = LedgerMark(
            _count(mark, "segment", None, f"ledger.{shard}."),
            _count(mark, "entries", None, f"ledger.{shard}."),
            link,
        )
    return DatasetHead(generation, digest, marks)


def _count(obj: Mapping[str, Any], field: str, top: int | None, where: str = "") -> int:
    value = obj.get(field)
    if type(value) is not int or value < 0 or (top is not None and value > top):
        raise ValueError(f"{where}{field} is not a non-negative integer")
    return value
