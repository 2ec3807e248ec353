"""Shard keys of a whole block of JSONL records at once, in native code, for the common case.

Routing used to read each record's key in a Python loop (a full orjson parse, then checks in
Python): about 10 µs a record, most of it Python per record. Here a block's keys come from one
native pass per record (msgspec decodes a JSON object reading only the key member and skipping
the rest; one compiled pattern matches a whole CSV row) driven by `map`, with no Python frame
per record. Whatever these cannot decide (a record they refuse, a key that is missing, empty
or of another type) is None, and the caller decides it with the exact per-record reader of
records/keys.py. So a key given here is always the one that reader gives
(tests/unit/test_route_block_identity.py holds them side by side on hostile records). CSV:
records/csv_block.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from operator import attrgetter
from typing import Any

import msgspec

Keys = list[bytes | None]
_KEY = attrgetter("k")


@lru_cache(maxsize=16)
def _json_decoder(field: str) -> msgspec.json.Decoder[Any]:
    """A decoder of one object member, `field`, that skips every other member unread.

    str or int only: msgspec refuses a float, a bool, an array, a string with a lone surrogate,
    malformed JSON, and nesting deeper than it reads, all of which the exact reader decides."""
    shape = msgspec.defstruct("KeyOnly", [("k", str | int | None, None)], rename={"k": field})
    return msgspec.json.Decoder(shape)


def json_block_keys(records: Sequence[bytes], field: str, block: bytes) -> Keys:
    """The key bytes of each JSONL record (a string as UTF-8, an integer in decimal), or None
    where the exact reader must decide. `block`: the bytes the records were framed from.

    msgspec does not check the UTF-8 of what it skips (a member name, another member's
    string), so the block's UTF-8 is checked here, in one pass for the whole block."""
    decode = _json_decoder(field).decode
    try:
        if not block.isascii():
            list(map(bytes.decode, records))  # a record at a time: narrower strings than one
    except UnicodeDecodeError:
        docs: list[Any] = [_decoded_or_none(decode, record) for record in records]
    else:
        try:
            docs = list(map(decode, records))
        except (msgspec.MsgspecError, RecursionError):  # RecursionError: deeper than it reads
            docs = [_decoded_or_none(decode, record) for record in records]
    values: list[Any]
    if None in docs:
        values = [None if doc is None else doc.k for doc in docs]
    else:
        values = list(map(_KEY, docs))
    kinds = set(map(type, values))
    if kinds == {str} and "" not in values:
        return list(map(_utf8, values))
    return [_key_bytes(value) for value in values]


def _decoded_or_none(decode: Callable[[bytes], Any], record: bytes) -> Any:
    try:
        record.decode()
        return decode(record)
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
        return None


def _utf8(value: str) -> bytes | None:
    return value.encode()


def _key_bytes(value: object) -> bytes | None:
    if type(value) is str and value:
        return value.encode()
    if type(value) is int:
        try:
            return str(value).encode()
        except ValueError:  # more digits than int->str converts: the exact reader keeps text
            return None
    return None
