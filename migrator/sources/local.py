"""Local source files (exports, mounted volumes): listed in name order, one folder at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from migrator.errors import SourceError
from migrator.sources.base import SourceObject


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
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: source folder does not exist")
        yield from self._walk(self.root, "")

    def _walk(self, folder: Path, rel: str) -> Iterator[SourceObject]:
        try:
            with os.scandir(folder) as it:
                # A folder sorts as its name and a '/': the walk yields whole names in order.
                entries = sorted(it, key=_order)
        except OSError as exc:
            raise SourceError(f"{folder}: cannot list ({exc.strerror})") from None
        for entry in entries:
            name = f"{rel}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), name + "/")
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                yield SourceObject(name, st.st_size, _version(st))

    def _open_checked(self, obj: SourceObject, buffering: int) -> BinaryIO:
        path = self.root / obj.name
        try:
            fh = path.open("rb", buffering=buffering)
        except OSError as exc:
            raise SourceError(f"{path}: cannot open ({exc.strerror})") from None
        if _version(os.fstat(fh.fileno())) != obj.version:
            fh.close()
            raise SourceError(f"{path}: changed since it was listed; run again to pick it up")
        return fh

    def open(self, obj: SourceObject) -> BinaryIO:
        return self._open_checked(obj, -1)

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
