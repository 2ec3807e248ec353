"""Chunk format v1: round trips, and each way a stored chunk can be bad maps to its own error."""

from __future__ import annotations

import dataclasses
import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.codec.chunk import (
    FORMAT_VERSION,
    MAGIC,
    ChunkEncoder,
    EncodedChunk,
    decode_chunk,
    object_tag,
    object_tagger,
    read_header,
)
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import (
    DigestMismatchError,
    FormatError,
    MisplacedChunkError,
    TamperedError,
    TruncatedError,
    UnknownVersionError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey

KEY = DataKey(bytes(range(32)))
OTHER_KEY = DataKey(bytes(range(1, 33)))
IDENTITY = ChunkIdentity(ChunkKind.RECORDS, "plan-a", "orders", 2, 3, 7)
OBJECT_KEY = "orders/g000002/s00003/r/00000007.mgc"
PLAIN = b'{"id": 1, "name": "alpha", "status": "active"}\n' * 200

# header offsets for IDENTITY (plan "plan-a" = 6 bytes, dataset "orders" = 6 bytes)
P, D = 6, 6
HEADER_SIZE = 147 + P + D
OFFSETS = {
    "magic": 0,
    "version": 4,
    "compression": 5,
    "kind": 6,
    "plan_len": 7,
    "plan": 9,
    "dataset_len": 9 + P,
    "dataset": 11 + P,
    "generation": 11 + P + D,
    "shard": 15 + P + D,
    "sequence": 19 + P + D,
    "name_tag": 27 + P + D,
    "key_id": 43 + P + D,
    "salt": 59 + P + D,
    "plain_size": 91 + P + D,
    "cipher_size": 99 + P + D,
    "commitment": 107 + P + D,
    "checksum": 139 + P + D,
}


@pytest.fixture(scope="module")
def encoder() -> ChunkEncoder:
    return ChunkEncoder(3)


@pytest.fixture(scope="module")
def chunk(encoder: ChunkEncoder) -> EncodedChunk:
    return encoder.encode(PLAIN, IDENTITY, KEY)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def rechecksum(header_and_rest: bytes, header_size: int = HEADER_SIZE) -> bytes:
    """Recompute the header checksum, as someone forging a header would."""
    out = bytearray(header_and_rest)
    out[header_size - 8 : header_size] = xxhash.xxh3_64_digest(bytes(out[: header_size - 8]))
    return bytes(out)


def decode(data: bytes, expected: ChunkIdentity = IDENTITY, key: DataKey = KEY) -> bytes:
    return decode_chunk(data, expected, key, object_key=OBJECT_KEY)


# --- round trips ---------------------------------------------------------------------------


def json_like(size: int, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "pending", "closed"]
    out = bytearray()
    i = 0
    while len(out) < size:
        note = " ".join(rnd.choices(words, k=5))
        out += f'{{"id":{i},"v":{rnd.random():.6f},"note":"{note}"}}\n'.encode()
        i += 1
    return bytes(out[:size])


@pytest.mark.parametrize("size", [0, 1, 1000, 3 * 2**20 + 17])
def test_round_trip(encoder: ChunkEncoder, size: int) -> None:
    plain = json_like(size)
    chunk = encoder.encode(plain, IDENTITY, KEY)
    assert chunk.plain_size == size
    assert chunk.stored_size == len(chunk.data)
    assert chunk.plain_xxh3 == xxhash.xxh3_128_digest(plain)
    assert chunk.stored_xxh3 == xxhash.xxh3_128_digest(chunk.data)
    assert decode(chunk.data) == plain
    assert decode_chunk(memoryview(chunk.data), IDENTITY, KEY) == plain


def test_incompressible_round_trip(encoder: ChunkEncoder) -> None:
    plain = os.urandom(2**20)
    chunk = encoder.encode(plain, IDENTITY, KEY)
    assert decode(chunk.data, IDENTITY) == plain


def test_buffer_inputs(encoder: ChunkEncoder) -> None:
    backing = bytearray(b"xx" + PLAIN + b"yy")
    view = memoryview(backing)[2:-2]
    for plaintext in (view, bytearray(PLAIN), PLAIN):
        chunk = encoder.encode(plaintext, IDENTITY, KEY)
        assert decode(chunk.data) == PLAIN
        assert chunk.plain_xxh3 == xxhash.xxh3_128_digest(PLAIN)


def test_object_part_round_trip(encoder: ChunkEncoder) -> None:
    tag = object_tag(KEY, "reports/2024/q1.pdf")
    ident = ChunkIdentity(ChunkKind.OBJECT_PART, "plan-a", "files", 0, 1, 4, tag)
    chunk = encoder.encode(b"%PDF-1.7 ...", ident, KEY)
    assert decode(chunk.data, ident) == b"%PDF-1.7 ..."
    assert b"reports/2024/q1.pdf" not in chunk.data


def test_unicode_names_round_trip(encoder: ChunkEncoder) -> None:
    ident = ChunkIdentity(ChunkKind.RECORDS, "plän", "données", 1, 2, 3)
    chunk = encoder.encode(PLAIN, ident, KEY)
    assert decode(chunk.data, ident) == PLAIN
    assert read_header(chunk.data).identity == ident


def test_fresh_salt_each_encode(encoder: ChunkEncoder) -> None:
    first = encoder.encode(PLAIN, IDENTITY, KEY)
    second = encoder.encode(PLAIN, IDENTITY, KEY)
    assert first.data != second.data
    assert read_header(first.data).salt != read_header(second.data).salt
    assert first.plain_xxh3 == second.plain_xxh3
    assert first.stored_xxh3 != second.stored_xxh3
    assert decode(first.data) == decode(second.data) == PLAIN


def test_header_fields(chunk: EncodedChunk) -> None:
    header = read_header(chunk.data)
    assert chunk.data[:4] == MAGIC
    assert header.version == FORMAT_VERSION == 1
    assert header.compression == 1
    assert header.identity == IDENTITY
    assert header.key_id == KEY.key_id
    assert len(header.salt) == 32
    assert header.plain_size == len(PLAIN)
    assert header.header_size == HEADER_SIZE
    assert header.stored_size == len(chunk.data)
    assert header.cipher_size == len(chunk.data) - HEADER_SIZE
    assert chunk.data[6 : OFFSETS["key_id"]] == IDENTITY.to_bytes()
    assert struct.unpack_from(">QQ", chunk.data, OFFSETS["plain_size"]) == (
        len(PLAIN),
        header.cipher_size,
    )
    assert chunk.data[OFFSETS["checksum"] : HEADER_SIZE] == xxhash.xxh3_64_digest(
        chunk.data[: OFFSETS["checksum"]]
    )


def test_threads_each_with_own_encoder() -> None:
    def work(seq: int) -> bool:
        enc = ChunkEncoder(1)
        ident = dataclasses.replace(IDENTITY, sequence=seq)
        plain = json_like(200_000, seed=seq)
        return decode(enc.encode(plain, ident, KEY).data, ident) == plain

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(8)))


