"""The folder a restore writes into: each file whole or not at all, at exactly its name.

Files are written in a temporary folder of this restore's own inside `--out` (a random name,
checked against every object's) and renamed into place, so no temporary name can meet a real
one. An object that cannot be written at its name (the rules of migrator.objectnames, a path
over the filesystem's limits, a file where a folder must go or the reverse, a filesystem that
holds two names as one file) is recorded and the others are written; `finish` then raises
RestoreIncompleteError naming them. Other write failures (a full disk) stop the restore.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from migrator.errors import RestoreIncompleteError, UsageError
from migrator.objectnames import Refusals, name_problem, shown

TEMP_PREFIX = ".migrator-restore-"
# Failures that concern one object's name or place, not the folder: the next object may succeed.
_PER_OBJECT = frozenset(
    {errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EILSEQ, errno.EINVAL}
)


class _Refused(Exception):
    """An object this folder cannot hold at its name; the reason is its message."""


class _TempFile:
    """A file being written under the temporary folder, for `target`."""

    def __init__(self, tmp: Path, target: Path) -> None:
        self.tmp = tmp
        self.target = target
        self.fh: BinaryIO = tmp.open("wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.size += len(data)

    def discard(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class RestoreFolder:
    """One restore's writes into `out`: counted, checked against the names already written,
    and every object it could not write at its name recorded for `finish`."""

    def __init__(self, out: Path, dataset: str) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=out))
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot write there ({exc.strerror})") from exc
        self.out = out
        self.dataset = dataset
        self._root = os.path.abspath(out)
        self._path_max = _limit(out, "PC_PATH_MAX", 4096)
        self._name_max = _limit(out, "PC_NAME_MAX", 255)
        self._serial = 0
        self._inodes: set[tuple[int, int]] = set()  # every file this restore put in place
        self.written = 0
        self.refused = Refusals()

    def __enter__(self) -> RestoreFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    # --- objects, at their names ------------------------------------------------------------

    def accepts(self, name: str) -> bool:
        """Whether `name` can be written here; a refusal is recorded, and its parts never read."""
        problem = name_problem(name) or self._path_problem(name)
        if problem is not None:
            self.refused.add(name, problem)
        return problem is None

    def write_object(self, name: str, pieces: Iterable[bytes]) -> int | None:
        """The object from its pieces, in place; its size, or None if it could not be written
        at its name (recorded)."""
        try:
            file = self._open(name)
        except OSError as exc:
            self._failed(name, exc)
            return None
        try:
            for piece in pieces:
                file.write(piece)
            self._commit(file)
        except BaseException as exc:
            file.discard()
            if isinstance(exc, _Refused):
                self.refused.add(name, str(exc))
                return None
            if isinstance(exc, OSError):
                self._failed(name, exc)
                return None
            raise
        return file.size

    def finish(self) -> None:
        """Raise RestoreIncompleteError if an object could not be written."""
        if not self.refused:
            return
        count = self.refused.count
        raise RestoreIncompleteError(
            f"dataset {self.dataset}: restored {self.written:,} of {self.written + count:,}"
            f" objects into {self.out}; {count:,} could not be written at their names (the"
            f" destination still holds them intact): {self.refused.describe()}",
            written=self.written,
            names=[name for name, _ in self.refused.named],
            count=count,
        )

    # --- files of fixed names (records shards) ----------------------------------------------

    @contextmanager
    def whole_file(self, name: str) -> Iterator[_TempFile]:
        """A file written whole at `name`, or a RestoreIncompleteError naming it."""
        try:
            file = self._open(name)
        except OSError as exc:
            raise self._stopped(name, exc) from exc
        try:
            yield file
            self._commit(file)
        except BaseException as exc:
            file.discard()
            if isinstance(exc, (OSError, _Refused)):
                raise self._stopped(name, exc) from exc
            raise

    # --- the mechanics ------------------------------------------------------------------------

    def _path_problem(self, name: str) -> str | None:
        parts = name.split("/")
        if parts[0] == self._tmp.name:
            return "is the name of this restore's temporary folder; restore again"
        path = len(os.fsencode(os.path.join(self._root, name))) + 1  # and its NUL
        if path > self._path_max:
            return (
                f"would be a path of {path:,} bytes under {self.out}, over the"
                f" {self._path_max:,} this filesystem allows"
            )
        longest = max(len(part.encode()) for part in parts)
        if longest > self._name_max:
            return (
                f"has a component of {longest} bytes, over the {self._name_max} a file name"
                f" may hold under {self.out}"
            )
        return None

    def _open(self, name: str) -> _TempFile:
        target = self.out.joinpath(*name.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        self._serial += 1
        return _TempFile(self._tmp / str(self._serial), target)

    def _commit(self, file: _TempFile) -> None:
        """Rename into place, unless a folder is there, or a file this restore wrote under
        another name (a filesystem that does not tell the two names apart)."""
        there: os.stat_result | None
        try:
            there = os.lstat(file.target)
        except FileNotFoundError:
            there = None
        if there is not None and stat.S_ISDIR(there.st_mode):
            raise _Refused("is a folder here: other objects' names continue below it")
        if there is not None and (there.st_dev, there.st_ino) in self._inodes:
            other = self._name_of(file.target.parent, there)
            raise _Refused(
                f"is the same file as {other} on the filesystem under {self.out}, which does"
                " not tell the two names apart (letter case, Unicode normalization or a link);"
                " restore to a case-sensitive POSIX filesystem"
            )
        written = os.fstat(file.fh.fileno())
        file.fh.close()
        os.replace(file.tmp, file.target)
        self._inodes.add((written.st_dev, written.st_ino))
        self.written += 1

    def _failed(self, name: str, exc: OSError) -> None:
        """Record a failure that concerns this object alone; stop the restore on any other."""
        if exc.errno not in _PER_OBJECT:
            raise self._stopped(name, exc) from exc
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            blocker = self._file_in_the_way(name)
            if blocker is not None:
                self.refused.add(name, f"needs {shown(blocker)} as a folder, and it is a file")
                return
        self.refused.add(name, f"cannot be written under {self.out}: {exc.strerror}")

    def _stopped(self, name: str, exc: BaseException) -> RestoreIncompleteError:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        return RestoreIncompleteError(
            f"dataset {self.dataset}: restore stopped at {shown(name)}: cannot write it under"
            f" {self.out}: {reason}; {self.written:,} objects were restored before it, the"
            " others were not",
            written=self.written,
            names=[name],
            count=1,
        )

    def _file_in_the_way(self, name: str) -> str | None:
        """The first proper prefix of `name` that is something other than a folder here."""
        parts = name.split("/")
        for end in range(1, len(parts)):
            prefix = "/".join(parts[:end])
            try:
                mode = os.lstat(self.out.joinpath(*parts[:end])).st_mode
            except OSError:
                return None
            if not stat.S_ISDIR(mode):
                return prefix
        return None

    def _name_of(self, folder: Path, there: os.stat_result) -> str:
        """The name the filesystem holds `there` under (links resolved), for the message."""
        try:
            with os.scandir(os.path.realpath(folder)) as entries:
                for entry in entries:
                    if entry.inode() == there.st_ino:
                        real = os.path.relpath(entry.path, os.path.realpath(self._root))
                        return shown(real)
        except OSError:
            pass
        return "an object restored before it"


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default
