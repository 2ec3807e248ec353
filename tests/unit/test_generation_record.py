"""Generation records: sealed, bound to their generation, and strict about their body."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.generation import (
    GenerationRecord,
    ShardHead,
    open_record,
    record_identity,
    seal_record,
)
from migrator.errors import (
    FormatError,
    MisplacedChunkError,
    TamperedError,
    UnknownVersionError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey
from migrator.repository.names import generation_key, generation_of_key

KEY = DataKey(os.urandom(32))
ENCODER = ChunkEncoder(3)
WHERE = {"plan": "p", "dataset": "profiles", "generation": 4}


def record(**changes: Any) -> GenerationRecord:
    base = GenerationRecord(
        plan="p",
        dataset="profiles",
        generation=4,
        kind="sync",
        started_at="2026-11-21T02:00:00+00:00",
        finished_at="2026-11-21T02:01:00+00:00",
        seconds=60.0,
        previous=3,
        previous_xxh3="ab" * 16,
        changed_records=12,
        changed_bytes=3400,
        shards=(
            ShardHead(0, (1, 2, 4), "01" * 16, 100, "02" * 16),
            ShardHead(1, (1,), "03" * 16, 90, "04" * 16),
        ),
    )
    return dataclasses.replace(base, **changes)


def reseal(body: dict[str, Any], generation: int = 4) -> bytes:
    ident = record_identity("p", "profiles", generation)
    return bytes(ENCODER.encode(orjson.dumps(body), ident, KEY).data)


def body() -> dict[str, Any]:
    sealed = seal_record(record(), KEY, ENCODER)
    from migrator.codec.chunk import decode_chunk

    doc: dict[str, Any] = orjson.loads(
        decode_chunk(sealed, record_identity("p", "profiles", 4), KEY)
    )
    return doc


def test_round_trip_and_keys() -> None:
    sealed = seal_record(record(), KEY, ENCODER)
    assert open_record(sealed, key=KEY, **WHERE) == record()  # type: ignore[arg-type]
    assert b"profiles" not in sealed[200:]  # the body is encrypted
    assert generation_key("profiles", 4) == "profiles/_generations/g000004.mgc"
    assert generation_of_key("t/profiles/_generations/g000004.mgc") == 4
    assert generation_of_key("profiles/g000004/s00000/manifest.mgc") is None


def test_a_record_is_bound_to_its_generation_and_key() -> None:
    sealed = seal_record(record(), KEY, ENCODER)
    with pytest.raises(MisplacedChunkError):
        open_record(sealed, key=KEY, plan="p", dataset="profiles", generation=5)
    with pytest.raises(WrongKeyError):
        open_record(sealed, key=DataKey(os.urandom(32)), **WHERE)  # type: ignore[arg-type]
    flipped = bytearray(sealed)
    flipped[-5] ^= 1
    with pytest.raises(TamperedError):
        open_record(bytes(flipped), key=KEY, **WHERE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        record(kind="nightly"),
        record(previous=4),
        record(previous=0),  # previous_xxh3 without a previous record
        record(shards=(ShardHead(1, (1,), "03" * 16, 0, "04" * 16),)),  # shard 1 at index 0
        record(shards=(ShardHead(0, (2, 1), "03" * 16, 0, "04" * 16),)),  # chain not rising
        record(shards=(ShardHead(0, (5,), "03" * 16, 0, "04" * 16),)),  # past its generation
    ],
)
def test_an_inconsistent_record_is_refused_when_sealed(bad: GenerationRecord) -> None:
    with pytest.raises(TamperedError):
        seal_record(bad, KEY, ENCODER)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seconds", -1),
        ("seconds", "60"),
        ("changed_records", True),
        ("previous_xxh3", "not hex"),
        ("started_at", "yesterday"),
        ("shards", {}),
        ("extra", 1),
    ],
)
def test_a_malformed_body_is_tampering(field: str, value: object) -> None:
    doc = body()
    doc[field] = value
    with pytest.raises(TamperedError, match="generation record"):
        open_record(reseal(doc), key=KEY, **WHERE)  # type: ignore[arg-type]


def test_an_unknown_version_is_named() -> None:
    doc = body()
    doc["version"] = 9
    with pytest.raises(UnknownVersionError, match="version 9"):
        open_record(reseal(doc), key=KEY, **WHERE)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bodies_only_ever_raise_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError):
        open_record(reseal_raw(data), key=KEY, **WHERE)  # type: ignore[arg-type]


def reseal_raw(data: bytes) -> bytes:
    return bytes(ENCODER.encode(data, record_identity("p", "profiles", 4), KEY).data)
