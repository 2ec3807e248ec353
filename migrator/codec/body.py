"""Typed reads of a sealed JSON body (manifests, generation records).

The body was authenticated before it is read, so a value of the wrong shape means the writer
was broken or the data key leaked; either way it is a TamperedError naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from migrator.errors import TamperedError, UnknownVersionError

U32 = 2**32 - 1
U64 = 2**64 - 1
HEX128 = re.compile(r"[0-9a-f]{32}")


class BodyReader:
    """Turns decoded JSON into typed values; anything off is a TamperedError naming the field."""

    what = "body"  # what the errors call the document

    def __init__(self, object_key: str | None) -> None:
        self.object_key = object_key

    def bad(self, message: str) -> TamperedError:
        return TamperedError(f"malformed {self.what}: {message}", object_key=self.object_key)

    def document(self, body: bytes, fmt: str, version: int) -> object:
        """The parsed body; a well-formed version this build does not know is named as such
        before the schema is checked (a newer writer's fields would look like tampering)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise self.bad(f"not JSON: {exc}") from None
        if isinstance(doc, dict) and doc.get("format") == fmt:
            found = doc.get("version")
            if type(found) is int and found != version:
                raise UnknownVersionError(
                    f"{self.what} version {found} is not supported (this build reads {version})",
                    object_key=self.object_key,
                )
        return doc

    def fields(self, obj: object, allowed: frozenset[str], where: str) -> Mapping[str, Any]:
        if not isinstance(obj, dict):
            raise self.bad(f"{where} is not an object")
        if obj.keys() != allowed:
            missing = sorted(allowed - obj.keys())
            unknown = sorted(obj.keys() - allowed)
            raise self.bad(f"{where}: missing fields {missing}, unknown fields {unknown}")
        return obj

    def int_(self, obj: Mapping[str, Any], name: str, where: str, limit: int = U64) -> int:
        value = obj[name]
        # bool is an int subclass; a JSON true is not a count
        if type(value) is not int or not 0 <= value <= limit:
            raise self.bad(f"{where}.{name} is not an integer in 0..{limit}")
        return value

    def str_(self, obj: Mapping[str, Any], name: str, where: str) -> str:
        value = obj[name]
        if not isinstance(value, str):
            raise self.bad(f"{where}.{name} is not a string")
        return value

    def opt_str(self, obj: Mapping[str, Any], name: str, where: str) -> str | None:
        return None if obj[name] is None else self.str_(obj, name, where)

    def strings(self, obj: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
        value = obj[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.bad(f"{where}.{name} is not a list of strings")
        return tuple(value)

    def hex128(self, obj: Mapping[str, Any], name: str, where: str) -> str:
        value = self.str_(obj, name, where)
        if not HEX128.fullmatch(value):
            raise self.bad(f"{where}.{name} is not 32 lowercase hex digits")
        return value

    def opt_hex128(self, obj: Mapping[str, Any], name: str, where: str) -> str | None:
        return None if obj[name] is None else self.hex128(obj, name, where)
