"""The routed digests a sync kept, as the cutover gate reads them: which file table stands for
the unchanged files, and sums of digest entries.

A shard's digest is the sum mod 2**128 of its records' xxh3-128 digests; the gate sums millions
of digest entries, so the sum runs over 64-bit columns in C rather than a Python step each.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

from migrator.codec.digests import DIGEST_ENTRY, MOD
from migrator.errors import StateError
from migrator.plan.model import Plan
from migrator.repository.names import (
    file_table_path,
    generation_of_routed_dir,
    routed_dir,
    routed_root,
)
from migrator.state.db import StateDB
from migrator.write.listing import (
    FileTable,
    TableFile,
    all_routed,
    last_routed_generation,
    load_table,
)
from migrator.write.routed import RoutedIndex, load_index

_SWAP = sys.byteorder == "little"
_WIDE = array("Q").itemsize == 8


def entries_sum(data: bytes | bytearray) -> tuple[int, int]:
    """(digest, records) of digest entries: the record digests summed mod 2**128 as two
    64-bit columns in C; a Python step per record would cost more than the rest of the gate."""
    if not _WIDE:  # no 64-bit array type: the plain loop
        total = sum(int.from_bytes(dg) for _, dg, _ in DIGEST_ENTRY.iter_unpack(data))
        return total % MOD, len(data) // DIGEST_ENTRY.size
    words = array("Q")
    words.frombytes(data)
    if _SWAP:
        words.byteswap()
    # an entry is 5 words: key hash (2), record digest (2, high then low), length
    total = (sum(words[2::5]) << 64) + sum(words[3::5])
    return total % MOD, len(data) // DIGEST_ENTRY.size


@dataclass(slots=True)
class ShardSum:
    digest: int = 0
    records: int = 0

    def add(self, digest: int, records: int) -> None:
        self.digest = (self.digest + digest) % MOD
        self.records += records

    def __add__(self, other: ShardSum) -> ShardSum:
        return ShardSum((self.digest + other.digest) % MOD, self.records + other.records)


def routed_table(
    plan: Plan, dataset: str, state: StateDB | None, *, checked: bool = False
) -> FileTable | None:
    """The file table whose routed digests stand for unchanged files: the one of the last
    committed generation whose routing completed (what the next sync compares with), else the
    newest on disk whose files are all routed; None when there is none. The committed one is
    taken unchecked unless `checked`: the gate reads its files' output anyway, and asks again
    with `checked` when some is missing."""
    gen = last_routed_generation(state, dataset) if state is not None else None
    if gen is not None:
        table = _table_in(routed_dir(plan.state_dir, dataset, gen))
        if table is not None and (not checked or all_routed(plan.state_dir, dataset, table)):
            return table
    root = routed_root(plan.state_dir, dataset)
    folders = list(root.iterdir()) if root.is_dir() else []
    found = [(g, d) for d in folders if (g := generation_of_routed_dir(d)) is not None]
    for _, folder in sorted(found, reverse=True):
        table = _table_in(folder)
        if table is not None and all_routed(plan.state_dir, dataset, table):
            return table
    return None


def _table_in(folder: Path) -> FileTable | None:
    try:
        return load_table(file_table_path(folder))
    except StateError:
        return None  # unreadable: the gate reads the files it would have stood for


def routed_index(plan: Plan, dataset: str, f: TableFile) -> RoutedIndex | None:
    gen, slot = f.origin
    try:
        return load_index(routed_dir(plan.state_dir, dataset, gen), slot)
    except StateError:
        return None
