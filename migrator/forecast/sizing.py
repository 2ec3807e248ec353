"""`migrator plan` sizes: each dataset's bytes, files and chunks from file sizes alone, never
reading data; `plan --estimate` sizes a cloud source from its `expected_size` instead of listing
it (a petabyte bucket takes hours to list, and the credentials may not be here)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from migrator.errors import PlanError
from migrator.forecast.model import records_chunks
from migrator.plan.model import DatasetKind, DatasetPlan, LocalSourcePlan, Plan
from migrator.sources.factory import open_source

# Typical zstd ratios measured on this kind of data (records: JSON/CSV; objects: video).
RECORDS_RATIO = 4.0
OBJECTS_RATIO = 1.0


@dataclass(frozen=True, slots=True)
class DatasetEstimate:
    dataset: str
    kind: DatasetKind
    shards: int
    files: int | None  # None: not listed, sized from the plan's expected_size
    bytes: int
    chunks: int
    stored_bytes: int
    listed_seconds: float | None = None  # how long the listing took, one thread
    expected_files: int | None = None  # the plan's, when sized from expected_size
    source_kind: str = "local"  # where it is listed from: local, s3, azure


def _dataset_estimate(
    plan: Plan,
    ds: DatasetPlan,
    files: int | None,
    total: int,
    parts: int,
    listed_seconds: float | None = None,
) -> DatasetEstimate:
    if ds.kind is DatasetKind.RECORDS:
        chunks = records_chunks(total, ds.shards, plan.chunk_size) if total else 0
        stored = int(total / RECORDS_RATIO)
    else:
        chunks, stored = parts, int(total / OBJECTS_RATIO)
    return DatasetEstimate(
        ds.name,
        ds.kind,
        ds.shards,
        files,
        total,
        chunks,
        stored,
        listed_seconds,
        ds.expected_files,
        str(ds.source.kind),
    )


def _listed(plan: Plan, ds: DatasetPlan) -> DatasetEstimate:
    files = total = parts = 0
    part = ds.part_size or plan.chunk_size
    started = time.perf_counter()
    for f in open_source(ds).list():
        files += 1
        total += f.size
        parts += max(1, -(-f.size // part))
    seconds = time.perf_counter() - started
    return _dataset_estimate(plan, ds, files, total, parts, seconds)


def estimate_plan(plan: Plan) -> list[DatasetEstimate]:
    """Every dataset listed, wherever its source is."""
    return [_listed(plan, ds) for ds in plan.datasets]


def size_plan(plan: Plan) -> list[DatasetEstimate]:
    """Each dataset from its expected_size, or listed if it is a local folder without one.

    A petabyte bucket takes hours to list and the credentials may not be here: a cloud source
    must state its size. Objects sized so count full parts only, a floor: every file's last
    part is partly full, so a real count is higher by up to one part a file.
    """
    out = []
    for index, ds in enumerate(plan.datasets):
        if ds.expected_size is not None:
            part = ds.part_size or plan.chunk_size
            parts = -(-ds.expected_size // part)
            out.append(_dataset_estimate(plan, ds, None, ds.expected_size, parts))
            continue
        field = f"datasets[{index}].expected_size"
        if not isinstance(ds.source, LocalSourcePlan):
            raise PlanError(
                str(plan.plan_path),
                field,
                f"dataset {ds.name!r} reads from {ds.source.kind} (bucket {ds.source.bucket!r}),"
                " which `plan --estimate` does not list; set its expected_size to the source's"
                " size, e.g. '500GB'",
            )
        if not ds.source.path.is_dir():
            raise PlanError(
                str(plan.plan_path),
                f"datasets[{index}].source.path",
                f"{ds.source.path} does not exist; mount it, or set {field} to estimate without it",
            )
        out.append(_listed(plan, ds))
    return out
