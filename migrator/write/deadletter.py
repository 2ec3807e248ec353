"""Dead letters while routing: the records a dataset with `on_bad_record: quarantine` sets
aside.

Routing appends each bad record (its bytes as read, file, line, byte offset and reason) to a
dead-letter spool beside the shard spools. Each entry carries the index of its file in the
listing, so a resumed routing cuts the spool back to the files its checkpoint covers: a record is
never lost nor counted twice. Once routing is complete, deadletter_seal.py seals the spool into
the destination's dead-letter area (repository/dead_letters.py, docs/FORMAT.md §9), and
`migrator deadletters` reads them back.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from migrator.errors import StateError
from migrator.repository.dead_letters import DeadLetter
from migrator.repository.names import dead_letter_spool_path
from migrator.state.private import open_private
from migrator.write.route_blocks import BadRecord

# The spool is written once this much is buffered (and before each routing checkpoint).
FLUSH_BYTES = 1024 * 1024
# file index in the listing, line, byte offset, then the lengths of name, reason and record
_ENTRY = struct.Struct(">IQQIIQ")


class DeadLetterSpool:
    """The quarantined records of one generation's routing, in file order."""

    def __init__(self, folder: Path, path: Path | None = None) -> None:
        """The generation's spool in `folder`, or one routed file's at `path`."""
        self.path = path or dead_letter_spool_path(folder)
        self._buffer = bytearray()
        self._dirty = False

    def restore(self, next_file: int, *, create: bool) -> None:
        """Cut the spool back to the entries of files [0, next_file), which routing made durable
        before its checkpoint; later ones (and a torn last entry) came from a crashed run."""
        if not self.path.exists():
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                open_private(self.path).close()
            return
        keep = 0
        with self.path.open("rb") as fh:
            for end, entry in _scan(fh, self.path, torn_ok=True):
                if entry[0] >= next_file:
                    break
                keep = end
        with open_private(self.path) as fh:
            fh.truncate(keep)

    def add(self, file_index: int, name: str, bad: list[BadRecord]) -> None:
        raw_name = name.encode()
        for record in bad:
            reason = record.reason.encode()
            self._buffer += _ENTRY.pack(
                file_index, record.line, record.offset, len(raw_name), len(reason), len(record.data)
            )
            self._buffer += raw_name + reason + record.data
        if len(self._buffer) >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        try:
            with open_private(self.path) as fh:
                fh.write(self._buffer)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write the dead-letter spool ({exc})") from None
        self._buffer.clear()
        self._dirty = True

    def make_durable(self) -> None:
        """Before routing saves a checkpoint: what it covers is on disk."""
        self._flush()
        if not self._dirty:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write the dead-letter spool ({exc})") from None
        self._dirty = False


def _scan(
    fh: BinaryIO, path: Path, *, torn_ok: bool
) -> Iterator[tuple[int, tuple[int, int, int, int, int, int]]]:
    """(end offset, header) of each whole entry; payloads are skipped, not read."""
    pos = 0
    size = os.fstat(fh.fileno()).st_size
    while pos < size:
        fh.seek(pos)
        head = fh.read(_ENTRY.size)
        entry = _ENTRY.unpack(head) if len(head) == _ENTRY.size else None
        end = pos + _ENTRY.size + sum(entry[3:]) if entry else size + 1
        if entry is None or end > size:
            if torn_ok:
                return
            raise StateError(f"{path}: dead-letter spool ends inside an entry")
        yield end, entry
        pos = end


def data_lengths(path: Path) -> Iterator[int]:
    """Each entry's record length, in spool order, read from the entry headers alone."""
    with path.open("rb") as fh:
        for _, entry in _scan(fh, path, torn_ok=False):
            yield entry[5]


def iter_spool(path: Path) -> Iterator[DeadLetter]:
    """The spool's dead letters, in the order routing set them aside."""
    with path.open("rb") as fh:
        for end, (_, line, offset, name_len, reason_len, data_len) in _scan(
            fh, path, torn_ok=False
        ):
            fh.seek(end - name_len - reason_len - data_len)
            name = fh.read(name_len).decode()
            reason = fh.read(reason_len).decode()
            yield DeadLetter(name, line, offset, reason, fh.read(data_len))
