"""The shard key of a JSONL record where orjson falls short: an exact parse by Python's json.

orjson is fast but narrower than RFC 8259: it refuses a string holding an escaped lone
surrogate (`"\\ud800"`, common in data written by JavaScript) and numbers beyond a double's
range, and reads an integer beyond 64 bits as a float. Routing needs only the key, so a record
orjson refuses or whose key it reads as a float is decided again by Python's json module, which
reads all of RFC 8259 and here keeps every integer as its decimal text, of any size. Both give
the same key bytes for every record orjson reads exactly (docs/FORMAT.md §1.4, "Key field"),
and the fast path (records/keys.py, JsonKeyReader) costs what it did.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, NoReturn

from migrator.errors import BadRecordError

MAX_DEPTH = 1024  # nesting of arrays and objects orjson reads; the slower parse reads as deep


class IntegerText(str):
    """A JSON integer as written (any size): its decimal text, never converted to an int."""

    __slots__ = ()


class _NotJson(ValueError):
    """A token Python's json module reads but JSON does not have (NaN, Infinity)."""


def _refuse_constant(name: str) -> NoReturn:
    raise _NotJson(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_int=IntegerText, parse_constant=_refuse_constant)
# The recursion limit is process-wide: one slow parse at a time sets and restores it.
_DEPTH_LOCK = threading.Lock()


def exact_json_key(record: bytes, field: str, path: str, line: int) -> bytes:
    """The key bytes of a JSONL record's top-level member `field`, read by the exact parse;
    `path` and `line` only name the record in errors (BadRecordError)."""
    doc = _parse_exact(record, path, line)
    if not isinstance(doc, dict):
        raise BadRecordError(path, line, "record is not a JSON object")
    return key_bytes(doc.get(field), field, path, line)


def key_bytes(value: object, field: str, path: str, line: int) -> bytes:
    """A string: its UTF-8 bytes (an unpaired surrogate as its three bytes, as WTF-8 writes
    it); an integer: its decimal ASCII, `-0` as `0`."""
    if isinstance(value, IntegerText):
        return b"0" if value == "-0" else value.encode("ascii")
    if isinstance(value, str) and value:
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    if value is None:
        raise BadRecordError(path, line, f"key field {field!r} is missing or null")
    raise BadRecordError(
        path, line, f"key field {field!r} must be a non-empty string or an integer"
    )


def _parse_exact(record: bytes, path: str, line: int) -> object:
    """The record read by Python's json module: UTF-8 text, RFC 8259, nested at most
    MAX_DEPTH levels, integers as IntegerText."""
    try:
        text = record.decode()
    except UnicodeDecodeError as bad:
        reason = f"not UTF-8 (byte 0x{record[bad.start]:02x} at offset {bad.start} of the record)"
        raise BadRecordError(path, line, reason) from None
    too_deep = f"malformed JSON (arrays and objects nested deeper than {MAX_DEPTH} levels)"
    try:
        with _DEPTH_LOCK:
            before = sys.getrecursionlimit()
            # Room for MAX_DEPTH levels however deep the caller's stack (at most `before`);
            # a document that still runs out of it is deeper, and _nesting() bounds the rest.
            sys.setrecursionlimit(before + MAX_DEPTH + 64)
            try:
                doc = _DECODER.decode(text)
            finally:
                sys.setrecursionlimit(before)
    except json.JSONDecodeError as exc:
        at = len(text[: exc.pos].encode())
        what = exc.msg.removesuffix(" at")  # "Invalid control character at", ...
        reason = f"malformed JSON ({what} at byte {at} of the record)"
    except _NotJson as exc:
        reason = f"malformed JSON ({exc})"
    except RecursionError:
        reason = too_deep
    else:
        # Deeper than MAX_DEPTH needs more brackets than that: most records skip the walk.
        if text.count("[") + text.count("{") <= MAX_DEPTH or _nesting(doc) <= MAX_DEPTH:
            return doc
        reason = too_deep
    raise BadRecordError(path, line, reason)


def _nesting(doc: object) -> int:
    """Levels of arrays and objects in a document, up to MAX_DEPTH + 1, level by level."""
    depth = 0
    level: list[Any] = [doc] if isinstance(doc, dict | list) else []
    while level and depth <= MAX_DEPTH:
        depth += 1
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return depth
