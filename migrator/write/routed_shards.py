"""A generation's routed files seen by shard: what the encoders of a records dataset read.

For each shard: the digest entries and records of the files routed in this generation (in file
order, so a resumed shard cuts the very same chunks), the digest entries the retired files
contributed before (a sync subtracts them), and, rarely, the records of an unchanged file that
holds a key a changed file holds too (a key duplicated across files: its records are written
again whole, so that file is read again for them).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from migrator.codec.digests import DIGEST_ENTRY
from migrator.errors import StateError
from migrator.repository.names import routed_dir, routed_file_path
from migrator.sources.base import SourceObject
from migrator.write.listing import FileTable, TableFile
from migrator.write.routed import RoutedIndex, Segment, SegmentReader, load_index, read_segments

READ_BUFFER = 8 * 1024 * 1024

# Route a file again into a scratch folder (position 0 there): for the rare duplicated key.
Reroute = Callable[[SourceObject, Path], RoutedIndex]


@dataclass
class RoutedShard:
    """One shard's records routed in this generation, and their digest entries, in order."""

    entries: bytes
    segments: list[Segment]

    @property
    def size(self) -> int:
        return sum(s.length for s in self.segments)

    def open(self) -> BinaryIO:
        """The records as one buffered stream: a delta spool reads them a record at a time."""
        return open_segments(self.segments)

    def opener(self) -> Callable[[], BinaryIO]:
        """open(), holding the segments only: the encoding stage keeps every changed shard's
        opener until its turn, and the entries (40 bytes a record) would add up to a share of
        the whole generation in memory."""
        return functools.partial(open_segments, self.segments)


def open_segments(segments: list[Segment]) -> BinaryIO:
    reader = io.BufferedReader(SegmentReader(segments), buffer_size=READ_BUFFER)
    return cast(BinaryIO, reader)


class RoutedShards:
    def __init__(
        self, state_dir: Path, dataset: str, table: FileTable, scratch: Path, reroute: Reroute
    ) -> None:
        self.state_dir = state_dir
        self.dataset = dataset
        self.table = table
        self.scratch = scratch
        self.reroute = reroute
        self._here: dict[int, list[tuple[Segment, Segment]]] | None = None
        self._retired: dict[int, list[Segment]] | None = None

    @property
    def incremental(self) -> bool:
        """Whether a shard's change is worked out from the changed files alone: with a base
        table, and some file carried over from it (when every file was read again, one diff
        of the whole shard costs less than taking every file out and putting it back)."""
        gen = self.table.generation
        return self.table.incremental and any(f.origin[0] != gen for f in self.table.files)

    def _folder(self, f: TableFile) -> Path:
        return routed_dir(self.state_dir, self.dataset, f.origin[0])

    def _by_shard(self, files: list[TableFile]) -> dict[int, list[tuple[Segment, Segment]]]:
        out: dict[int, list[tuple[Segment, Segment]]] = {}
        for f in files:
            folder, position = self._folder(f), f.origin[1]
            index = load_index(folder, position)
            if index is None:
                raise StateError(
                    f"{routed_file_path(folder, position, 'index')}: routed output is missing;"
                    " every worker of a plan must see the same state_dir (a shared volume)"
                )
            rec = routed_file_path(folder, position, "records")
            dig = routed_file_path(folder, position, "digests")
            for shard, ro, rl, do, dl in index.segments:
                out.setdefault(shard, []).append((Segment(rec, ro, rl), Segment(dig, do, dl)))
        return out

    def routed(self, shard: int) -> RoutedShard:
        """The shard's records routed in this generation (every file's, without a base)."""
        if self._here is None:
            gen = self.table.generation
            self._here = self._by_shard([f for f in self.table.files if f.origin[0] == gen])
        pairs = self._here.get(shard, [])
        return RoutedShard(read_segments([d for _, d in pairs]), [r for r, _ in pairs])

    def retired_entries(self, shard: int) -> bytes:
        """What the base's changed and removed files contributed to the shard."""
        if self._retired is None:
            by = self._by_shard(list(self.table.retired))
            self._retired = {s: [d for _, d in pairs] for s, pairs in by.items()}
        return read_segments(self._retired.get(shard, []))

    def unchanged_records(self, shard: int, keys: set[bytes]) -> bytes:
        """The shard's records of `keys` held by files this generation did not read: those
        files are read again (rare: a key duplicated across files, one of which changed)."""
        gen = self.table.generation
        out = bytearray()
        for f in self.table.files:
            if f.origin[0] == gen:
                continue
            pairs = self._by_shard([f]).get(shard, [])
            entries = read_segments([d for _, d in pairs])
            if not any(kh in keys for kh, _, _ in DIGEST_ENTRY.iter_unpack(entries)):
                continue
            folder = self.scratch / f"reread-{f.origin[0]}-{f.origin[1]}"
            index = self.reroute(SourceObject(f.name, f.size, f.version), folder)
            rec = routed_file_path(folder, 0, "records")
            dig = routed_file_path(folder, 0, "digests")
            segs = [s for s in index.segments if s[0] == shard]
            entries = read_segments([Segment(dig, do, dl) for _, _, _, do, dl in segs])
            records = read_segments([Segment(rec, ro, rl) for _, ro, rl, _, _ in segs])
            at = 0
            for kh, _, length in DIGEST_ENTRY.iter_unpack(entries):
                if kh in keys:
                    out += records[at : at + length]
                at += length
        return bytes(out)
