"""The framing (records/framing.py, records/blocks.py) against independent oracles:
Python's csv module for CSV (records and their fields agree on generated CSV, quoted fields
with delimiters, quotes, CRs and LFs, unquoted fields with stray quotes, every line end, read
at random buffer sizes) and, for JSONL, splitting by lines with orjson reading the records."""

from __future__ import annotations

import csv
import io

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.records.blocks import RecordBlocks
from migrator.records.framing import BOM, framing_of, stored_framing

LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])
TEXT = st.text(alphabet=st.sampled_from(list('ab,;"\n\r é')), max_size=12)


@st.composite
def csv_fields(draw: st.DrawFn, delimiter: str) -> str:
    """A field as a writer may write it: quoted (holding anything), or unquoted (no
    delimiter or line end; a `"` only after its first character, as in `27" monitor`)."""
    text = draw(TEXT)
    if draw(st.booleans()):
        return '"' + text.replace('"', '""') + '"'
    plain = "".join(c for c in text if c not in delimiter + "\r\n")
    return plain.lstrip('"')


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, str]:
    delimiter = draw(st.sampled_from([",", ";", "\t", "¦"]))
    rows, end = [], b""
    for _ in range(draw(st.integers(0, 8))):
        fields = draw(st.lists(csv_fields(delimiter), min_size=1, max_size=4))
        end = draw(LINE_ENDS)
        rows.append((delimiter.join(fields) or "x").encode() + end)
    data = b"".join(rows)
    if rows and draw(st.booleans()):  # no line end after the last record
        data = data[: len(data) - len(end)]
    return (BOM if draw(st.booleans()) else b"") + data, delimiter


def framed(data: bytes, delimiter: str | None, read_size: int) -> list[bytes]:
    """Records as routing frames them: blocks at `read_size`, then each block split."""
    framing = framing_of(delimiter)
    reader = RecordBlocks(io.BytesIO(data), framing, "f", 1 << 30, read_size)
    out: list[bytes] = []
    offset = len(BOM) if data.startswith(BOM) else 0  # a BOM is skipped, and counted
    for block, _lines, before in reader.blocks():
        assert before == offset
        offset += len(block)
        records, open_quote = framing.split(block)
        assert open_quote < 0
        out += records
    assert offset == len(data)  # every byte handed out once, in order
    return out


def fields_of(record: bytes, delimiter: str) -> list[str]:
    text = record.removesuffix(b"\r").decode()
    return next(csv.reader([text], delimiter=delimiter, strict=True))


@settings(max_examples=500, deadline=None)
@given(sample=csv_files(), read_size=st.integers(1, 17))
def test_csv_records_and_fields_agree_with_the_csv_module(
    sample: tuple[bytes, str], read_size: int
) -> None:
    data, delimiter = sample
    text = data.removeprefix(BOM).decode()
    expected = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)]
    records = framed(data, delimiter, read_size)
    got = [fields_of(r, delimiter) for r in records if r.strip(b"\r\n")]
    assert got == [row for row in expected if row]
    # stored as framed, each record then a LF: the chunk framing gives the same records back
    chunk = b"".join(r + b"\n" for r in records)
    assert stored_framing(delimiter).split(chunk) == (records, -1)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(alphabet='a\n\r"é\\ ', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(
    docs=st.lists(st.tuples(JSON, LINE_ENDS, st.sampled_from([b"", b"\n", b" \r\n"])), max_size=8),
    read_size=st.integers(1, 17),
    bom=st.booleans(),
)
def test_jsonl_records_are_the_lines_orjson_reads(
    docs: list[tuple[object, bytes, bytes]], read_size: int, bom: bool
) -> None:
    data = (BOM if bom else b"") + b"".join(orjson.dumps(d) + end + blank for d, end, blank in docs)
    records = framed(data, None, read_size)
    assert [orjson.loads(r) for r in records if r.strip()] == [d for d, _, _ in docs]
