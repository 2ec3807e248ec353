"""Local state is private to the user migrator runs as: state_dir 0700, every file in it 0600.

The state store and the routing spools hold what the destination only ever holds sealed:
routed records (spools are plaintext), object names, digests. A folder left 0755 and files
0644 (the usual umask) would show them to every local user. Files are created with their mode
(never opened with a broader one first), and state an older release left is tightened when it
is opened again.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, cast

from migrator.errors import StateError

DIR_MODE = 0o700
FILE_MODE = 0o600
# SQLite's companions of a database file: they hold its pages too.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner may enter: made 0700 (its missing parents with the
    umask's mode), or tightened to 0700 if it was more open."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=DIR_MODE)
            os.chmod(path, DIR_MODE)  # exactly: the umask may have taken more than others' bits
        except FileExistsError:
            _tighten(path, DIR_MODE)
    except OSError as exc:
        raise StateError(f"{path}: cannot make the private state folder ({exc.strerror})") from None
    return path


def private_file(path: Path) -> None:
    """Make `path` (if it exists) readable by its owner only."""
    try:
        _tighten(path, FILE_MODE)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"{path}: cannot make it private ({exc.strerror})") from None


def private_sqlite(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives its -wal and -shm
    files the database's mode), and tighten one an older release left, companions too."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, FILE_MODE))
    except OSError as exc:
        raise StateError(f"{path}: cannot create the state store ({exc.strerror})") from None
    for name in ("", *SQLITE_COMPANIONS):
        private_file(path.with_name(path.name + name))


def open_private(path: Path, mode: str = "ab") -> BinaryIO:
    """`open(path, mode)` for binary writing ("ab", "wb", "r+b", "xb"), creating the file
    0600; an existing file is made 0600 too."""
    flags = {
        "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "xb": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
        "r+b": os.O_RDWR | os.O_CREAT,
    }[mode]
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)  # an older file's mode, or what a strict umask left
        return cast(BinaryIO, os.fdopen(fd, mode))
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Write `path` whole, 0600."""
    with open_private(path, "wb") as fh:
        fh.write(data)


def _tighten(path: Path, mode: int) -> None:
    """chmod to `mode` when the path allows more, and only a path this user owns (a shared
    parent of someone else's is theirs to set)."""
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & ~mode and st.st_uid == os.getuid():
        os.chmod(path, mode)
