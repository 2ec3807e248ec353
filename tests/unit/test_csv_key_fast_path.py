"""The CSV key reader's fast path (quote parity, when every quote bounds a whole field) gives
the key and width the csv module gives, or leaves the row to it: hostile rows included."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.errors import BadRecordError
from migrator.records.keys import CsvKeyReader

HEADERS = [b"a,b,key,d", b"key,a,b,d"]
PIECES = st.sampled_from([b"x", b"yy", b",", b'"', b'""', b"27", b" ", b"\xc3\xa9", b"\r"])


def _by_csv_module(row: bytes, index: int) -> bytes | None:
    """The key as Python's csv module reads the row (None: refused, or not 4 fields)."""
    try:
        fields = next(csv.reader(io.StringIO(row.decode("utf-8", "surrogateescape")), strict=True))
    except (csv.Error, StopIteration):
        return None
    if len(fields) != 4 or not fields[index]:
        return None
    return fields[index].encode("utf-8", "surrogateescape")


@settings(max_examples=600, deadline=None)
@given(st.lists(PIECES, max_size=14), st.sampled_from(HEADERS))
def test_the_fast_path_keys_rows_as_the_csv_module(pieces: list[bytes], header: bytes) -> None:
    row = b"".join(pieces).replace(b"\r", b"")
    reader = CsvKeyReader("key", header, ",", "t.csv:1")
    try:
        got: bytes | None = reader.key(row, "t.csv", 2)
    except BadRecordError:
        got = None
    assert got == _by_csv_module(row, header.split(b",").index(b"key")), row


def test_regular_and_stray_quotes() -> None:
    reader = CsvKeyReader("key", HEADERS[0], ",", "t.csv:1")
    assert reader.key(b'1,"a,b",k,"x""y"', "t.csv", 2) == b"k"
    assert reader.key(b'1,27" monitor,k,4', "t.csv", 2) == b"k"
    assert reader.key(b'1,2,"k,1",4', "t.csv", 2) == b"k,1"
    first = CsvKeyReader("key", HEADERS[1], ",", "t.csv:1")
    # quotes after the key still decide the width: two stray ones are not a quoted field
    assert first.key(b'1,27" x,k",4', "t.csv", 2) == b"1"
    for ragged in (b'1,"a,b",c', b'1,"a"x,b,c', b'1,"a'):
        try:
            first.key(ragged, "t.csv", 2)
        except BadRecordError:
            continue
        raise AssertionError(ragged)
