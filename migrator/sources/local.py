"""Local source files: listed in a stable order, streaming, never collected whole into memory."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from migrator.errors import SourceError


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    name: str  # '/'-separated path relative to the source root: the object's identity
    size: int
    mtime_ns: int

    @property
    def version(self) -> str:
        """Changes whenever the file is rewritten; resume redoes an object whose version moved."""
        return f"{self.size}:{self.mtime_ns}"


def iter_source_files(root: Path, include: Sequence[str] | None = None) -> Iterator[SourceFile]:
    """Regular files under root in sorted name order, one directory in memory at a time."""
    if not root.is_dir():
        raise SourceError(f"{root}: source folder does not exist")
    yield from _walk(root, "", include)


def _walk(folder: Path, rel: str, include: Sequence[str] | None) -> Iterator[SourceFile]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise SourceError(f"{folder}: cannot list ({exc.strerror})") from None
    for entry in entries:
        name = f"{rel}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), name + "/", include)
        elif entry.is_file(follow_symlinks=False):
            if include and not any(fnmatch.fnmatch(name, pat) for pat in include):
                continue
            st = entry.stat(follow_symlinks=False)
            yield SourceFile(Path(entry.path), name, st.st_size, st.st_mtime_ns)
