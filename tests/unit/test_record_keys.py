"""Record keys (docs/FORMAT.md §1.4, "Key field"): any JSON integer and any non-empty string is a
key; a record orjson refuses or cannot read exactly is decided by the slower exact parse, which
keys every record orjson reads exactly as orjson does, so routing of existing data never moves.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.codec.digests import key_hash
from migrator.errors import BadRecordError
from migrator.records.json_key import MAX_DEPTH
from migrator.records.keys import CsvKeyReader, JsonKeyReader
from migrator.sharding import shard_of
from migrator.write.route_blocks import BlockTask, route_block

LONE = b', "z": "\\ud800"'  # an escaped lone surrogate: orjson refuses the whole record


def key_of(record: bytes, field: str = "id") -> bytes:
    return JsonKeyReader(field).key(record, "src.jsonl", 7)


def reason_of(record: bytes, field: str = "id") -> str:
    with pytest.raises(BadRecordError) as caught:
        key_of(record, field)
    assert (caught.value.path, caught.value.line) == ("src.jsonl", 7)
    return caught.value.reason


def with_lone_surrogate(record: bytes) -> bytes:
    """The same object with one more member orjson refuses, so the exact parse decides."""
    assert record.endswith(b"}")
    return record[:-1] + LONE + b"}"


def orjson_refuses(record: bytes) -> bool:
    try:
        orjson.loads(record)
    except orjson.JSONDecodeError:
        return True
    return False


# (record, its key bytes, shard of 64, key hash's first 8 bytes), computed by the release before
# big integers and lone surrogates were read: the keys that worked then must not move.
GOLDEN = (
    (b'{"id":"u000000042"}', b"u000000042", 56, "4558d022077fc3c3"),
    (b'{"id":42}', b"42", 17, "b080ccd44c7163e9"),
    (b'{"id":"42"}', b"42", 17, "b080ccd44c7163e9"),
    (b'{"id":-9223372036854775808}', b"-9223372036854775808", 17, "7d9531183a146e30"),
    (b'{"id":18446744073709551615}', b"18446744073709551615", 55, "20dbdeb09a959e7f"),
    (b'{"id":-0}', b"0", 21, "ce8f15881282a400"),
    (b'{"id":"Zo\\u00eb \\ud83c\\udfac"}', "Zoë 🎬".encode(), 42, "8508af04e730139c"),
    ('{"id":"李雷"}'.encode(), "李雷".encode(), 15, "f4883f40344d7cf9"),
    (b'{"id":1,"id":"last"}', b"last", 47, "ee41d61042525444"),
    (b'{"prefs":{"id":"nested"},"id":"top"}', b"top", 47, "69fc91bf3565cbed"),
)


@pytest.mark.parametrize(("record", "key", "shard", "digest"), GOLDEN)
def test_keys_that_worked_before_keep_their_bytes_shard_and_hash_on_both_paths(
    record: bytes, key: bytes, shard: int, digest: str
) -> None:
    slow = with_lone_surrogate(record)
    assert orjson_refuses(slow)
    for read in (record, slow):
        got = key_of(read)
        assert got == key
        assert shard_of(got, 64) == shard
        assert key_hash(got).hex()[:16] == digest


@pytest.mark.parametrize(
    ("literal", "key"),
    [
        (b"18446744073709551616", b"18446744073709551616"),  # 2^64
        (b"340282366920938463463374607431768211456", b"340282366920938463463374607431768211456"),
        (b"-9223372036854775809", b"-9223372036854775809"),  # -2^63 - 1
        (b"-340282366920938463463374607431768211456", b"-340282366920938463463374607431768211456"),
        (b"9" * 5000, b"9" * 5000),  # beyond Python's int-to-text limit: kept as text
        (b"-0", b"0"),
        (b"0", b"0"),
    ],
)
def test_a_json_integer_of_any_size_is_a_key_in_decimal_ascii(literal: bytes, key: bytes) -> None:
    record = b'{"id": %s, "v": 1}' % literal
    assert key_of(record) == key
    assert key_of(with_lone_surrogate(record)) == key


@pytest.mark.parametrize("literal", [b"1e2", b"1E+2", b"1.0", b"-0.0", b"1.5", b"1e400", b"-1e999"])
def test_a_number_with_fraction_or_exponent_is_not_a_key(literal: bytes) -> None:
    record = b'{"id": %s}' % literal
    expected = "key field 'id' must be a non-empty string or an integer"
    assert reason_of(record) == expected
    assert reason_of(with_lone_surrogate(record)) == expected


def test_what_counts_as_the_same_key() -> None:
    assert key_of('{"id": "é"}'.encode()) == key_of(b'{"id": "\\u00e9"}') == b"\xc3\xa9"
    assert key_of(b'{"id": "\\ud83d\\ude00"}') == key_of('{"id": "😀"}'.encode())  # a pair
    assert key_of(b'{"id": 1}') == key_of(b'{"id": "1"}') == b"1"
    assert key_of(b'{"id": -0}') == key_of(b'{"id": 0}') == b"0"
    assert key_of(b'{"id": "-0"}') == b"-0"  # a string is its text
    assert key_of(b'{"id": "01"}') == b"01"
    assert key_of(b'{"id": "a", "id": 2, "id": "last"}') == b"last"  # the last member wins
    assert key_of(with_lone_surrogate(b'{"id": "a", "id": 2}')) == b"2"
    assert key_of(b'{"other": {"id": 9}, "id": 1}') == b"1"  # a nested member does not count


def test_a_lone_surrogate_elsewhere_leaves_the_key_to_be_read() -> None:
    for record in (
        b'{"id": "u1", "note": "\\ud800"}',
        b'{"note": "x\\udfffy", "id": "u1"}',
        b'{"id": "u1", "deep": [{"a": ["\\ud83d"]}], "tail": "\\ude00 \\ud800\\ud800"}',
        b'{"id": "u1", "\\ud800": 1}',  # in a member's name
    ):
        assert orjson_refuses(record)
        assert key_of(record) == b"u1"


def test_a_huge_number_elsewhere_leaves_the_key_to_be_read() -> None:
    for other in (b"1e999", b"-1e999", b"9" * 5000, b"123456789012345678901234567890.5e-3"):
        assert key_of(b'{"id": "u1", "n": %s}' % other) == b"u1"


def test_a_key_with_a_lone_surrogate_is_its_wtf8_bytes() -> None:
    assert key_of(b'{"id": "\\ud800"}') == b"\xed\xa0\x80"
    assert key_of(b'{"id": "a\\udfffb"}') == b"a\xed\xbf\xbfb"
    assert key_of(b'{"id": "\\ude00\\ud83d"}') == b"\xed\xb8\x80\xed\xa0\xbd"  # not a pair
    assert key_of(b'{"id": "\\ud800"}') != key_of(b'{"id": "\\udfff"}')


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b'{"id": 1, oops}', "Expecting property name enclosed in double quotes at byte 10"),
        (b'{"id": NaN}', "NaN is not JSON"),
        (b'{"id": 1, "x": Infinity}', "Infinity is not JSON"),
        (b'{"id": 1, "x": -Infinity}', "-Infinity is not JSON"),
        (b'{"id": 01}', "Expecting ',' delimiter at byte 8"),
        (b'{"id": 1} x', "Extra data at byte 10"),
        (b"{'id': 1}", "Expecting property name enclosed in double quotes at byte 1"),
        (b'{"id": "a\tb"}', "Invalid control character at byte 9"),
        (b'\xef\xbb\xbf{"id": 1}', "Expecting value at byte 0"),
        (b'{"id": "\xc3\xa9\\x"}', "Invalid \\escape at byte 10"),
        (b'{"id": 1', "Expecting ',' delimiter at byte 8"),
    ],
)
def test_what_is_not_json_is_still_refused_by_name(record: bytes, reason: str) -> None:
    assert reason_of(record).startswith(f"malformed JSON ({reason}")
    # A lone surrogate before the break: the reason still names the break, not the surrogate.
    shifted = reason_of(record.replace(b'"id"', b'"z": "\\ud800", "id"', 1))
    assert shifted.startswith(f"malformed JSON ({reason.split(' at byte')[0]}")


@pytest.mark.parametrize(
    ("record", "byte"),
    [
        (b'{"id": "u-\xff"}', "0xff at offset 10"),
        (b'{"id": "\xed\xa0\x80"}', "0xed at offset 8"),  # a surrogate as raw bytes: not UTF-8
        (b'{"id": "\xc0\x80"}', "0xc0 at offset 8"),
    ],
)
def test_bytes_that_are_not_utf8_are_refused_at_their_offset(record: bytes, byte: str) -> None:
    assert reason_of(record) == f"not UTF-8 (byte {byte} of the record)"
    assert reason_of(with_lone_surrogate(record)) == f"not UTF-8 (byte {byte} of the record)"


def test_records_without_a_key_are_refused_as_before() -> None:
    assert reason_of(b'{"name": 1}') == "key field 'id' is missing or null"
    assert reason_of(with_lone_surrogate(b'{"id": null}')) == "key field 'id' is missing or null"
    for value in (b'""', b"true", b"[1]", b'{"a": 1}'):
        assert reason_of(b'{"id": %s}' % value).startswith("key field 'id' must be")
        assert reason_of(with_lone_surrogate(b'{"id": %s}' % value)).startswith("key field")
    assert reason_of(b'["id", 1]') == "record is not a JSON object"
    assert reason_of(b'["\\ud800"]') == "record is not a JSON object"


def nested(depth: int) -> bytes:
    """An object holding the key, a lone surrogate and arrays nested `depth` levels in all."""
    return b'{"id": 1, "z": "\\ud800", "n": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_nesting_is_read_to_the_same_depth_on_both_paths() -> None:
    plain = nested(MAX_DEPTH).replace(b'"\\ud800"', b"0")
    assert key_of(plain) == b"1"  # orjson reads MAX_DEPTH levels ...
    assert orjson_refuses(nested(MAX_DEPTH + 1).replace(b'"\\ud800"', b"0"))  # ... not one more
    assert key_of(nested(MAX_DEPTH)) == b"1"
    expected = f"malformed JSON (arrays and objects nested deeper than {MAX_DEPTH} levels)"
    assert reason_of(nested(MAX_DEPTH + 1)) == expected
    assert reason_of(nested(50_000)) == expected
    limit = sys.getrecursionlimit()
    assert reason_of(nested(MAX_DEPTH + 1)) == expected
    assert sys.getrecursionlimit() == limit  # set back after each slow parse


def test_slow_parses_in_threads_each_get_the_full_depth() -> None:
    results: list[bytes | str] = []

    def work() -> None:
        for _ in range(20):
            results.append(key_of(nested(MAX_DEPTH)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"1"] * 80


# --- both paths against an oracle: Python's json module as the spec reads it ------------------

SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "a\ud800b"])
TEXT = st.text(max_size=6) | SURROGATES
KEYS = (
    st.integers(-(2**70), 2**70)
    | st.sampled_from([2**64, 2**64 - 1, -(2**63), -(2**63) - 1, 2**128, 0])
    | TEXT
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.none()
    | st.booleans()
)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def expected_key(value: Any) -> bytes | None:
    """§1.4 read directly off the value the record holds; None: not a key."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, str) and value:
        return value.encode("utf-8", "surrogatepass")
    return None


