"""Framing stays linear on the shapes that once hung routing: a stray quote in a large CSV, a
quoted field of many line feeds across every read boundary, and a quote that never closes,
refused within the max_record_size bound, naming where it opened. Sizes are smaller than in
bench/framing.py (which times 25 / 50 / 100 MiB) and reads far smaller than routing's, so a
quadratic scan would blow the timeout."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from migrator.errors import BadRecordError, UnclosedQuoteError
from migrator.keys.datakey import DataKey
from migrator.records.blocks import RecordBlocks
from migrator.records.framing import framing_of, stored_framing
from migrator.sizes import KiB, MiB
from migrator.sources.local import LocalSource
from migrator.state.db import StateDB
from migrator.write import route
from migrator.write.route import RecordsSpec, spool_source


def route_file(root: Path, data: bytes, *, max_record: int = 64 * MiB) -> tuple[int, ...]:
    src = root / "src"
    src.mkdir()
    (src / "a.csv").write_bytes(data)
    spec = RecordsSpec("d", 1, "csv", "id", 2, LocalSource(src), max_record_size=max_record)
    with StateDB.sqlite_file(root / "state.sqlite") as state:
        state.bind_dataset_key("d", DataKey(bytes(32)))  # the checkpoint is sealed
        return spool_source(spec, root / "spool", buffer_budget=4 * MiB)


@pytest.mark.timeout(60)
def test_a_stray_quote_in_a_large_csv_is_an_ordinary_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route, "BLOCK_BYTES", 64 * KiB)
    rows = [b"%d,plain row %d" % (i, i) for i in range(400_000)]
    rows[1234] = b'1234,27" monitor'
    rows[300_000] = b'300000,5" floppy "boxed"'  # quotes, none at a field's start
    data = b"id,item\n" + b"\n".join(rows) + b"\n"
    sizes = route_file(tmp_path, data)
    spooled = b"".join((tmp_path / "spool" / f"s{s:05d}.spool").read_bytes() for s in range(2))
    assert sum(sizes) == len(data) - len(b"id,item\n")
    assert sorted(spooled.split(b"\n")[:-1]) == sorted(rows)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("read_size", [4 * KiB, 4 * KiB + 1, 64 * KiB - 3])
def test_a_1mib_quoted_field_of_line_feeds_across_every_read_boundary(read_size: int) -> None:
    """Fields of 1 MiB (then a byte longer each time), so the reads end at every place in
    them; each record is framed whole."""
    framing = framing_of(",")
    rows = [b'%d,"%s"' % (i, b"line\n" * (MiB // 5) + b"x" * i) for i in range(6)]
    data = b"id,text\n" + b"\r\n".join(rows) + b"\r\n"
    reader = RecordBlocks(io.BytesIO(data), framing, "f", 2 * MiB, read_size)
    assert reader.first_record() == (b"id,text", 1)
    records = [r for block, _, _ in reader.blocks() for r in framing.split(block)[0]]
    assert records == [row + b"\r" for row in rows]


@pytest.mark.timeout(60)
def test_a_quote_that_never_closes_is_named_where_it_opened_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route, "BLOCK_BYTES", 16 * KiB)
    rows = [b"%d,row" % i for i in range(100)]
    rows[10] = b'10,"opens here'
    data = b"id,v\n" + b"\n".join(rows) + b"\n" + b"9,tail\n" * (3 * MiB // 7)
    offset = len(b"id,v\n") + sum(len(r) + 1 for r in rows[:10])
    with pytest.raises(UnclosedQuoteError) as caught:
        route_file(tmp_path, data, max_record=1 * MiB)
    error = caught.value
    assert (error.line, error.offset) == (12, offset)
    assert (error.quote_line, error.quote_offset) == (12, offset + 3)
    assert f"quoted field opened at line 12, byte {offset + 3:,} never closes" in str(error)


def test_a_quote_left_open_at_the_end_of_a_short_file_is_a_bad_record_naming_it(
    tmp_path: Path,
) -> None:
    data = b'id,v\n1,a\n2,"open\n3,c\n'
    with pytest.raises(
        BadRecordError, match=r"a\.csv:3: CSV quoted field opened at line 3, byte 11"
    ):
        route_file(tmp_path, data)


@pytest.mark.timeout(60)
def test_a_csv_of_1mib_quoted_fields_of_line_feeds_routes_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through routing, read 64 KiB + 1 at a time: each 1 MiB field spans many reads."""
    monkeypatch.setattr(route, "BLOCK_BYTES", 64 * KiB + 1)
    rows = [b'%d,"%s"' % (i, b"\n" * (MiB + i * 7919)) for i in range(8)]
    sizes = route_file(tmp_path, b"id,text\n" + b"\n".join(rows) + b"\n")
    spooled = b"".join((tmp_path / "spool" / f"s{s:05d}.spool").read_bytes() for s in range(2))
    assert sum(sizes) == sum(len(r) + 1 for r in rows)
    assert sorted(stored_framing(",").split(spooled)[0]) == sorted(rows)


def test_bytes_after_a_closing_quote_make_a_bad_record_framed_to_its_line_end(
    tmp_path: Path,
) -> None:
    """`"a"b` is framed as the csv module reads it (the record ends at its line end, so the
    rows after it are untouched) and refused as a bad record, named."""
    data = b'id,v\n1,a\n2,"a"b\n3,c\n'
    with pytest.raises(BadRecordError, match=r"a\.csv:3: unreadable CSV row .*byte 9\."):
        route_file(tmp_path, data)
