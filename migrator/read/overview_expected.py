"""What a generation is expected to move, for the overview's "moved of total" and its ETA.

Nothing here lists the source (a listing of tens of millions of objects takes hours). In order:
- every shard complete (or the generation committed): the moved totals are the totals;
- a records dataset: its routing's file table, the source listed once by the generation's
  routers: the bytes of the files routed in this generation (JSONL and CSV records are stored
  as the bytes they were read as, so these are the bytes the shards will encode);
- a bulk copy whose plan declares `expected_size` (and `expected_files` for objects);
- else the complete shards, extrapolated: keys hash evenly over shards, so the shards done
  tell the size of the shards to come;
- else unknown. Counts of records or objects are scaled from bytes when not known outright.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from migrator.codec.generation import GenerationKind
from migrator.errors import StateError
from migrator.plan.kinds import DatasetKind
from migrator.plan.model import DatasetPlan
from migrator.repository.names import file_table_path, routed_dir
from migrator.write.listing import load_table


@dataclass(frozen=True, slots=True)
class Expected:
    """A generation's expected plaintext bytes and records (or objects); None: not known."""

    bytes: int | None
    items: int | None
    basis: str  # how the figures were found, shown to the operator beside them


@dataclass(frozen=True, slots=True)
class Moved:
    """What the generation's committed chunks hold so far, as the expectation needs it."""

    bytes: int
    items: int
    shards_complete: int
    complete_bytes: int  # the complete shards' share of `bytes`


def expected_totals(
    ds: DatasetPlan,
    generation: int,
    kind: GenerationKind | None,
    committed: bool,
    moved: Moved,
    state_dir: Path,
) -> Expected:
    """The best expectation the state at hand gives (see the module's docstring)."""
    if committed or moved.shards_complete >= ds.shards:
        return Expected(moved.bytes, moved.items, "all shards complete")
    if ds.kind is DatasetKind.RECORDS and kind is not None:
        routed = routed_bytes(state_dir, ds.name, generation)
        if routed is not None:
            size, files = routed
            return _at_least(moved, size, None, f"routing's file table ({files:,} files)")
    if kind in (GenerationKind.BULK, None) and ds.expected_size is not None:
        objects = ds.expected_files if ds.kind is DatasetKind.OBJECTS else None
        return _at_least(moved, ds.expected_size, objects, "the plan's expected_size")
    if moved.shards_complete and kind is not None:
        mean = moved.complete_bytes / moved.shards_complete
        size = round(moved.complete_bytes + mean * (ds.shards - moved.shards_complete))
        basis = f"extrapolated from {moved.shards_complete:,} of {ds.shards:,} shards complete"
        return _at_least(moved, size, None, basis)
    return Expected(None, None, "not known yet: no shard complete, nothing routed")


def _at_least(moved: Moved, size: int, items: int | None, basis: str) -> Expected:
    """Never less than what has moved; a count not known is scaled from the bytes."""
    size = max(size, moved.bytes)
    if items is None and moved.bytes:
        items = round(moved.items * size / moved.bytes)
        basis += "; count scaled from bytes"
    return Expected(size, None if items is None else max(items, moved.items), basis)


def routed_bytes(state_dir: Path, dataset: str, generation: int) -> tuple[int, int] | None:
    """(bytes, files) routed in the generation by its file table; None without one. Read
    again only when the table changes (its routing is done once it stops changing)."""
    path = file_table_path(routed_dir(state_dir, dataset, generation))
    try:
        seen = path.stat()
    except OSError:
        return None
    try:
        return _routed(path, seen.st_mtime_ns, seen.st_size, generation)
    except (OSError, StateError):
        return None  # being replaced right now, or unreadable: the next look tries again


@functools.lru_cache(maxsize=32)
def _routed(path: Path, mtime_ns: int, size: int, generation: int) -> tuple[int, int] | None:
    del mtime_ns, size  # the cache key: a rewritten table is read again
    table = load_table(path)
    if table is None:
        return None
    here = [f for f in table.files if f.origin[0] == generation]
    return sum(f.size for f in here), len(here)