# --- damage and misuse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "magic",
        "compression",
        "kind",
        "plan",
        "dataset",
        "generation",
        "shard",
        "sequence",
        "name_tag",
        "key_id",
        "salt",
        "plain_size",
        "cipher_size",
        "commitment",
        "checksum",
    ],
)
@pytest.mark.parametrize("bit", [0, 7])
def test_flipped_header_bit_is_tampering(chunk: EncodedChunk, field: str, bit: int) -> None:
    with pytest.raises(TamperedError) as info:
        decode(flip(chunk.data, OFFSETS[field], bit))
    assert info.value.object_key == OBJECT_KEY
    assert OBJECT_KEY in str(info.value)


@pytest.mark.parametrize("offset", range(HEADER_SIZE))
def test_no_single_header_bit_flip_decodes(chunk: EncodedChunk, offset: int) -> None:
    with pytest.raises(FormatError):
        decode(flip(chunk.data, offset, offset % 8))


def test_flipped_version_bit_reads_as_unknown_version(chunk: EncodedChunk) -> None:
    with pytest.raises(UnknownVersionError):
        decode(flip(chunk.data, OFFSETS["version"], 1))


def test_length_prefix_past_the_end_reads_as_truncation(chunk: EncodedChunk) -> None:
    with pytest.raises(TruncatedError):
        decode(flip(chunk.data, OFFSETS["plan_len"], 7))


def test_bad_magic_message(chunk: EncodedChunk) -> None:
    with pytest.raises(TamperedError, match="not a migrator chunk"):
        decode(b"PK\x03\x04" + chunk.data[4:])


