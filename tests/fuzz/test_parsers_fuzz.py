"""Every parser of stored data, fed random, damaged and adversarial input, either parses or
raises one of the format's own errors naming the object key: never another exception or a hang.

Inputs, for each target of `targets.TARGETS`: (a) arbitrary bytes; (b) real objects with bytes
flipped, cut, added or spliced, and header fields rewritten, sometimes with the checksum and
commitment recomputed so the later checks see the damage; (c) crafted inner payloads (JSON
bodies with wrong types, huge numbers, missing or extra fields, deep nesting, bytes that are not
UTF-8) sealed under the right key and identity, so only the body parser stands in their way;
(d) chunks forged from docs/FORMAT.md with adversarial sizes and zstd frames.

A failure prints a `@reproduce_failure` blob; MIGRATOR_FUZZ_SCALE=10 runs ten times as many
examples.
"""

from __future__ import annotations

import copy
import json
import os
import re
import struct
from datetime import timedelta
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from migrator.errors import WrongKeyError
from tests.fuzz.targets import (
    KEY,
    OTHER_KEY,
    TARGETS,
    Target,
    check,
    forge_chunk,
    header_size,
    identity_bytes,
    reseal_header,
)

SCALE = float(os.environ.get("MIGRATOR_FUZZ_SCALE", "1"))

# A hang fails the test instead of stalling the suite (one test takes about a second).
pytestmark = pytest.mark.timeout(60 * max(1.0, SCALE))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=timedelta(seconds=5),
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def run(target: Target, data: bytes) -> None:
    """check(), and tally outcomes (--hypothesis-show-statistics) to see how deep inputs get."""
    error = check(target, data)
    if error is None:
        event("parsed")
    else:
        message = re.sub(r"\d+", "N", str(error).removeprefix(f"{target.object_key}: "))
        event(f"{type(error).__name__}: {' '.join(message.split()[:5])}")


def one_in(n: int, draw: st.DrawFn) -> bool:
    """True about once in n draws (hypothesis favours the bounds of st.integers: not `== 0`)."""
    return draw(st.integers(0, n - 1)) == n // 2


def ids(targets: tuple[Target, ...]) -> list[str]:
    return [t.name for t in targets]


WRAPPED = tuple(t for t in TARGETS if t.wrap is not None)
CHUNKS = tuple(t for t in TARGETS if t.identity is not None)

# --- byte-level mutation ------------------------------------------------------------------

INTERESTING_INTS = (0, 1, 15, 16, 17, 0x7F, 0xFF, 0xFFFF, 2**31, 2**32 - 1, 2**63, 2**64 - 1)
WIDTHS = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}


def _field_offsets(data: bytes) -> list[int]:
    """Offsets of a chunk header's fields (FORMAT.md §1.1), where the header parses."""
    size = header_size(data)
    if size is None:
        return [4, 5, 6, 7]
    (plan_len,) = struct.unpack_from(">H", data, 7)
    ident_end = size - 104
    return [4, 5, 6, 7, 9 + plan_len, ident_end - 32, ident_end - 24, ident_end - 16]


@st.composite
def mutated(draw: st.DrawFn, target: Target) -> bytes:
    data = bytearray(draw(st.sampled_from(target.seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                ("flip", "set", "cut", "extend", "insert", "delete", "splice", "field", "size")
            )
        )
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "splice":
            other = draw(st.sampled_from(target.seeds))
            data = (
                data[: draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))) :]
            )
        elif op in ("field", "size"):
            offsets = _field_offsets(bytes(data))
            size = header_size(bytes(data))
            if op == "size" and size is not None:
                offsets = [size - 56, size - 48]  # plain_size, cipher_size
            at = draw(st.sampled_from(offsets))
            width = 8 if op == "size" else draw(st.sampled_from(sorted(WIDTHS)))
            value = draw(st.sampled_from(INTERESTING_INTS) | st.integers(0, 2**64 - 1))
            data[at : at + width] = struct.pack(WIDTHS[width], value % (1 << (8 * width)))
    out = bytes(data)
    if target.fixup is not None and draw(st.booleans()):
        out = target.fixup(out)
    return out


# --- crafted JSON bodies ------------------------------------------------------------------

