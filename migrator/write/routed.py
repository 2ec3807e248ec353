"""One source file routed: its records and their digest entries grouped by shard, and an index.

Routing a file appends, per shard, runs of its records to one records file and their digest
entries (key hash, record digest, length) to one digests file, a shard's buffer at a time, so
memory stays bounded whatever the file's size. The index, written last and renamed into place,
lists the segments and says the file is routed: it is the routing checkpoint, per file.

The digests outlive the generation: a later sync that finds the file unchanged takes what the
file contributed from them instead of reading it again. The records are read once, by the
encoders of the generation that routed the file, as one stream per shard over every file's
segments (SegmentReader), so chunk cuts depend on the routed bytes alone.
"""

from __future__ import annotations

import bisect
import io
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from migrator.codec.digests import DIGEST_ENTRY
from migrator.errors import StateError
from migrator.repository.names import routed_file_path
from migrator.state.private import open_private, write_private


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of one shard's records (or digest entries) in a routed file."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class RoutedIndex:
    """What routing one file wrote: (shard, records offset, length, digests offset, length)
    per segment, in the order written; the CSV header and its line, records and bytes routed."""

    segments: tuple[tuple[int, int, int, int, int], ...]
    csv_header: bytes | None
    header_line: int
    records: int
    nbytes: int
    bad: int

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "segments": self.segments,
                "csv_header": None if self.csv_header is None else self.csv_header.hex(),
                "header_line": self.header_line,
                "records": self.records,
                "bytes": self.nbytes,
                "bad": self.bad,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, where: Path) -> RoutedIndex:
        try:
            doc = orjson.loads(data)
            header = doc["csv_header"]
            return cls(
                tuple(
                    (int(a), int(b), int(c), int(d), int(e)) for a, b, c, d, e in doc["segments"]
                ),
                None if header is None else bytes.fromhex(header),
                int(doc["header_line"]),
                int(doc["records"]),
                int(doc["bytes"]),
                int(doc["bad"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{where}: unreadable routing index ({exc}); route again") from None


MIN_SHARD_BUFFER = 64 * 1024  # a writer's least buffer a shard, whatever its budget


class RoutedFileWriter:
    """Per-shard append buffers, bounded in total, flushed as segments of one file's output."""

    def __init__(self, folder: Path, position: int, shards: int, budget: int) -> None:
        self.folder = folder
        self.position = position
        self.keep_records = True
        self.buffers = [bytearray() for _ in range(shards)]
        self.dbuffers = [bytearray() for _ in range(shards)]
        self.per_shard = max(MIN_SHARD_BUFFER, budget // max(shards, 1))
        self.segments: list[tuple[int, int, int, int, int]] = []
        self.records = 0
        self.nbytes = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._rec = open_private(routed_file_path(folder, position, "records"), "wb")
        self._dig = open_private(routed_file_path(folder, position, "digests"), "wb")
        self._rec_at = self._dig_at = 0

    def append_block(
        self, shard: int, records: bytes | bytearray, digests: bytes | bytearray, nbytes: int
    ) -> None:
        """A run of the shard's records (each with its line feed) and their digest entries."""
        buf, dbuf = self.buffers[shard], self.dbuffers[shard]
        buf += records
        dbuf += digests
        self.nbytes += nbytes
        if len(buf) >= self.per_shard or len(dbuf) * 8 >= self.per_shard:
            self._flush(shard)

    def _flush(self, shard: int) -> None:
        buf, dbuf = self.buffers[shard], self.dbuffers[shard]
        if not dbuf:
            return
        try:
            self._rec.write(buf)
            self._dig.write(dbuf)
        except OSError as exc:
            raise StateError(
                f"{self.folder}: cannot write the routed output ({exc.strerror or exc}); run"
                " again to resume once it can be written"
            ) from None
        self.segments.append((shard, self._rec_at, len(buf), self._dig_at, len(dbuf)))
        self._rec_at += len(buf)
        self._dig_at += len(dbuf)
        buf.clear()
        dbuf.clear()

    def finish(self, csv_header: bytes | None, header_line: int, bad: int) -> RoutedIndex:
        """Flush, make durable, and write the index last: from then on the file is routed."""
        for shard in range(len(self.buffers)):
            self._flush(shard)
        for fh in (self._rec, self._dig):
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        index = RoutedIndex(
            tuple(self.segments),
            csv_header,
            header_line,
            self._dig_at // DIGEST_ENTRY.size,
            self.nbytes,
            bad,
        )
        final = routed_file_path(self.folder, self.position, "index")
        tmp = final.with_name(final.name + ".tmp")
        write_private(tmp, index.to_bytes())
        os.replace(tmp, final)
        return index

    def abandon(self) -> None:
        for fh in (self._rec, self._dig):
            fh.close()


def is_routed(folder: Path, slot: int) -> bool:
    """Whether the file is routed (its index is in place), without reading the index."""
    return routed_file_path(folder, slot, "index").exists()


def load_index(folder: Path, position: int) -> RoutedIndex | None:
    """The file's routing index, or None while it is not (completely) routed."""
    path = routed_file_path(folder, position, "index")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return RoutedIndex.from_bytes(data, path)


def shard_segments(
    folder: Path, position: int, index: RoutedIndex, shard: int
) -> tuple[list[Segment], list[Segment]]:
    """(records segments, digests segments) of one shard in one routed file, in order."""
    rec_path = routed_file_path(folder, position, "records")
    dig_path = routed_file_path(folder, position, "digests")
    recs, digs = [], []
    for s, ro, rl, do, dl in index.segments:
        if s == shard:
            recs.append(Segment(rec_path, ro, rl))
            digs.append(Segment(dig_path, do, dl))
    return recs, digs


def read_segments(segments: Sequence[Segment]) -> bytes:
    """The bytes of `segments`, concatenated."""
    out = bytearray()
    handle: tuple[Path, io.BufferedReader] | None = None
    try:
        for seg in segments:
            if handle is None or handle[0] != seg.path:
                if handle is not None:
                    handle[1].close()
                handle = (seg.path, _open(seg.path))
            handle[1].seek(seg.offset)
            data = handle[1].read(seg.length)
            if len(data) != seg.length:
                raise StateError(f"{seg.path}: routed output is shorter than its index says")
            out += data
    finally:
        if handle is not None:
            handle[1].close()
    return bytes(out)


def _open(path: Path) -> io.BufferedReader:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise StateError(
            f"{path}: routed output is missing; every worker of a plan must see the same"
            " state_dir (a shared volume)"
        ) from None


class SegmentReader(io.RawIOBase):
    """Segments of several files read as one stream (seek and read), for the encoders: a
    shard's records are every routed file's segments of it, in file order."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        super().__init__()
        self.segments = [s for s in segments if s.length]
        self.starts: list[int] = []
        at = 0
        for seg in self.segments:
            self.starts.append(at)
            at += seg.length
        self.size = at
        self.pos = 0
        self._files: dict[Path, io.BufferedReader] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, size: int | None = -1) -> bytes:
        want = self.size - self.pos if size is None or size < 0 else size
        buf = bytearray(max(0, min(want, self.size - self.pos)))
        return bytes(buf[: self.readinto(buf)])

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Straight from each segment's file into `buffer`: a chunk of a shard is read once,
        with no copy between."""
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self.size - self.pos))
        got = 0
        while got < want:
            i = _segment_at(self.starts, self.pos)
            seg = self.segments[i]
            inner = self.pos - self.starts[i]
            take = min(want - got, seg.length - inner)
            fh = self._files.get(seg.path)
            if fh is None:
                fh = self._files[seg.path] = _open(seg.path)
            fh.seek(seg.offset + inner)
            if fh.readinto(view[got : got + take]) != take:
                raise StateError(f"{seg.path}: routed output is shorter than its index says")
            got += take
            self.pos += take
        return got

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        super().close()


def _segment_at(starts: list[int], pos: int) -> int:
    return bisect.bisect_right(starts, pos) - 1


def merge_dead_letters(parts: Sequence[Path], target: Path, quarantines: bool) -> None:
    """The dead letters of a generation's files (`parts`, in file order; those that exist),
    as the generation's one spool at `target` (written even empty when the dataset
    quarantines)."""
    parts = [p for p in parts if p.exists()]
    if not parts and not quarantines:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out)
    tmp.replace(target)
