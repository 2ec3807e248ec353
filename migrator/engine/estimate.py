"""`migrator plan` estimates: chunks and bytes from file sizes alone, never reading data."""

from __future__ import annotations

from dataclasses import dataclass

from migrator.forecast import records_chunks
from migrator.plan.model import Plan
from migrator.sources.factory import open_source

# Typical zstd ratios measured on this kind of data (records: JSON/CSV; objects: video).
RECORDS_RATIO = 4.0
OBJECTS_RATIO = 1.0


@dataclass(frozen=True, slots=True)
class DatasetEstimate:
    dataset: str
    kind: str
    shards: int
    files: int
    bytes: int
    chunks: int
    stored_bytes: int


def estimate_plan(plan: Plan) -> list[DatasetEstimate]:
    out = []
    for ds in plan.datasets:
        files = total = chunks = 0
        part = ds.part_size or plan.chunk_size
        for f in open_source(ds).list():
            files += 1
            total += f.size
            if ds.kind == "objects":
                chunks += max(1, -(-f.size // part))
        if ds.kind == "records":
            chunks = records_chunks(total, ds.shards, plan.chunk_size) if total else 0
            stored = int(total / RECORDS_RATIO)
        else:
            stored = int(total / OBJECTS_RATIO)
        out.append(DatasetEstimate(ds.name, ds.kind, ds.shards, files, total, chunks, stored))
    return out
