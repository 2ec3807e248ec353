"""Record framing and shard-key extraction for JSONL and CSV; original bytes are kept as read.

A record is its bytes up to (not including) the line feed that ends it; a CSV record may hold
line feeds inside a quoted field. Keys become bytes: strings as UTF-8, integers in decimal.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import BinaryIO

import orjson

from migrator.errors import BadRecordError, SourceError

READ_BLOCK = 8 * 1024 * 1024

# The csv module refuses fields over 128 KiB by default; a record's size is bounded by the
# dataset's max_record_size (sources/framing.py), not by this parser, so lift the limit
# (process-wide, as the module only allows).
csv.field_size_limit(2**31 - 1)


def iter_lines(fh: BinaryIO, block: int = READ_BLOCK) -> Iterator[list[bytes]]:
    """Lists of complete lines (without their line feed); a last line without one counts too.
    A long line is gathered in pieces and joined once: each byte is copied a bounded number of
    times, however long the line."""
    pending: list[bytes] = []
    while data := fh.read(block):
        cut = data.rfind(b"\n")
        if cut < 0:
            pending.append(data)
            continue
        head = b"".join((*pending, data[:cut])) if pending else data[:cut]
        rest = data[cut + 1 :]
        pending = [rest] if rest else []
        yield head.split(b"\n")
    if pending:
        yield [b"".join(pending)]


def iter_csv_records(lines: Iterator[list[bytes]]) -> Iterator[list[bytes]]:
    """Re-joins lines split inside quoted fields: a record ends where its quote count is even."""
    pending: list[bytes] = []
    quotes = 0
    for batch in lines:
        out: list[bytes] = []
        for line in batch:
            quotes += line.count(b'"')
            if quotes % 2:
                pending.append(line)
                continue
            if pending:
                pending.append(line)
                out.append(b"\n".join(pending))
                pending = []
            else:
                out.append(line)
            quotes = 0
        if out:
            yield out
    if pending:
        yield [b"\n".join(pending)]


def split_block(data: bytes, is_csv: bool) -> list[bytes]:
    """The records of a block of whole records (blank lines included); the last may lack its
    line feed."""
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    if not is_csv:
        return lines
    return [record for batch in iter_csv_records(iter([lines])) for record in batch]


def iter_records(fh: BinaryIO, fmt: str) -> Iterator[list[bytes]]:
    """Batches of records of one stream, blank lines included so callers can count lines."""
    lines = iter_lines(fh)
    yield from iter_csv_records(lines) if fmt == "csv" else lines


class JsonKeyReader:
    """Shard key of a JSONL record; a full parse, because a nested field may share the name."""

    def __init__(self, field: str) -> None:
        self.field = field

    def key(self, record: bytes, path: str, line: int) -> bytes:
        """`path` and `line` only name the record in errors (BadRecordError)."""
        try:
            doc = orjson.loads(record)
        except orjson.JSONDecodeError as exc:
            raise BadRecordError(path, line, _json_problem(record, exc)) from None
        if not isinstance(doc, dict):
            raise BadRecordError(path, line, "record is not a JSON object")
        value = doc.get(self.field)
        if isinstance(value, str) and value:
            return value.encode()
        return _key_bytes(value, self.field, path, line)


def _json_problem(record: bytes, exc: orjson.JSONDecodeError) -> str:
    """JSON text is UTF-8 (RFC 8259): name the first byte that is not, else the parse error."""
    try:
        record.decode()
    except UnicodeDecodeError as bad:
        return f"not UTF-8 (byte 0x{record[bad.start]:02x} at offset {bad.start} of the record)"
    return f"malformed JSON ({exc})"


class CsvKeyReader:
    """Shard key of a CSV record, by the key column's position in the file's header row."""

    def __init__(self, field: str, header: bytes, delimiter: str, where: str) -> None:
        self.field = field
        self.delimiter = delimiter
        self._sep = delimiter.encode()
        names = _parse_csv(
            header, delimiter, "strict", lambda reason: SourceError(f"{where}: {reason}")
        )
        if field not in names:
            raise SourceError(f"{where}: key field {field!r} is not in the CSV header {names}")
        self.index = names.index(field)
        self.width = len(names)

    def key(self, record: bytes, path: str, line: int) -> bytes:
        record = record.removesuffix(b"\r")
        sep = self._sep
        if b'"' in record:
            # Split on quotes: even segments lie outside quoted fields (a doubled quote adds an
            # empty odd segment, which keeps the parity), so delimiters there count the fields.
            segments = record.split(b'"')
            if len(segments) % 2 == 0:  # an odd count of quotes: only a file's last record
                raise BadRecordError(path, line, "CSV row has a quoted field that never ends")
            width = sum(seg.count(sep) for seg in segments[::2]) + 1
            clean = segments[0].split(sep)  # fields wholly before the first quote
            if self.index < len(clean) - 1:
                raw = clean[self.index]
            else:
                fields = _parse_csv(
                    record,
                    self.delimiter,
                    "surrogateescape",
                    lambda reason: BadRecordError(path, line, reason),
                )
                width = len(fields)
                raw = (
                    fields[self.index].encode(errors="surrogateescape")
                    if self.index < width
                    else b""
                )
        else:
            parts = record.split(sep)
            width = len(parts)
            raw = parts[self.index] if self.index < width else b""
        if width != self.width:
            raise BadRecordError(
                path, line, f"CSV row has {width} fields, the header has {self.width}"
            )
        if not raw:
            raise BadRecordError(path, line, f"key field {self.field!r} is empty")
        return raw


def _parse_csv(
    record: bytes, delimiter: str, errors: str, fail: Callable[[str], SourceError]
) -> list[str]:
    """A row's fields, decoded from UTF-8 with `errors`: "strict" for the header row (UTF-8
    text, as manifests carry it); "surrogateescape" for a data row, whose bytes that are not
    UTF-8 pass through, since a CSV record is kept and keyed as bytes, whether or not it is
    UTF-8 (as unquoted rows are). An unreadable row raises what `fail` makes of the reason."""
    try:
        text = record.removesuffix(b"\r").decode("utf-8", errors)
        return next(csv.reader([text], delimiter=delimiter, strict=True))
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise fail(f"unreadable CSV row ({exc})") from None


def _key_bytes(value: object, field: str, path: str, line: int) -> bytes:
    if isinstance(value, str) and value:
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    if value is None:
        raise BadRecordError(path, line, f"key field {field!r} is missing or null")
    raise BadRecordError(
        path, line, f"key field {field!r} must be a non-empty string or an integer"
    )
