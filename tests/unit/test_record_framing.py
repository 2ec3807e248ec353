"""Record framing is linear and bounded (records/blocks.py): blocks of whole records, the CSV
field-aware quote rule and the LF / CRLF / CR line ends across any read boundary, and a record
longer than max_record_size refused as soon as that much of it is read, naming its file, line
and byte offset."""

from __future__ import annotations

import io
import pickle
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.errors import RecordTooLargeError, TamperedError, UnclosedQuoteError
from migrator.records.blocks import RecordBlocks, read_records_chunk
from migrator.records.framing import framing_of, stored_framing
from migrator.records.framing import split_stored_records as split_records
from migrator.sizes import KiB, MiB
from migrator.sources.local import LocalSource
from migrator.write import route
from migrator.write.route import RecordsSpec, spool_source
from migrator.write.route_blocks import BlockTask, route_block


def reference_records(data: bytes, is_csv: bool, *, cr_ends: bool = True) -> list[bytes]:
    """Each record with its line end (the last may lack one)."""
    return reference_scan(data, is_csv, cr_ends)[0]


def reference_scan(data: bytes, is_csv: bool, cr_ends: bool = True) -> tuple[list[bytes], bool]:
    """(records, whether a quoted field is left open), reading FORMAT.md §1.4 a byte at a
    time: a `"` opens a quoted field only at a field's start (delimiter `,`); a quoted field
    runs to an undoubled `"`; outside one, LF, CRLF and (`cr_ends`) a lone CR end a record."""
    out: list[bytes] = []
    start = at = 0
    quoted, field_start = False, True
    while at < len(data):
        byte = data[at : at + 1]
        if quoted:
            if byte == b'"':
                if data[at + 1 : at + 2] == b'"':
                    at += 2
                    continue
                quoted = False
            at += 1
        elif is_csv and field_start and byte == b'"':
            quoted, field_start = True, False
            at += 1
        elif is_csv and byte == b",":
            field_start = True
            at += 1
        elif byte == b"\n" or (cr_ends and byte == b"\r"):
            at += 2 if data[at : at + 2] == b"\r\n" else 1
            out.append(data[start:at])
            start, field_start = at, True
        else:
            field_start = False
            at += 1
    if start < len(data):
        out.append(data[start:])
    return out, quoted


def stored(record: bytes) -> bytes:
    """A record as routing stores it: without its LF, or its lone CR (a CRLF's CR stays)."""
    return record.removesuffix(b"\n") if record.endswith(b"\n") else record.removesuffix(b"\r")


class CountingReader(io.BytesIO):
    """A file that counts the bytes handed out: what a reader has had to hold at most."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.handed = 0

    def read(self, size: int | None = -1, /) -> bytes:
        piece = super().read(size)
        self.handed += len(piece)
        return piece


def blocks_of(data: bytes, is_csv: bool, read_size: int, header: bool = False) -> list[bytes]:
    framing = framing_of("," if is_csv else None)
    reader = RecordBlocks(io.BytesIO(data), framing, "f", 1 << 30, read_size)
    out = []
    if header:
        first = reader.first_record()
        assert first is not None
        out.append(first[0] + b"\n")
    offset = reader.offset
    for block, _lines, before in reader.blocks():
        assert before == offset
        offset += len(block)
        out.append(block)
    return out


RECORD_BYTES = st.lists(
    st.sampled_from([b"a", b",", b'"', b"\n", b"\r", b"\r\n", b'""', b',"', b'",']), max_size=80
)


@settings(max_examples=400, deadline=None)
@given(parts=RECORD_BYTES, is_csv=st.booleans(), read_size=st.integers(1, 9))
def test_blocks_hold_whole_records_at_any_read_size(
    parts: list[bytes], is_csv: bool, read_size: int
) -> None:
    data = b"".join(parts)
    blocks = blocks_of(data, is_csv, read_size)
    assert b"".join(blocks) == data
    expected = reference_records(data, is_csv)
    got = [record for block in blocks for record in reference_records(block, is_csv)]
    assert got == expected  # no block ends inside a record


@settings(max_examples=300, deadline=None)
@given(parts=RECORD_BYTES, target=st.integers(1, 12))
def test_spool_chunks_end_at_the_last_record_end_within_the_target(
    parts: list[bytes], target: int
) -> None:
    for is_csv in (False, True):
        framed, left_open = reference_scan(b"".join(parts), is_csv)
        if left_open:
            continue  # a bad record: routing never writes it to a spool
        # as routing stores them: each record without its LF or lone CR, then a LF
        records = [stored(r) for r in framed]
        spool = b"".join(r + b"\n" for r in records)
        framing = stored_framing("," if is_csv else None)
        offset = 0
        while offset < len(spool):
            buf, cut, count = read_records_chunk(io.BytesIO(spool), offset, target, framing)
            ends, at = [], offset
            for r in reference_records(spool[offset:], is_csv, cr_ends=False):
                at += len(r)
                ends.append(at - offset)
            # read `target` bytes at a time until one holds a record end: cut at the last one
            read = -(-ends[0] // target) * target
            want = [e for e in ends if e <= read][-1]
            assert cut == want and buf[:cut] == spool[offset : offset + cut]
            assert count == len(reference_records(buf[:cut], is_csv, cr_ends=False))
            offset += cut


def test_a_csv_header_then_records_across_reads() -> None:
    data = b'\n\nid,"a\nb"\n1,"x\n""y"""\n2,z'
    blocks = blocks_of(data, True, 3, header=True)
    assert blocks[0] == b'id,"a\nb"\n'
    assert b"".join(blocks[1:]) == b'1,"x\n""y"""\n2,z'


