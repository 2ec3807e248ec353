"""Local source files (exports, mounted volumes): listed in name order, one folder at a time
(or a thread per folder, sources.listing)."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from migrator.errors import SourceChangedError, SourceError
from migrator.sources.base import SourceObject
from migrator.sources.listing import Folder, Level, Ranges, plan_folder_units


def _version(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def _order(entry: os.DirEntry[str]) -> str:
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


class LocalSource:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def location(self, obj: SourceObject) -> str:
        return str(self.root / obj.name)

    def list(self) -> Iterator[SourceObject]:
        self._check_root()
        yield from self._below("")

    def list_ranges(self, parts: int) -> Ranges:
        """The top folders' names, and a run per folder below them (sources.listing)."""
        self._check_root()
        units = plan_folder_units(self._level, parts)
        return iter([iter(u) if isinstance(u, list) else self._below(u.prefix) for u in units])

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: source folder does not exist")

    def _below(self, rel: str) -> Iterator[SourceObject]:
        """Every file below the folder `rel` ('' or ending in '/'), in name order."""
        for item in self._level(rel):
            if isinstance(item, Folder):
                yield from self._below(item.prefix)
            else:
                yield item

    def _level(self, rel: str) -> Level:
        """The folder's files and folders, in name order: a folder sorts as its name and a '/',
        so walking into each folder in turn yields whole names in order."""
        folder = self.root / rel if rel else self.root
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=_order)
        except OSError as exc:
            raise SourceError(f"{folder}: cannot list ({exc.strerror})") from None
        level: Level = []
        for entry in entries:
            name = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                level.append(Folder(name + "/"))
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                level.append(SourceObject(name, st.st_size, _version(st)))
        return level

    def _open_checked(self, obj: SourceObject, buffering: int) -> BinaryIO:
        path = self.root / obj.name
        try:
            fh = path.open("rb", buffering=buffering)
        except FileNotFoundError:
            raise SourceChangedError(f"{path}: deleted since it was listed; run again") from None
        except OSError as exc:
            raise SourceError(f"{path}: cannot open ({exc.strerror})") from None
        if _version(os.fstat(fh.fileno())) != obj.version:
            fh.close()
            raise SourceChangedError(
                f"{path}: changed since it was listed; run again to pick it up"
            )
        return fh

    def open(self, obj: SourceObject) -> BinaryIO:
        return self._open_checked(obj, -1)

    def read_range_into(
        self,
        obj: SourceObject,
        offset: int,
        length: int,
        buffer: bytearray | mmap.mmap | memoryview,
    ) -> memoryview:
        """read_range into the caller's buffer (at least `length` bytes), which it reuses
        chunk after chunk: no fresh allocation, so no page faults, for every part read.
        Returns the view of `buffer` that holds the bytes."""
        path = self.root / obj.name
        view = memoryview(buffer).cast("B")[:length]
        if len(view) < length:
            raise ValueError(f"a {len(view)}-byte buffer cannot hold {length} bytes")
        with self._open_checked(obj, 0) as fh:
            try:
                done = 0
                while done < length:  # a read may return short
                    got = os.preadv(fh.fileno(), [view[done:]], offset + done)
                    if not got:
                        raise SourceError(f"{path}: file shrank while being read (at {offset})")
                    done += got
                if _version(os.fstat(fh.fileno())) != obj.version:
                    raise SourceError(f"{path}: changed while being copied; run again")
            except OSError as exc:
                raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
        return view

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        path = self.root / obj.name
        with self._open_checked(obj, 0) as fh:
            try:
                fh.seek(offset)
                data = fh.read(length) if length else b""  # unbuffered: one copy, no zero-fill
                while len(data) < length:  # a raw read may return short; rare, so join is fine
                    more = fh.read(length - len(data))
                    if not more:
                        raise SourceError(f"{path}: file shrank while being read (at {offset})")
                    data += more
                if _version(os.fstat(fh.fileno())) != obj.version:
                    raise SourceError(f"{path}: changed while being copied; run again")
            except OSError as exc:
                raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
        return data