@pytest.mark.parametrize("where", ["ciphertext", "tag"])
def test_flipped_body_bit_fails_authentication(chunk: EncodedChunk, where: str) -> None:
    offset = HEADER_SIZE + 3 if where == "ciphertext" else len(chunk.data) - 1
    with pytest.raises(TamperedError, match="authentication failed"):
        decode(flip(chunk.data, offset, 4))


@pytest.mark.parametrize("keep", [0, 3, 100, 146, HEADER_SIZE - 1, HEADER_SIZE, -16, -1])
def test_truncated(chunk: EncodedChunk, keep: int) -> None:
    with pytest.raises(TruncatedError) as info:
        decode(chunk.data[:keep])
    assert info.value.object_key == OBJECT_KEY


def test_trailing_bytes(chunk: EncodedChunk) -> None:
    with pytest.raises(TamperedError, match="trailing"):
        decode(chunk.data + b"\x00")


def test_unknown_version(chunk: EncodedChunk) -> None:
    forged = bytearray(chunk.data)
    forged[OFFSETS["version"]] = 2
    forged_bytes = rechecksum(bytes(forged))
    with pytest.raises(UnknownVersionError, match="version 2"):
        decode(forged_bytes)
    with pytest.raises(UnknownVersionError):
        read_header(forged_bytes)


def test_unknown_compression(chunk: EncodedChunk) -> None:
    forged = bytearray(chunk.data)
    forged[OFFSETS["compression"]] = 9
    with pytest.raises(UnknownVersionError, match="compression"):
        decode(rechecksum(bytes(forged)))


def test_wrong_key(chunk: EncodedChunk) -> None:
    with pytest.raises(WrongKeyError) as info:
        decode(chunk.data, key=OTHER_KEY)
    assert info.value.object_key == OBJECT_KEY


@pytest.mark.parametrize(
    "change",
    [
        {"shard": 5},
        {"dataset": "customers"},
        {"plan": "plan-b"},
        {"sequence": 8},
        {"generation": 1},
        {"kind": ChunkKind.MANIFEST},
        {"name_tag": b"\x01" * 16},
    ],
)
def test_misplaced_chunk(chunk: EncodedChunk, change: dict[str, Any]) -> None:
    expected = dataclasses.replace(IDENTITY, **change)
    with pytest.raises(MisplacedChunkError) as info:
        decode(chunk.data, expected)
    message = str(info.value)
    assert f"expected {expected.describe()}" in message
    assert f"found {IDENTITY.describe()}" in message
    assert info.value.object_key == OBJECT_KEY


def test_misplaced_message_names_shard_and_sequence(encoder: ChunkEncoder) -> None:
    stored = encoder.encode(PLAIN, dataclasses.replace(IDENTITY, shard=5), KEY)
    with pytest.raises(MisplacedChunkError, match=r"expected .*shard=3 seq=7.*found .*shard=5"):
        decode(stored.data)


def forge_identity(data: bytes, identity: ChunkIdentity) -> bytes:
    """Swap the header's identity (same encoded length) and fix up the checksum."""
    ident = identity.to_bytes()
    assert len(ident) == len(IDENTITY.to_bytes())
    return rechecksum(data[:6] + ident + data[6 + len(ident) :])


@pytest.mark.parametrize("change", [{"shard": 5}, {"sequence": 0}, {"generation": 9}])
def test_forged_identity_never_decodes(chunk: EncodedChunk, change: dict[str, Any]) -> None:
    other = dataclasses.replace(IDENTITY, **change)
    forged = forge_identity(chunk.data, other)
    # read as the chunk it now claims to be: the commitment no longer matches
    with pytest.raises(TamperedError, match="commitment"):
        decode(forged, other)
    # read where it really belongs: the header says it is elsewhere
    with pytest.raises(MisplacedChunkError):
        decode(forged, IDENTITY)


def test_forged_key_id_is_tampering(chunk: EncodedChunk) -> None:
    at = OFFSETS["key_id"]
    forged = rechecksum(chunk.data[:at] + OTHER_KEY.key_id + chunk.data[at + 16 :])
    with pytest.raises(TamperedError, match="commitment"):
        decode(forged, key=OTHER_KEY)