def test_a_line_without_a_line_feed_is_scanned_in_linear_time() -> None:
    """16 MiB with no line feed, read 4 KiB at a time: joining and scanning the whole so far
    at every read (as routing once did) takes minutes; one pass takes a fraction of a second."""
    line = b"x" * (16 * MiB)
    started = time.monotonic()
    reader = RecordBlocks(io.BytesIO(line), framing_of(None), "f", 32 * MiB, 4 * KiB)
    blocks = list(reader.blocks())
    assert time.monotonic() - started < 5
    assert blocks == [(line, 0, 0)]


def test_lines_inside_an_open_csv_quote_are_scanned_in_linear_time() -> None:
    """A quoted field of 200,000 lines, read 64 KiB at a time: each read ends inside quotes.
    Recounting quotes from the start for every line feed was quadratic."""
    field = b"line\n" * 200_000
    data = b'id,"' + field + b'"\n2,z\n'
    started = time.monotonic()
    blocks = blocks_of(data, True, 64 * KiB)
    assert time.monotonic() - started < 5
    assert b"".join(blocks) == data
    assert [r for b in blocks for r in reference_records(b, True)] == [data[:-4], b"2,z\n"]


@pytest.mark.parametrize(
    ("data", "is_csv", "line", "offset"),
    [
        (b'{"id": 1}\n' + b"y" * (3 * MiB), False, 2, 10),  # no line feed at all
        (b'{"id": 1}\n\n' + b"y" * (3 * MiB) + b"\n{}\n", False, 3, 11),  # too long, then ends
        (b'id,v\n1,a\n2,"never closed\n' + b"z\n" * (2 * MiB), True, 3, 9),  # stray quote
    ],
    ids=["no-line-feed", "long-line", "open-quote"],
)
def test_a_record_over_the_limit_is_refused_once_the_limit_is_read(
    data: bytes, is_csv: bool, line: int, offset: int
) -> None:
    limit, read_size = 1 * MiB, 64 * KiB
    fh = CountingReader(data)
    reader = RecordBlocks(fh, framing_of("," if is_csv else None), "src/a.f", limit, read_size)
    with pytest.raises(RecordTooLargeError) as caught:
        if is_csv:
            reader.first_record()
        for _ in reader.blocks():
            pass
    error = caught.value
    assert (error.path, error.line, error.offset, error.limit) == ("src/a.f", line, offset, limit)
    assert str(error).startswith(f"src/a.f:{line}: the record starting at byte {offset:,} ")
    assert "max_record_size (1,048,576 bytes)" in str(error)
    assert fh.handed <= offset + limit + 2 * read_size  # held: the record so far, one read
    assert pickle.loads(pickle.dumps(error)).args == error.args  # from routing processes
    if is_csv:  # named where the quote opened
        assert isinstance(error, UnclosedQuoteError)
        assert (error.quote_line, error.quote_offset) == (3, 11)
        assert "its quoted field opened at line 3, byte 11 never closes" in str(error)


def test_a_record_over_the_limit_inside_one_block_is_refused_exactly() -> None:
    records = b'{"user_id": 1}\n' + b'{"user_id": 2, "pad": "' + b"p" * 2000 + b'"}\n'
    task = BlockTask(
        records,
        "jsonl",
        "user_id",
        None,
        ",",
        4,
        "src/a.jsonl",
        7,
        offset_before=100,
        quarantine=True,
        max_record=1 * KiB,
    )
    with pytest.raises(RecordTooLargeError) as caught:
        route_block(task)  # quarantine sets bad records aside, never an oversize one
    assert (caught.value.line, caught.value.offset, caught.value.size) == (9, 115, 2025)
    assert "is 2,025 bytes" in str(caught.value)


def test_routing_stops_at_an_oversize_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route, "BLOCK_BYTES", 4 * KiB)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_bytes(b"\n" + b"h" * (64 * KiB) + b"\n1\n")
    spec = RecordsSpec("d", 1, "csv", "h", 2, LocalSource(src), max_record_size=16 * KiB)
    refused = pytest.raises(RecordTooLargeError, match=r"a\.csv:2: the record starting at byte 1 ")
    with refused:
        spool_source(spec, tmp_path / "spool", buffer_budget=1 * MiB)


def test_a_chunk_written_by_quote_parity_framing_still_splits_into_its_records() -> None:
    """Earlier versions framed `27" monitor` rows by quote parity: their chunks split back
    into the records their manifests count; new chunks split by the field-aware rule."""
    chunk = b'1,27" monitor\n2,x"\n3,y\n'
    framing = stored_framing(",")
    assert split_records(chunk, framing, 3) == [b'1,27" monitor', b'2,x"', b"3,y"]
    assert split_records(chunk, framing, 2) == [b'1,27" monitor\n2,x"', b"3,y"]
    with pytest.raises(TamperedError):
        split_records(b'1,"open\n', framing, 1)
