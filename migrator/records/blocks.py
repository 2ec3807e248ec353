"""Source files and routing spools cut into blocks of whole records, in one linear pass, with a
bound on a record's size.

Where a record ends is records/framing.py (FORMAT.md §1.4). A reader holds at most one
unfinished record beyond what it has handed out: one longer than the dataset's
max_record_size is refused as soon as that many bytes of it are read (RecordTooLargeError:
file, line, byte offset; UnclosedQuoteError when a quoted field that never closes made it so),
so memory stays within the plan's budget. While a record is unfinished, the bytes held are
scanned again only once they have doubled: every byte is scanned a bounded number of times
however long the record (rescanning at every read was quadratic).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from migrator.errors import RecordTooLargeError, SourceError, UnclosedQuoteError
from migrator.records.framing import BOM, RecordFraming, line_ends

DEFAULT_MAX_RECORD = 64 * 1024 * 1024  # for callers without a plan (Plan.max_record_size)


def ended(record: bytes, framing: RecordFraming) -> bytes:
    """A record as stored: without the byte that ends it (a CRLF's CR stays)."""
    last = record[-1:]
    if last == b"\n" or (framing.cr_ends and last == b"\r"):
        return record[:-1]
    return record


class RecordBlocks:
    """A source file cut into blocks of whole records, each with the lines and bytes of the
    file before it. A UTF-8 BOM at the file's start is skipped (byte offsets still count it).
    `path` and the limit are for errors."""

    def __init__(
        self, fh: BinaryIO, framing: RecordFraming, path: str, max_record: int, read_size: int
    ) -> None:
        self.fh = fh
        self.framing = framing
        self.path = path
        self.max_record = max_record
        self.read_size = read_size
        self.lines = 0  # line ends of the file before the first byte not handed out
        self.offset = 0  # bytes of the file before it
        self._buf = bytearray()  # read, not handed out: an unfinished record at most
        self._eof = False
        self._at_start = True

    def _read(self) -> bytes:
        if self._eof:
            return b""
        piece = self.fh.read(self.read_size)
        if self._at_start:
            self._at_start = False
            while piece and len(piece) < len(BOM) and BOM.startswith(piece):
                more = self.fh.read(self.read_size)
                if not more:
                    break
                piece += more
            if piece.startswith(BOM):
                self.offset = len(BOM)
                piece = piece[len(BOM) :] or self.fh.read(self.read_size)
        self._eof = not piece
        return piece

    def _take(self, first: bool) -> bytes:
        """The bytes not handed out up to just past the first (`first`) or the last record end
        in them, read on until there is one; at the file's end, all that is left (b"": none).
        One buffer holds what is read, so a record too long is held once, not twice."""
        buf = self._buf
        scanned = 0  # bytes held at the last scan that found no end
        while True:
            size = len(buf)
            if size and (self._eof or size >= 2 * scanned or size > self.max_record):
                framing = self.framing
                cut = (framing.first_end if first else framing.last_end)(buf, self._eof)
                if cut or self._eof:
                    cut = cut or size
                    taken = bytes(buf) if cut == size else bytes(memoryview(buf)[:cut])
                    del buf[:cut]  # from the front: no copy
                    return taken
                if size > self.max_record:  # only the unfinished record is held
                    raise self._too_large(buf)
                scanned = size
            elif self._eof:
                return b""
            piece = self._read()
            if piece:
                buf += piece
                del piece

    def _too_large(self, data: bytearray) -> RecordTooLargeError:
        line = self.lines + 1
        quote = self.framing.open_quote(data)
        if quote >= 0:
            return UnclosedQuoteError(
                self.path,
                line,
                self.offset,
                len(data),
                self.max_record,
                line + line_ends(data, quote),
                self.offset + quote,
            )
        return RecordTooLargeError(self.path, line, self.offset, len(data), self.max_record, False)

    def first_record(self) -> tuple[bytes, int] | None:
        """The first record that is not blank (a CSV header), as stored, and its line number;
        None if there is none. A quoted field in it that never closes is refused."""
        while True:
            record = self._take(first=True)
            if not record:
                return None
            line = self.lines + 1
            if self._eof and not self._buf:
                quote = self.framing.open_quote(record)
                if quote >= 0:
                    raise SourceError(
                        f"{self.path}:{line}: the CSV header row's quoted field opened at line"
                        f" {line + line_ends(record, quote)}, byte {self.offset + quote:,}"
                        " never closes"
                    )
            self.lines += line_ends(record)
            self.offset += len(record)
            if len(record) > self.max_record:
                raise RecordTooLargeError(
                    self.path, line, self.offset - len(record), len(record), self.max_record, True
                )
            body = ended(record, self.framing)
            if body.strip():
                return body, line

    def blocks(self) -> Iterator[tuple[bytes, int, int]]:
        """(block, lines before it, bytes before it): whole records, each with the bytes that
        end it, but for a file's last record that lacks them."""
        while True:
            block = self._take(first=False)
            if not block:
                return
            lines, offset = self.lines, self.offset
            self.lines += line_ends(block)
            self.offset += len(block)
            yield block, lines, offset
            del block


def read_records_chunk(
    fh: BinaryIO, offset: int, target: int, framing: RecordFraming
) -> tuple[bytes, int, int]:
    """(buffer, cut, records): a chunk of a routing spool is buffer[:cut], from `offset` to
    the last record end within the first `target`-byte reads that hold one: within `target`
    bytes, or when one record is longer, the reads up to its end. So a chunk holds less than
    `target` plus the longest record. The buffer may run past the cut (read ahead, as a long
    record is scanned again only once the bytes read have doubled).

    The spool holds records each followed by a line feed (`framing`: stored_framing)."""
    fh.seek(offset)
    pieces: list[bytes] = []
    size = scanned = first = 0
    data = b""
    while True:
        piece = fh.read(target)
        if piece:
            pieces.append(piece)
            size += len(piece)
        if size and (not piece or size >= 2 * scanned):
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces = [data]
            first = framing.first_end(data, True)
            if first or not piece:
                break
            scanned = size
        elif not piece:
            break
    if not first:
        return data, len(data), framing.count(data, len(data))
    reads = min(len(data), -(-first // target) * target)
    cut = framing.last_end(data, True, reads)
    return data, cut, framing.count(data, cut)
