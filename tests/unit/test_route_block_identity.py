"""The block router (keys read a block at a time) gives byte for byte what the per-record path
gives: the same shard runs, digest entries and bad records, or the same error, on hostile
input (unicode and escaped keys, duplicate keys, huge records, CSV quoting, bad lines)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.errors import BadRecordError, RecordTooLargeError
from migrator.records.block_keys import json_block_keys
from migrator.records.csv_block import csv_block_keys, split_quoted
from migrator.records.framing import framing_of
from migrator.records.keys import CsvKeyReader, JsonKeyReader
from migrator.write.route_blocks import BlockResult, BlockTask, route_block, route_block_per_record

HEADER = b"id,name,note"

JSON_RECORDS = [
    b'{"user_id":"a","n":1}',
    b'{"user_id":"a","user_id":"b"}',  # duplicate member: the last wins
    b'{"user\\u005fid":"x","user_id":"y"}',  # an escaped member name
    b'{"user_id":"y","user\\u005fid":"x"}',
    b'{"user_id":"\\u00e9t\\u00e9"}',
    b'{"user_id":"\xc3\xa9t\xc3\xa9"}',
    b'{"user_id":"\\ud800"}',  # a lone surrogate: WTF-8 bytes
    b'{"user_id":"\\ud83d\\ude00","x":"\\udfff"}',
    b'{"user_id":"a\xff"}',  # not UTF-8
    b'{"user_id":12345678901234567890123456789}',
    b'{"user_id":-0}',
    b'{"user_id":-9223372036854775809}\r',
    b'{"user_id":' + b"9" * 5000 + b"}",
    b'{"user_id":1e5}',
    b'{"user_id":1.0}',
    b'{"user_id":true}',
    b'{"user_id":""}',
    b'{"user_id":null}',
    b'{"nested":{"user_id":"inner"}}',
    b'{"nested":{"user_id":"inner"},"user_id":"outer"}',
    b"[1,2]",
    b'"user_id"',
    b"",
    b"   ",
    b"\t\r",
    b'{"user_id":"a"} trailing',
    b'{"user_id":"a",}',
    b'{"x":NaN,"user_id":"a"}',
    b'{"x":1e999,"user_id":"big"}',
    b'{"x":' + b"[" * 1023 + b"]" * 1023 + b',"user_id":"deep"}',
    b'{"x":' + b"[" * 1100 + b"]" * 1100 + b',"user_id":"deeper"}',
    b'  {"user_id" : "spaced" }  ',
    b'{"user_id":"\\u0000"}',
    b'{"user_id":"ctl\x01"}',
    b'{"user_id":"k","blob":"' + b"z" * 300_000 + b'"}',
]

CSV_ROWS = [
    b"1,alice,plain",
    b'2,"bob, jr",quoted delimiter',
    b'"3",carol,quoted key',
    b'"4""x",dave,doubled quote in key',
    b'5,"multi\nline",line feed inside',
    b'6,"crlf\r\ninside",crlf inside',
    b'7,27" monitor,stray quote',
    b'8,"closed"after,text after a quote',
    b"9,too,many,fields",
    b"10,too few",
    b",empty,key",
    b'"",empty,quoted key',
    b"",
    b"   ",
    b"11,\xff\xfe,not utf-8",
    b"12\xff,raw,key bytes",
    b"13,tail,crlf\r",
    b"14,nul\x00,byte",
    b'15,"a""b",doubled',
    b"18446744073709551616,big,integer-like key",
    b"16,long," + b"w" * 200_000,
    b'"17',
]


def _task(data: bytes, fmt: str, **kw: object) -> BlockTask:
    header = HEADER if fmt == "csv" else None
    key = "id" if fmt == "csv" else "user_id"
    options: dict[str, object] = {
        "keep_records": True,
        "offset_before": 100,
        "quarantine": False,
        "max_record": 1 << 20,
    }
    options.update(kw)
    return BlockTask(data, fmt, key, header, ",", 7, "src/f", 3, **options)  # type: ignore[arg-type]


def _outcome(task: BlockTask, route: object) -> tuple[str, object]:
    try:
        result: BlockResult = route(task)  # type: ignore[operator]
    except (BadRecordError, RecordTooLargeError) as exc:
        return type(exc).__name__, str(exc)
    runs = [(s, bytes(r), bytes(d), n) for s, r, d, n in result.runs]
    return "ok", (runs, result.bad)


def assert_same(data: bytes, fmt: str, **kw: object) -> None:
    for quarantine in (False, True):
        for keep in (True, False):
            task = _task(data, fmt, quarantine=quarantine, keep_records=keep, **kw)
            assert _outcome(task, route_block) == _outcome(task, route_block_per_record)


@pytest.mark.parametrize("index", range(len(JSON_RECORDS)))
def test_each_hostile_json_record_routes_as_the_per_record_path(index: int) -> None:
    record = JSON_RECORDS[index]
    assert_same(b'{"user_id":"before"}\n' + record + b'\n{"user_id":"after"}\n', "jsonl")


def test_a_block_of_every_hostile_json_record_routes_as_the_per_record_path() -> None:
    assert_same(b"\n".join(JSON_RECORDS) + b"\n", "jsonl")
    assert_same(b"\r\n".join(JSON_RECORDS), "jsonl")  # CRLF, the last without its end
    assert_same(b"\r".join(JSON_RECORDS) + b"\r", "jsonl")  # lone CRs


@pytest.mark.parametrize("index", range(len(CSV_ROWS)))
def test_each_hostile_csv_row_routes_as_the_per_record_path(index: int) -> None:
    assert_same(b"0,first,row\n" + CSV_ROWS[index] + b"\n99,last,row\n", "csv")


def test_a_block_of_every_hostile_csv_row_routes_as_the_per_record_path() -> None:
    good = [row for row in CSV_ROWS if row != b'"17']  # an unclosed quote runs to the end
    assert_same(b"\n".join(good) + b"\n", "csv")
    assert_same(b"\r\n".join(CSV_ROWS), "csv")  # ends in an unclosed quote


def test_an_oversize_record_is_refused_as_before() -> None:
    data = b"\n".join(JSON_RECORDS) + b"\n"
    assert_same(data, "jsonl", max_record=1000)
    huge = b'{"user_id":"a"}\n{"user_id":"b","pad":"' + b"p" * 2000 + b'"}\n'
    assert_same(huge, "jsonl", max_record=1000)
    assert _outcome(_task(huge, "jsonl", max_record=1000), route_block)[0] == (
        "RecordTooLargeError"
    )


def test_other_delimiters_and_key_columns() -> None:
    for delimiter, sep in ((";", b";"), ("\t", b"\t"), ("§", "§".encode())):
        header = sep.join([b"name", b"id", b"note"])
        rows = [
            sep.join([b"a", b"1", b"x"]),
            sep.join([b'"q' + sep + b'"', b"2", b"y"]),
            sep.join([b"c", b" ", b"z"]),
            sep.join([b" ", b" ", b" "]),
            sep.join([b"d", b'"3"', b"w"]),
            sep.join([b"e", b"4"]),
        ]
        data = b"\n".join(rows) + b"\n"
        for quarantine in (False, True):
            task = BlockTask(data, "csv", "id", header, delimiter, 5, "f", 0, True, 0, quarantine)
            assert _outcome(task, route_block) == _outcome(task, route_block_per_record)


def test_the_fast_readers_only_give_keys_the_exact_readers_give() -> None:
    reader = JsonKeyReader("user_id")
    for record, key in zip(
        JSON_RECORDS,
        json_block_keys(JSON_RECORDS, "user_id", b"\n".join(JSON_RECORDS)),
        strict=True,
    ):
        if key is not None:
            assert reader.key(record, "f", 1) == key
    csv_reader = CsvKeyReader("id", HEADER, ",", "f:1")
    for row, key in zip(
        CSV_ROWS, csv_block_keys(CSV_ROWS, None, 0, 3, ",", b"\n".join(CSV_ROWS)), strict=True
    ):
        if key is not None:
            assert csv_reader.key(row, "f", 1) == key


# --- generated blocks -----------------------------------------------------------------------

_text = st.text(
    alphabet=st.sampled_from([*'ab"\\,\n\r \t{}[]:é\x00', "\ud800", "\U0001f600"]),
    max_size=12,
)
_json_value = st.one_of(
    _text,
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)


def _json_record(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(st.tuples(st.sampled_from(["user_id", "x", "user_id "]), _json_value)))
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in members) + "}"
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):  # damage it: cut, or splice a byte in
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"", b'"', b"\xff", b",", b"}", b" "])) + raw[at:]
    return raw


@st.composite
def json_blocks(draw: st.DrawFn) -> bytes:
    count = draw(st.integers(1, 12))
    lines = [_json_record(draw) for _ in range(count)]
    end = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    return end.join(lines) + draw(st.sampled_from([end, b""]))


@st.composite
def csv_blocks(draw: st.DrawFn) -> bytes:
    field = st.text(alphabet=st.sampled_from(list('ab",\n\r x\x00é')), max_size=6)
    rows = draw(st.lists(st.lists(field, min_size=1, max_size=4), min_size=1, max_size=10))
    out = []
    for row in rows:
        cells = []
        for cell in row:
            quote = draw(st.sampled_from(["none", "quote", "raw"]))
            if quote == "quote":
                cells.append('"' + cell.replace('"', '""') + '"')
            else:
                cells.append(cell if quote == "raw" else cell.replace('"', "").replace("\n", ""))
        out.append(",".join(cells))
    return "\n".join(out).encode() + draw(st.sampled_from([b"\n", b"", b"\r\n"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_blocks())
def test_generated_jsonl_blocks_route_as_the_per_record_path(data: bytes) -> None:
    assert_same(data, "jsonl")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_blocks())
def test_generated_csv_blocks_route_as_the_per_record_path(data: bytes) -> None:
    assert_same(data, "csv")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_blocks())
def test_reading_by_quote_parity_frames_as_the_field_aware_framing(data: bytes) -> None:
    parsed = split_quoted(data, ",")
    if parsed is not None:
        records, bare = parsed
        assert framing_of(",").split(data) == (records, -1)
        assert len(bare) == len(records)