DEEP = "@@deep@@"  # replaced by deeply nested JSON after encoding
INTERESTING_STRINGS = (
    "",
    "0" * 32,
    "A" * 32,
    "g" * 31,
    "records",
    "objects",
    "bulk",
    "compact",
    "migrator/shard-manifest",
    "migrator/generation",
    "2026-02-30T00:00:00",
    "9999-12-31T23:59:59+23:59",
    "-0001-01-01",
    "\x00",
    "\U0010ffff",
    "ü/../\\",
    DEEP,
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from((*INTERESTING_INTS, -1, 2**64, 10**30, -(10**30))),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(INTERESTING_STRINGS),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELD_NAMES = ("format", "version", "kind", "chunks", "shards", "sequence", "name", "chain")
# not UTF-8 (stray, overlong, a surrogate, past U+10FFFF, cut short), and an escaped lone surrogate
NOT_UTF8 = (b"\xff", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82")
BAD_TEXT = (*NOT_UTF8, b"\\ud800")


def _mutate(draw: st.DrawFn, doc: Any) -> Any:
    """One structural change somewhere in the document: set, delete or add a value."""
    if not isinstance(doc, dict | list) or one_in(16, draw):
        return draw(JSON_VALUES)
    node: Any = doc
    while True:
        inner = [
            v
            for v in (node.values() if isinstance(node, dict) else node)
            if isinstance(v, dict | list) and v
        ]
        if not inner or not draw(st.booleans()):
            break
        node = draw(st.sampled_from(inner))
    op = draw(st.sampled_from(("set", "delete", "add")))
    if isinstance(node, dict):
        if op == "add" or not node:
            node[draw(st.text(max_size=8) | st.sampled_from(FIELD_NAMES))] = draw(JSON_VALUES)
        else:
            name = draw(st.sampled_from(sorted(node)))
            if op == "set":
                node[name] = draw(JSON_VALUES)
            else:
                del node[name]
    elif op == "add" or not node:
        node.append(
            draw(JSON_VALUES) if not node or draw(st.booleans()) else copy.deepcopy(node[0])
        )
    else:
        at = draw(st.integers(0, len(node) - 1))
        if op == "set":
            node[at] = draw(JSON_VALUES)
        else:
            del node[at]
    return doc


@st.composite
def crafted_json(draw: st.DrawFn, target: Target) -> bytes:
    doc = orjson.loads(draw(st.sampled_from(target.bodies)))
    for _ in range(draw(st.integers(1, 3))):
        doc = _mutate(draw, doc)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), sort_keys=draw(st.booleans()))
    body = text.encode()
    depth = draw(st.integers(1, 3000))
    nested = draw(
        st.sampled_from((b"[" * depth + b"]" * depth, b'{"a":' * depth + b"0" + b"}" * depth))
    )
    body = body.replace(f'"{DEEP}"'.encode(), nested)
    if one_in(4, draw):
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from(BAD_TEXT)) + body[at:]
    return body


def inner_payloads(target: Target) -> st.SearchStrategy[bytes]:
    choices = [st.binary(max_size=512), mutated(_as_seeds(target))]
    if target.json_body:
        choices += [crafted_json(target)] * 4  # most draws: structurally adversarial JSON
    return st.one_of(*choices)


def _as_seeds(target: Target) -> Target:
    """The target's inner payloads as seeds, for byte-level mutation of them."""
    return Target(
        name=target.name, parse=target.parse, seeds=target.bodies, object_key=target.object_key
    )


# --- forged chunks ------------------------------------------------------------------------

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@st.composite
def zstd_payloads(draw: st.DrawFn, target: Target) -> tuple[bytes, int]:
    """(a "compressed" payload, the plain_size the header will claim)."""
    plain = draw(
        st.sampled_from(target.bodies) | st.binary(max_size=300)
        if target.bodies
        else st.binary(max_size=300)
    )
    frame = zstandard.ZstdCompressor(level=1).compress(plain)
    kind = draw(st.sampled_from(("exact", "random", "claims", "no-size", "two", "cut")))
    if kind == "exact":
        payload, size = frame, len(plain)
    elif kind == "random":
        payload = draw(st.binary(max_size=200))
        size = draw(st.integers(0, 2**64 - 1))
    elif kind == "claims":
        # a frame header claiming any size (single segment, 8-byte content size), then junk
        claimed = draw(st.sampled_from(INTERESTING_INTS) | st.integers(0, 2**64 - 1))
        payload = ZSTD_MAGIC + b"\xe0" + struct.pack("<Q", claimed) + draw(st.binary(max_size=64))
        size = claimed
    elif kind == "no-size":
        compressor = zstandard.ZstdCompressor(level=1, write_content_size=False)
        payload, size = compressor.compress(plain), len(plain)
    elif kind == "two":
        payload, size = frame + frame, draw(st.sampled_from((len(plain), 2 * len(plain))))
    else:
        payload = frame[: draw(st.integers(0, max(0, len(frame) - 1)))]
        size = len(plain)
    if one_in(5, draw):
        size = draw(st.sampled_from((size + 1, max(0, size - 1), 2**64 - 1, 2**40)))
    return payload, min(size, 2**64 - 1)


