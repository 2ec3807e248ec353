"""Where records end: the framing of FORMAT.md §1.4 as compiled patterns over whole buffers.

JSONL: a record ends at a line feed, a CRLF or a lone CR. CSV is field-aware: a `"` opens a
quoted field only at the start of a field (the record's start or just after a delimiter); a
quoted field runs to the next `"` that is not doubled, whatever it holds (delimiters, CRs, line
feeds); anywhere else a `"` is an ordinary byte. So `1,27" monitor` is one ordinary record, as
RFC 4180-lenient readers and Python's csv module read it.

Every scan is a single pass of `re` (possessive, so it never backtracks) or of bytes.find over
the buffer, never a Python loop per byte; a buffer without any `"` takes the line-end fast
path. The callers keep scans linear across reads (records/blocks.py).
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import repeat

from migrator.errors import TamperedError

BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark: at a file's start, not part of any record
_LINE_END = re.compile(rb"\n|\r(?!\n)")  # splits at LF (a CRLF's CR stays) and at a lone CR
_LONE_CR = re.compile(rb"\r(?!\n)")


def line_ends(data: bytes | bytearray, end: int | None = None) -> int:
    """How many lines data[:end] ends: each LF, CRLF and lone CR counts once (a line number is
    one more than the line ends before it)."""
    end = len(data) if end is None else end
    lf = data.count(b"\n", 0, end)
    if data.find(b"\r", 0, end) < 0 or not _LONE_CR.search(data, 0, end):
        return lf  # the usual case, LF or CRLF only: one count
    return lf + data.count(b"\r", 0, end) - data.count(b"\r\n", 0, end)


class RecordFraming:
    """The record ends of one records layout: JSONL (`delimiter` None) or CSV.

    `cr_ends` False is the framing inside a records chunk or a routing spool, where every
    record is followed by one line feed and a CR is an ordinary byte (a stored CRLF record keeps
    its CR). A record is its bytes up to the byte that ends it: a lone CR or a LF is dropped,
    the CR of a CRLF stays (as earlier versions stored it, so its digest is unchanged)."""

    def __init__(self, delimiter: str | None, *, cr_ends: bool = True) -> None:
        self.delimiter = delimiter
        self.is_csv = delimiter is not None
        self.cr_ends = cr_ends
        ends = rb"\r\n" if cr_ends else rb"\n"
        end = rb"(?:\r\n|\r|\n)" if cr_ends else rb"\n"
        sep = (delimiter or ",").encode()
        if delimiter is not None and (not sep or any(b in b'"\r\n' for b in sep)):
            raise ValueError(f"CSV delimiter {delimiter!r} cannot be a quote, CR or LF")
        first, rest = re.escape(sep[:1]), re.escape(sep[1:])
        run = rb"[^%s%s]*+" % (first, ends)  # an unquoted stretch: up to a delimiter or line end
        if rest:  # a multi-byte delimiter: its first byte alone does not end a field
            run += rb"(?:%s(?!%s)[^%s%s]*+)*+" % (first, rest, first, ends)
        quoted = rb'"[^"]*+(?:""[^"]*+)*+"'
        field = rb'(?:%s%s|(?!")%s)' % (quoted, run, run)  # bytes after a closing quote: kept
        record = rb"%s(?:%s%s)*+" % (field, re.escape(sep), field)
        self._quoted = re.compile(quoted)
        self._prefix = re.compile(rb"(?:%s%s)*+" % (field, re.escape(sep)))
        self._whole = re.compile(rb"(?:%s%s)*+" % (record, end))  # whole records, possessive
        self._one = re.compile(rb"%s(%s)?" % (record, end))
        self._terminated = re.compile(rb"%s%s" % (record, end))
        # a record as stored: a CRLF's CR kept, then the LF or lone CR that ends it dropped
        stored = rb"(%s(?:\r(?=\n))?)(?:\n|\r)" if cr_ends else rb"(%s)\n"
        self._stored = re.compile(stored % record)
        self._sep = sep
        self._after_quote = (sep, b"\n", b"\r\n")  # what may follow a closing quote
        self._before_quote = (sep, b"\n")  # what may precede an opening quote

    # Quote parity: when every `"` in a buffer opens a field at its start, closes it before a
    # delimiter or line end, or is doubled inside it, counting quotes reads the buffer as the
    # field-aware patterns do. Splitting at every `"` is a few C passes; the patterns step
    # through every byte. So the scans below try parity first and keep the patterns for
    # buffers it cannot read (a stray quote, a lone CR): the same answers either way
    # (tests/unit/test_framing_parity.py).
    parity = True

    def quote_pieces(self, data: bytes | bytearray, end: int) -> list[bytes] | None:
        """data[:end] split at every quote, when parity reads it as this framing does (the
        even pieces lie outside quoted fields); else None."""
        chunk = data if isinstance(data, bytes) and end == len(data) else bytes(data[:end])
        if chunk.find(b"\r") >= 0 and (
            not self.cr_ends or chunk.count(b"\r") != chunk.count(b"\r\n")
        ):
            return None  # a CR that ends a record, or an ordinary one: the patterns decide
        pieces = chunk.split(b'"')
        outside = pieces[::2]
        after = outside[1:]  # each follows a closing quote: empty when doubled or at the end
        if list(map(bytes.startswith, after, repeat(self._after_quote))).count(False) != (
            after.count(b"")
        ):
            return None
        before = outside[:-1] if len(pieces) % 2 else outside  # each precedes an opening quote
        if list(map(bytes.endswith, before, repeat(self._before_quote))).count(False) != (
            before.count(b"")
        ):
            return None
        return pieces

    def _usable_end(self, data: bytes | bytearray, final: bool, limit: int | None = None) -> int:
        """The data's length (or `limit`), less a CR as the last byte unless `final`: a LF
        may follow it."""
        end = len(data) if limit is None else limit
        if self.cr_ends and not final and end and data[end - 1] == 13:
            end -= 1
        return end

    def last_end(
        self, data: bytes | bytearray, final: bool = False, limit: int | None = None
    ) -> int:
        """Just past the last record end in `data` (up to `limit`), which begins at a record's
        start; 0: none. `final`: nothing follows (a CR at the end is a whole line end)."""
        end = self._usable_end(data, final, limit)
        if not self.is_csv or data.find(b'"', 0, end) < 0:
            at = data.rfind(b"\n", 0, end)
            if self.cr_ends:
                at = max(at, data.rfind(b"\r", 0, end))
            return at + 1
        pieces = self.quote_pieces(data, end) if self.parity else None
        if pieces is not None:
            at = end
            for index in range(len(pieces) - 1, -1, -1):
                piece = pieces[index]
                at -= len(piece) + (index < len(pieces) - 1)  # the piece, then its quote
                if index % 2 == 0 and (lf := piece.rfind(b"\n")) >= 0:
                    return at + lf + 1
            return 0
        found = self._whole.match(data, 0, end)
        return found.end() if found else 0

    def first_end(self, data: bytes | bytearray, final: bool = False) -> int:
        """Just past the first record end in `data` (from a record's start); 0: none yet."""
        end = self._usable_end(data, final)
        if not self.is_csv or data.find(b'"', 0, end) < 0:
            if not self.cr_ends:
                return data.find(b"\n", 0, end) + 1
            found = _LINE_END.search(data, 0, end)
            return found.end() if found else 0
        one = self._terminated.match(data, 0, end)
        return one.end() if one else 0

    def open_quote(self, data: bytes | bytearray, start: int = 0) -> int:
        """Where, in the record starting at `start` and running to the data's end without
        ending, a quoted field opens that never closes; -1 if none does (a long record)."""
        if not self.is_csv:
            return -1
        found = self._prefix.match(data, start)
        at = found.end() if found else start
        if data[at : at + 1] == b'"' and not self._quoted.match(data, at):
            return at
        return -1

    def split(self, data: bytes) -> tuple[list[bytes], int]:
        """The records of a buffer of whole records, each without the byte that ends it (a
        CRLF's CR stays); the last may lack an end. With it, the offset in `data` of a quote
        the last record leaves open (so it runs to the data's end), else -1."""
        if not data:
            return [], -1
        if not self.is_csv or b'"' not in data:
            if self.cr_ends and data.find(b"\r") >= 0 and _LONE_CR.search(data):
                records = _LINE_END.split(data)
                ended = data[-1] in b"\r\n"
            else:
                records = data.split(b"\n")
                ended = data[-1] == 10
            if ended:
                records.pop()
            return records, -1
        out: list[bytes] = self._stored.findall(data)  # one C pass, no loop per record
        if sum(map(len, out)) + len(out) == len(data):  # every byte matched: no gap between
            return out, -1
        whole = self._whole.match(data)  # the last record lacks its end: frame up to it
        cut = whole.end() if whole else 0
        out = self._stored.findall(data, 0, cut)
        if cut < len(data):  # the last record lacks its line end: whole, or a quote left open
            out.append(data[cut:])
            last = self._one.match(data, cut)
            if last is None or last.end() != len(data):
                return out, self.open_quote(data, cut)
        return out, -1

    def count(self, data: bytes, end: int) -> int:
        """How many records end in data[:end], which holds whole records from a record's
        start."""
        if not self.is_csv or data.find(b'"', 0, end) < 0:
            if not self.cr_ends:
                return data.count(b"\n", 0, end)
            return line_ends(data[:end])
        pieces = self.quote_pieces(data, end) if self.parity else None
        if pieces is not None:
            return sum(map(bytes.count, pieces[::2], repeat(b"\n")))
        return self._terminated.subn(b"", memoryview(data)[:end])[1]


def split_by_quote_parity(data: bytes) -> list[bytes]:
    """The records of a CSV records chunk as versions before field-aware framing cut them: a
    record ended at the first LF where the count of `"` since it began was even. Only to read
    chunks those versions wrote, whose records may hold a `"` inside an unquoted field."""
    out: list[bytes] = []
    start = pos = quotes = 0
    while (lf := data.find(b"\n", pos)) >= 0:
        quotes += data.count(b'"', pos, lf)  # since the record began: linear
        if quotes % 2 == 0:
            out.append(data[start:lf])
            start, quotes = lf + 1, 0
        pos = lf + 1
    return out


def split_stored_records(
    data: bytes, framing: RecordFraming, expected: int | None = None
) -> list[bytes]:
    """The records of a records chunk, which holds one or more whole records each followed by
    a line feed (a CSV quoted field left open means the last one is not whole). `expected`:
    the chunk's record count; a CSV chunk an earlier version wrote around a `"` inside an
    unquoted field holds that many only when split by its quote-parity rule (FORMAT.md §1.4)."""
    records, open_quote = framing.split(data)
    if framing.is_csv and expected is not None and len(records) != expected:
        legacy = split_by_quote_parity(data)
        if len(legacy) == expected and data.count(b'"') % 2 == 0 and data.endswith(b"\n"):
            return legacy
    if not data.endswith(b"\n") or open_quote >= 0:
        raise TamperedError("records chunk does not end on a record")
    return records


@lru_cache(maxsize=64)
def framing_of(delimiter: str | None, *, cr_ends: bool = True) -> RecordFraming:
    """One compiled framing per layout (`delimiter` None: JSONL)."""
    return RecordFraming(delimiter, cr_ends=cr_ends)


def stored_framing(delimiter: str | None) -> RecordFraming:
    """The framing of a records chunk or a routing spool: records each followed by a LF."""
    return framing_of(delimiter, cr_ends=False)
