"""Where records end, found in one pass over the bytes, with a bound on a record's size.

A record ends at a line feed; in CSV only at one outside quotes, i.e. where the count of
quotes since the record began is even. Every scanner here looks at each byte a bounded number
of times whatever the records' sizes (a line without a line feed once cost time quadratic in
its length), and a reader holds at most one unfinished record beyond what it has handed out:
one longer than the dataset's max_record_size is refused as soon as that many bytes of it are
read (RecordTooLargeError: file, line, byte offset), so memory stays within the plan's budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from migrator.errors import RecordTooLargeError

DEFAULT_MAX_RECORD = 64 * 1024 * 1024  # for callers without a plan (Plan.max_record_size)


class _Parity:
    """CSV quote parity carried from one piece of a stream to the next."""

    __slots__ = ("is_csv", "odd")

    def __init__(self, is_csv: bool) -> None:
        self.is_csv = is_csv
        self.odd = False  # an odd count of quotes since the current record began

    def last_end(self, piece: bytes) -> int:
        """Just past the last record end in `piece` (0: none); the parity then stands as at
        the piece's end. Counts the piece's quotes once, then walks back line by line only
        while the line feed found lies inside quotes."""
        nl = piece.rfind(b"\n")
        if not self.is_csv:
            return nl + 1
        # The parity at the piece's end, from the start of the record then open: a record end
        # inside the piece (even there) does not change it, so it is this either way.
        self.odd ^= piece.count(b'"') % 2 == 1
        if nl < 0:
            return 0
        odd = self.odd ^ (piece.count(b'"', nl) % 2 == 1)  # at the last line feed
        while odd:
            before = piece.rfind(b"\n", 0, nl)
            if before < 0:
                return 0
            odd ^= piece.count(b'"', before, nl) % 2 == 1
            nl = before
        return nl + 1

    def first_end(self, data: bytes, start: int) -> int:
        """Just past the first record end at or after `start` (0: none); the parity then
        stands as at that end (even), or at the data's end."""
        pos = start
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                if self.is_csv:
                    self.odd ^= data.count(b'"', pos) % 2 == 1
                return 0
            if self.is_csv:
                self.odd ^= data.count(b'"', pos, nl) % 2 == 1
                if self.odd:
                    pos = nl + 1
                    continue
            return nl + 1


class RecordBlocks:
    """A source file cut into blocks of whole records, each with the lines and bytes of the
    file before it. `path` and the limit are for RecordTooLargeError."""

    def __init__(
        self, fh: BinaryIO, is_csv: bool, path: str, max_record: int, read_size: int
    ) -> None:
        self.fh = fh
        self.path = path
        self.max_record = max_record
        self.read_size = read_size
        self.parity = _Parity(is_csv)
        self.lines = 0  # lines of the file before the first byte not handed out
        self.offset = 0  # bytes of the file before it
        self._head = b""  # read, not handed out: self._head[self._at:]
        self._at = 0
        self._eof = False

    def _read(self) -> bytes:
        if self._eof:
            return b""
        piece = self.fh.read(self.read_size)
        self._eof = not piece
        return piece

    def _too_large(self, size: int, complete: bool) -> RecordTooLargeError:
        return RecordTooLargeError(
            self.path, self.lines + 1, self.offset, size, self.max_record, complete
        )

    def first_record(self) -> tuple[bytes, int] | None:
        """The first record that is not blank (a CSV header) and its line number; None if
        there is none."""
        pending: list[bytes] = []
        size = 0
        while True:
            if self._at >= len(self._head):
                self._head, self._at = self._read(), 0
                if not self._head:
                    record = b"".join(pending)
                    self.offset += len(record)
                    return (record, self.lines + 1) if record.strip() else None
            end = self.parity.first_end(self._head, self._at)
            if end == 0:
                pending.append(self._head[self._at :])
                size += len(self._head) - self._at
                self._head, self._at = b"", 0
                if size > self.max_record:
                    raise self._too_large(size, complete=False)
                continue
            pending.append(self._head[self._at : end - 1])
            record = b"".join(pending)
            if len(record) > self.max_record:
                raise self._too_large(len(record), complete=True)
            line = self.lines + 1
            self.lines += record.count(b"\n") + 1
            self.offset += len(record) + 1
            self._at = end
            pending, size = [], 0
            if record.strip():
                return record, line

    def blocks(self) -> Iterator[tuple[bytes, int, int]]:
        """(block, lines before it, bytes before it): whole records, each ended by its line
        feed, but for a file's last record that lacks one."""
        pending: list[bytes] = []
        size = 0
        if self._at < len(self._head):
            piece = self._head[self._at :]
            self._head, self._at = b"", 0
        else:
            piece = self._read()
        while piece:
            cut = self.parity.last_end(piece)
            if cut:
                pending.append(piece[:cut] if cut < len(piece) else piece)
                block = pending[0] if len(pending) == 1 else b"".join(pending)
                rest = piece[cut:] if cut < len(piece) else b""
                # Drop the pieces before handing the block out: a long record is held once.
                pending, size, piece = ([rest] if rest else []), len(rest), b""
                lines, offset = self.lines, self.offset
                self.lines += block.count(b"\n")
                self.offset += len(block)
                yield block, lines, offset
                del block
            else:
                pending.append(piece)
                size += len(piece)
            if size > self.max_record:  # only the unfinished record is pending
                raise self._too_large(size, complete=False)
            piece = self._read()
        if pending:
            yield b"".join(pending), self.lines, self.offset


def read_records_chunk(
    fh: BinaryIO, offset: int, target: int, is_csv: bool
) -> tuple[bytes, int, int]:
    """(buffer, cut, records): a chunk of a routing spool is buffer[:cut], from `offset` to
    the last record end within `target` bytes; when one record is longer, reading on `target`
    bytes at a time until a record ends, to the last record end read (each byte scanned once).
    So a chunk holds less than `target` plus the longest record.

    The spool holds records each ended by a line feed; a CSV record may hold quoted ones."""
    fh.seek(offset)
    pieces: list[bytes] = []
    ends = _EndCounter(is_csv)
    while True:
        piece = fh.read(target)
        if not piece:
            break
        pieces.append(piece)
        ends.feed(piece)
        if ends.end:
            break
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    return data, (ends.end or len(data)), ends.records


class _EndCounter:
    """Counts record ends over consecutive pieces and remembers the last one."""

    __slots__ = ("base", "end", "is_csv", "odd", "records")

    def __init__(self, is_csv: bool) -> None:
        self.is_csv = is_csv
        self.base = 0  # bytes fed before the current piece
        self.end = 0  # just past the last record end seen
        self.records = 0  # record ends up to there
        self.odd = False

    def feed(self, piece: bytes) -> None:
        if not self.is_csv:
            nl = piece.rfind(b"\n")
            if nl >= 0:
                self.end = self.base + nl + 1
                self.records += piece.count(b"\n")
        else:
            pos = 0
            while (nl := piece.find(b"\n", pos)) >= 0:
                self.odd ^= piece.count(b'"', pos, nl) % 2 == 1
                if not self.odd:
                    self.end = self.base + nl + 1
                    self.records += 1
                pos = nl + 1
            self.odd ^= piece.count(b'"', pos) % 2 == 1
        self.base += len(piece)