@st.composite
def forged(draw: st.DrawFn, target: Target) -> bytes:
    assert target.identity is not None
    expected = target.identity.to_bytes()
    identity = expected
    aad_identity = None
    if one_in(5, draw):
        name = st.binary(max_size=12) | st.sampled_from(NOT_UTF8)
        identity = identity_bytes(
            draw(st.integers(0, 255)),
            draw(name),
            draw(name),
            draw(st.integers(0, 2**32 - 1)),
            draw(st.integers(0, 2**32 - 1)),
            draw(st.integers(0, 2**64 - 1)),
            draw(st.binary(min_size=16, max_size=16)),
        )
        aad_identity = draw(st.sampled_from((identity, expected)))
    payload, plain_size = draw(zstd_payloads(target))
    key_id = draw(st.sampled_from((None, None, None, OTHER_KEY.key_id, b"\x00" * 16)))
    cipher_size = None
    if one_in(6, draw):
        cipher_size = draw(
            st.sampled_from((0, 15, 16, len(payload) + 15, len(payload) + 17, 2**64 - 1))
        )
    return forge_chunk(
        identity,
        payload,
        plain_size=plain_size,
        salt=draw(st.binary(min_size=32, max_size=32)),
        key_id=key_id,
        cipher_size=cipher_size,
        aad_identity=aad_identity,
    )


# --- properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS, ids=ids(TARGETS))
def test_seeds_and_bodies_open(target: Target) -> None:
    """The starting points are valid: a fuzzer that never reaches a parse proves little."""
    inputs = list(target.seeds)
    if target.wrap is not None:
        inputs += [target.wrap(body) for body in target.bodies]
    for data in inputs:
        error = check(target, data)
        if target.opens_nothing:
            assert isinstance(error, WrongKeyError)
        else:
            assert error is None, f"{target.name}: a valid input failed: {error}"


@pytest.mark.parametrize("target", TARGETS, ids=ids(TARGETS))
@fuzz(300)
@given(
    prefix=st.sampled_from((b"", b"MGRC", b"MGRC\x01\x01", ZSTD_MAGIC)),
    data=st.binary(max_size=1024),
)
def test_arbitrary_bytes(target: Target, prefix: bytes, data: bytes) -> None:
    run(target, prefix + data)


@pytest.mark.parametrize("target", TARGETS, ids=ids(TARGETS))
@fuzz(500)
@given(st.data())
def test_damaged_objects(target: Target, data: st.DataObject) -> None:
    run(target, data.draw(mutated(target)))


@pytest.mark.parametrize("target", WRAPPED, ids=ids(WRAPPED))
@fuzz(600)
@given(st.data())
def test_crafted_payloads_behind_a_valid_seal(target: Target, data: st.DataObject) -> None:
    assert target.wrap is not None
    run(target, target.wrap(data.draw(inner_payloads(target))))


@pytest.mark.parametrize("target", CHUNKS, ids=ids(CHUNKS))
@fuzz(500)
@given(st.data())
def test_forged_chunks(target: Target, data: st.DataObject) -> None:
    run(target, data.draw(forged(target)))


def test_the_forger_follows_the_format() -> None:
    """forge_chunk is an independent encoder: what it seals, the codec opens."""
    from tests.fuzz.targets import BY_NAME

    target = BY_NAME["chunk"]
    assert target.identity is not None
    plain = b'{"id": 7}\n'
    frame = zstandard.ZstdCompressor().compress(plain)
    sealed = forge_chunk(target.identity.to_bytes(), frame, plain_size=len(plain), salt=b"s" * 32)
    assert check(target, sealed) is None
    assert reseal_header(sealed) == sealed
    assert KEY != OTHER_KEY


def test_bytes_after_the_zstd_frame_are_refused() -> None:
    """One frame and nothing after it: even a key holder cannot hide bytes behind the frame."""
    from migrator.codec.chunk import decode_chunk
    from migrator.errors import TamperedError
    from tests.fuzz.targets import BY_NAME

    target = BY_NAME["chunk"]
    assert target.identity is not None
    plain = b'{"id": 7}\n'
    frame = zstandard.ZstdCompressor().compress(plain)
    ident = target.identity.to_bytes()
    sealed = forge_chunk(ident, frame + b"hidden", plain_size=len(plain), salt=b"s" * 32)
    with pytest.raises(TamperedError, match="unused data") as caught:
        decode_chunk(sealed, target.identity, KEY, object_key="ds/g000001/s00000/r/0.mgc")
    assert "ds/g000001/s00000/r/0.mgc" in str(caught.value)