@settings(max_examples=300, deadline=None)
@given(
    key=KEYS,
    before=st.dictionaries(TEXT, VALUES, max_size=3),
    after=st.dictionaries(TEXT, VALUES, max_size=3),
    ascii_only=st.booleans(),
)
def test_any_record_is_keyed_as_the_spec_reads_its_value(
    key: Any, before: dict[str, Any], after: dict[str, Any], ascii_only: bool
) -> None:
    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=ascii_only)

    members = [
        *(f"{dump(k)}: {dump(v)}" for k, v in before.items() if k != "id"),
        f'"id": {dump(key)}',
        *(f"{dump(k)}: {dump(v)}" for k, v in after.items() if k != "id"),
    ]
    # Raw text as UTF-8; a lone surrogate, which UTF-8 cannot hold, as its JSON escape.
    record = ("{" + ", ".join(members) + "}").encode("utf-8", "backslashreplace")
    expected = expected_key(key)
    if expected is None:
        with pytest.raises(BadRecordError, match="key field 'id'"):
            key_of(record)
    else:
        assert key_of(record) == expected


# --- routing keeps the bytes; CSV keys are bytes ----------------------------------------------


def test_routing_keeps_records_orjson_refuses_byte_for_byte() -> None:
    records = [
        b'{"user_id": 18446744073709551616, "note": "\\ud800"}',
        b'{"user_id": "u1", "n": ' + b"7" * 400 + b', "f": 1e999}',
        b'{"user_id": "\\udfff", "raw": "\xc3\xa9"}',
        b'{"user_id": -9223372036854775809}\r',
    ]
    task = BlockTask(b"\n".join(records) + b"\n", "jsonl", "user_id", None, ",", 4, "s.jsonl", 0)
    result = route_block(task)
    assert result.bad == []
    spooled = b"".join(bytes(run[1]) for run in result.runs)
    assert sorted(spooled.split(b"\n")[:-1]) == sorted(records)
    for shard, run, _, _ in result.runs:
        for record in bytes(run).split(b"\n")[:-1]:
            assert shard_of(JsonKeyReader("user_id").key(record, "s.jsonl", 1), 4) == shard


def test_a_csv_key_that_looks_like_a_huge_integer_is_its_bytes() -> None:
    reader = CsvKeyReader("id", b"id,name", ",", "s.csv:1")
    for key in (
        b"18446744073709551616",
        b"-9223372036854775809",
        b"1" + b"0" * 3000,
        b"-0",
        b"007",
    ):
        assert reader.key(key + b",x", "s.csv", 2) == key
        assert reader.key(b'"' + key + b'","x, y"', "s.csv", 2) == key
