"""Chunks cut from the records' lengths (records/chunk_cuts.py) are the chunks a scan of the
records cuts (records/blocks.read_records_chunk): same ends, same record counts, for records
longer and shorter than the chunk size, quoted CSV line feeds included."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.codec.digests import DIGEST_ENTRY
from migrator.errors import StateError
from migrator.records.blocks import read_records_chunk
from migrator.records.chunk_cuts import chunk_cut, read_exactly, record_ends
from migrator.records.framing import stored_framing

RECORD = st.one_of(
    st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b'"', b"")),
    st.sampled_from([b'1,"a\nb",c', b'2,"x""\n\n",y', b"3," + b"z" * 100, b'"q\n"']),
)


def _cuts_by_scan(stream: bytes, target: int, delimiter: str | None) -> list[tuple[int, int]]:
    fh, offset, out = io.BytesIO(stream), 0, []
    while offset < len(stream):
        _buf, cut, records = read_records_chunk(fh, offset, target, stored_framing(delimiter))
        out.append((cut, records))
        offset += cut
    return out


def _cuts_by_lengths(records: list[bytes], target: int) -> list[tuple[int, int]]:
    entries = b"".join(DIGEST_ENTRY.pack(b"k" * 16, b"d" * 16, len(r) + 1) for r in records)
    size = sum(len(r) + 1 for r in records)
    ends = record_ends(entries, size)
    assert ends is not None
    offset, out = 0, []
    while offset < size:
        cut, count = chunk_cut(ends, offset, target)
        out.append((cut, count))
        offset += cut
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(RECORD, min_size=1, max_size=30), st.integers(1, 120))
def test_lengths_cut_the_chunks_a_scan_cuts(records: list[bytes], target: int) -> None:
    stream = b"".join(r + b"\n" for r in records)
    assert _cuts_by_lengths(records, target) == _cuts_by_scan(stream, target, ",")


def test_entries_that_do_not_add_up_are_not_used() -> None:
    entries = DIGEST_ENTRY.pack(b"k" * 16, b"d" * 16, 10)
    assert record_ends(entries, 11) is None
    assert record_ends(entries + b"x", 10) is None
    assert record_ends(entries, 10) == [10]


def test_a_short_stream_is_named() -> None:
    with pytest.raises(StateError, match="end at byte 3, not 5"):
        read_exactly(io.BytesIO(b"abc"), 0, 5)
    assert read_exactly(io.BytesIO(b"abcdef"), 2, 3) == b"cde"
