"""Shard-key extraction for JSONL and CSV records; original bytes are kept as read.

Where records end is records/framing.py (FORMAT.md §1.4). Keys become bytes: strings as
UTF-8, integers in decimal.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import BinaryIO

import orjson

from migrator.errors import BadRecordError, SourceError
from migrator.records.blocks import RecordBlocks
from migrator.records.framing import framing_of
from migrator.records.json_key import exact_json_key, key_bytes

READ_BLOCK = 8 * 1024 * 1024

# The csv module refuses fields over 128 KiB by default; a record's size is bounded by the
# dataset's max_record_size (records/blocks.py), not by this parser, so lift the limit
# (process-wide, as the module only allows).
csv.field_size_limit(2**31 - 1)


def iter_records(fh: BinaryIO, fmt: str, delimiter: str = ",") -> Iterator[list[bytes]]:
    """Batches of the records of one stream, as stored (blank ones included, a BOM at its
    start skipped), framed as routing frames them."""
    framing = framing_of(delimiter if fmt == "csv" else None)
    reader = RecordBlocks(fh, framing, "<stream>", 1 << 62, READ_BLOCK)
    for block, _lines, _offset in reader.blocks():
        yield framing.split(block)[0]


class JsonKeyReader:
    """Shard key of a JSONL record; a full parse, because a nested field may share the name.
    orjson reads nearly every record; one it refuses, or whose key it reads as a float (an
    integer beyond 64 bits), is decided by the exact parse of records/json_key.py."""

    def __init__(self, field: str) -> None:
        self.field = field

    def key(self, record: bytes, path: str, line: int) -> bytes:
        """`path` and `line` only name the record in errors (BadRecordError)."""
        try:
            doc = orjson.loads(record)
        except orjson.JSONDecodeError:
            return exact_json_key(record, self.field, path, line)
        if not isinstance(doc, dict):
            raise BadRecordError(path, line, "record is not a JSON object")
        value = doc.get(self.field)
        if isinstance(value, str) and value:
            return value.encode()
        if isinstance(value, float):
            return exact_json_key(record, self.field, path, line)
        return key_bytes(value, self.field, path, line)


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
            segments = record.split(b'"')
            clean = segments[0].split(sep)  # the fields wholly before the first quote
            if self.index < len(clean) - 1 and _quotes_at_field_bounds(segments, sep):
                # Every quote opens or closes a field (or is doubled inside one): delimiters
                # outside quotes, in the even segments, count the fields.
                width = sum(seg.count(sep) for seg in segments[::2]) + 1
                raw = clean[self.index]
            else:
                # A `"` opens a quoted field only at a field's start, as the csv module reads
                # it (FORMAT.md §1.4): `27" monitor` is an ordinary field.
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


def _quotes_at_field_bounds(segments: list[bytes], sep: bytes) -> bool:
    """Whether a row split on `"` quotes only whole fields: each opening quote at a field's
    start, each closing one before a delimiter or the row's end, the rest doubled inside a
    field. Then reading quote parity gives the fields the csv module gives, at a fraction of
    its cost."""
    if len(segments) % 2 == 0:  # a quote left open
        return False
    last = len(segments) - 1
    for j in range(0, last + 1, 2):
        outside = segments[j]
        if not outside:
            continue  # the row's start or end, or a doubled quote inside a field
        if j > 0 and not outside.startswith(sep):
            return False  # text right after a closing quote
        if j < last and not outside.endswith(sep):
            return False  # a quote inside an unquoted field
    return True


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
