"""Where a records chunk ends, from the records' lengths rather than from their bytes.

A shard's routed records come with one digest entry each (key hash, record hash, length with
its line feed), in the same order. Their running sum is every record end, so a chunk's cut is
a binary search, not a scan of the chunk for its last record end (for quoted CSV, a scan that
reads every byte). The rule is records/blocks.read_records_chunk's, so both cut the very same
chunks and a resumed shard skips exactly what it committed: the last record end within
`target` bytes, or, when the first record is longer, within the first multiple of `target`
that holds its end.
"""

from __future__ import annotations

from bisect import bisect_right
from io import BufferedIOBase
from itertools import accumulate
from typing import BinaryIO, cast

from migrator.codec.digests import DIGEST_ENTRY, entry_lengths
from migrator.errors import StateError


def record_ends(entries: bytes, size: int) -> list[int] | None:
    """Each record's end in the stream; None when the entries do not add up to `size` (the
    caller then scans the records)."""
    if len(entries) % DIGEST_ENTRY.size:
        return None
    ends = list(accumulate(entry_lengths(entries)))
    return ends if ends and ends[-1] == size else None


def chunk_cut(ends: list[int], offset: int, target: int) -> tuple[int, int]:
    """(bytes, records) of the chunk starting at `offset`, a record end or 0."""
    first = bisect_right(ends, offset)  # the first record of the chunk
    reach = -(-(ends[first] - offset) // target) * target
    last = bisect_right(ends, offset + reach, first)
    return ends[last - 1] - offset, last - first


def read_exactly(fh: BinaryIO, offset: int, size: int) -> bytearray:
    """`size` bytes from `offset`, read into one buffer (no copy after the read)."""
    data = bytearray(size)
    fh.seek(offset)
    got = cast(BufferedIOBase, fh).readinto(data)  # every stream here reads into a buffer
    if got != size:
        raise StateError(f"routed records end at byte {offset + got}, not {offset + size}")
    return data