def test_ciphertext_from_another_chunk(encoder: ChunkEncoder, chunk: EncodedChunk) -> None:
    other = encoder.encode(PLAIN, IDENTITY, KEY)
    spliced = chunk.data[:HEADER_SIZE] + other.data[HEADER_SIZE:]
    with pytest.raises(TamperedError, match="authentication failed"):
        decode(spliced)


def test_digest_mismatch(chunk: EncodedChunk) -> None:
    assert decode_chunk(chunk.data, IDENTITY, KEY, expected_plain_xxh3=chunk.plain_xxh3) == PLAIN
    with pytest.raises(DigestMismatchError) as info:
        decode_chunk(
            chunk.data, IDENTITY, KEY, object_key=OBJECT_KEY, expected_plain_xxh3=b"\x00" * 16
        )
    assert info.value.object_key == OBJECT_KEY


def test_errors_are_format_errors_with_integrity_exit_code(chunk: EncodedChunk) -> None:
    with pytest.raises(FormatError) as info:
        decode(chunk.data[:10])
    assert info.value.exit_code == 4


# --- secrets stay secret ------------------------------------------------------------------


def secret_forms(key: DataKey) -> list[str]:
    return [key.secret.hex(), repr(key.secret), key.secret.hex().upper()]


def test_reprs_hold_no_key_material(chunk: EncodedChunk, encoder: ChunkEncoder) -> None:
    header = read_header(chunk.data)
    texts = [repr(KEY), str(KEY), repr(header), str(header), repr(chunk), repr(encoder)]
    for text in texts:
        for secret in secret_forms(KEY):
            assert secret not in text
    assert KEY.key_id.hex() in repr(header)


def test_error_messages_hold_no_key_material(chunk: EncodedChunk) -> None:
    damaged = [
        chunk.data[:50],
        flip(chunk.data, OFFSETS["salt"]),
        flip(chunk.data, len(chunk.data) - 1),
        forge_identity(chunk.data, dataclasses.replace(IDENTITY, shard=5)),
    ]
    for data in damaged:
        for key in (KEY, OTHER_KEY):
            with pytest.raises(FormatError) as info:
                decode(data, key=key)
            for secret in secret_forms(key):
                assert secret not in str(info.value)


# --- object tags ---------------------------------------------------------------------------


def test_object_tag() -> None:
    tag = object_tag(KEY, "a/b.txt")
    assert len(tag) == 16
    assert tag == object_tag(KEY, "a/b.txt") == object_tagger(KEY)("a/b.txt")
    assert tag != object_tag(KEY, "a/b.txt ")
    assert tag != object_tag(OTHER_KEY, "a/b.txt")


# --- encoder arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 23])
def test_encoder_rejects_bad_level(level: int) -> None:
    with pytest.raises(ValueError, match="level"):
        ChunkEncoder(level)


def test_encoder_rejects_identity_too_long_for_header(encoder: ChunkEncoder) -> None:
    with pytest.raises(ValueError, match="identity"):
        encoder.encode(b"x", dataclasses.replace(IDENTITY, plan="p" * 70_000), KEY)


def test_encoder_rejects_short_name_tag(encoder: ChunkEncoder) -> None:
    with pytest.raises(ValueError, match="name_tag"):
        encoder.encode(b"x", dataclasses.replace(IDENTITY, name_tag=b"\x01"), KEY)


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError):
        decode_chunk(data, IDENTITY, KEY)


@settings(max_examples=300, deadline=None)
@given(tail=st.binary(max_size=600), version=st.sampled_from([1, 1, 1, 0, 2, 255]))
def test_random_bytes_after_magic_raise_only_format_errors(tail: bytes, version: int) -> None:
    with pytest.raises(FormatError):
        decode_chunk(MAGIC + bytes([version]) + tail, IDENTITY, KEY)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    fix_checksum=st.booleans(),
)
def test_damaged_chunk_never_decodes(
    chunk: EncodedChunk, edits: list[tuple[int, int]], cut: int | None, fix_checksum: bool
) -> None:
    damaged = bytearray(chunk.data)
    for position, value in edits:
        damaged[position % len(damaged)] ^= value or 1
    if fix_checksum:
        damaged = bytearray(rechecksum(bytes(damaged)))
    if cut is not None:
        damaged = damaged[: cut % len(damaged)]
    if bytes(damaged) == chunk.data:
        return
    with pytest.raises(FormatError):
        decode(bytes(damaged))
