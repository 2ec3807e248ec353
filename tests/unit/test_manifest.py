"""Shard manifests: sealed round trips, and altered, moved or shortened manifests are caught."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.codec.chunk import ChunkEncoder, decode_chunk, object_tag, read_header
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.manifest import (
    ChunkRef,
    RecordsLayout,
    ShardManifest,
    open_manifest,
    seal_manifest,
)
from migrator.errors import (
    FormatError,
    MisplacedChunkError,
    TamperedError,
    TruncatedError,
    UnknownVersionError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey
from migrator.repository.names import manifest_key, object_part_key, records_chunk_key

KEY = DataKey(b"\x07" * 32)
OTHER_KEY = DataKey(b"\x08" * 32)
PLAN, DATASET, GENERATION, SHARD = "plan-a", "orders", 2, 3
WHERE = {"plan": PLAN, "dataset": DATASET, "generation": GENERATION, "shard": SHARD}
MANIFEST_KEY = manifest_key(DATASET, GENERATION, SHARD)
ENCODER = ChunkEncoder(3)


def records_manifest(n: int = 3) -> ShardManifest:
    chunks = []
    for seq in range(n):
        plain = f'{{"chunk": {seq}}}\n'.encode() * (seq + 1)
        ident = ChunkIdentity(ChunkKind.RECORDS, PLAN, DATASET, GENERATION, SHARD, seq)
        enc = ENCODER.encode(plain, ident, KEY)
        chunks.append(
            ChunkRef(
                sequence=seq,
                object_key=records_chunk_key(DATASET, GENERATION, SHARD, seq),
                plain_size=enc.plain_size,
                stored_size=enc.stored_size,
                records=seq + 1,
                plain_xxh3=enc.plain_xxh3.hex(),
                stored_xxh3=enc.stored_xxh3.hex(),
            )
        )
    return ShardManifest(
        plan=PLAN,
        dataset=DATASET,
        generation=GENERATION,
        shard=SHARD,
        kind="records",
        chunks=tuple(chunks),
        record_count=sum(c.records for c in chunks),
        plain_bytes=sum(c.plain_size for c in chunks),
        stored_bytes=sum(c.stored_size for c in chunks),
        created_at="2024-05-01T12:00:00+00:00",
        extra={"csv_header": "id,name\n", "source": {"files": 2}},
        records_layout=RecordsLayout("csv", "id", ","),
    )


def objects_manifest(parts: dict[str, int] | None = None) -> ShardManifest:
    parts = parts if parts is not None else {"reports/q1.pdf": 2, "images/logo.png": 1}
    chunks = []
    for name, count in parts.items():
        tag = object_tag(KEY, name)
        for part in range(count):
            chunks.append(
                ChunkRef(
                    sequence=part,
                    object_key=object_part_key(DATASET, GENERATION, SHARD, tag, part),
                    plain_size=1000 + part,
                    stored_size=1200 + part,
                    records=0,
                    plain_xxh3=xxhash.xxh3_128_hexdigest(f"{name}#{part}".encode()),
                    stored_xxh3=xxhash.xxh3_128_hexdigest(f"stored {name}#{part}".encode()),
                    name=name,
                    name_tag=tag.hex(),
                    version="2048:1714564800",
                )
            )
    return ShardManifest(
        plan=PLAN,
        dataset=DATASET,
        generation=GENERATION,
        shard=SHARD,
        kind="objects",
        chunks=tuple(chunks),
        record_count=0,
        plain_bytes=sum(c.plain_size for c in chunks),
        stored_bytes=sum(c.stored_size for c in chunks),
        created_at="2024-05-01T12:00:00Z",
    )


def body_of(manifest: ShardManifest) -> dict[str, Any]:
    """The decrypted JSON body of a sealed manifest, for tests that alter and re-seal it."""
    sealed = seal_manifest(manifest, KEY, ENCODER)
    body: dict[str, Any] = orjson.loads(decode_chunk(sealed, manifest.identity(), KEY))
    return body


def reseal(body: object, key: DataKey = KEY) -> bytes:
    """Seal arbitrary JSON under the right key and identity, skipping the writer's checks."""
    ident = ChunkIdentity(ChunkKind.MANIFEST, PLAN, DATASET, GENERATION, SHARD, 0)
    return ENCODER.encode(orjson.dumps(body), ident, key).data


def open_(data: bytes, key: DataKey = KEY, **where: Any) -> ShardManifest:
    return open_manifest(data, key=key, object_key=MANIFEST_KEY, **{**WHERE, **where})


# --- layout and round trips ----------------------------------------------------------------


def test_object_keys() -> None:
    assert manifest_key("orders", 2, 3) == "orders/g000002/s00003/manifest.mgc"
    assert records_chunk_key("orders", 2, 3, 7) == "orders/g000002/s00003/r/00000007.mgc"
    tag = bytes(range(16))
    assert (
        object_part_key("files", 1, 12, tag, 4)
        == "files/g000001/s00012/o/000102030405060708090a0b0c0d0e0f/000004.mgc"
    )


def test_identity() -> None:
    manifest = records_manifest()
    assert manifest.identity() == ChunkIdentity(
        ChunkKind.MANIFEST, PLAN, DATASET, GENERATION, SHARD, 0
    )
    assert manifest.chunk_count == 3


@pytest.mark.parametrize("make", [records_manifest, objects_manifest])
def test_round_trip(make: Any) -> None:
    manifest = make()
    sealed = seal_manifest(manifest, KEY, ENCODER)
    assert read_header(sealed).identity == manifest.identity()
    assert open_(sealed) == manifest


def test_empty_shard_round_trip() -> None:
    manifest = records_manifest(0)
    assert open_(seal_manifest(manifest, KEY, ENCODER)) == manifest


def test_body_is_canonical_json() -> None:
    body = body_of(records_manifest())
    assert list(body) == sorted(body)
    assert body["format"] == "migrator/shard-manifest"
    assert body["version"] == 3
    assert body["records_layout"] == {"format": "csv", "key": "id", "csv_delimiter": ","}
    assert body["chunk_count"] == 3
    assert body["chunks"][0]["name"] is None


def test_sealed_manifest_hides_names_and_digests() -> None:
    manifest = objects_manifest()
    sealed = seal_manifest(manifest, KEY, ENCODER)
    assert b"reports/q1.pdf" not in sealed
    for ref in manifest.chunks:
        assert ref.plain_xxh3.encode() not in sealed
        assert bytes.fromhex(ref.plain_xxh3) not in sealed


# --- damage, moves and truncation ----------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 30, 100, 170, -40, -1])
def test_flipped_bit_is_tampering(offset: int) -> None:
    sealed = bytearray(seal_manifest(records_manifest(), KEY, ENCODER))
    sealed[offset] ^= 0x10
    with pytest.raises(TamperedError) as info:
        open_(bytes(sealed))
    assert info.value.object_key == MANIFEST_KEY


@pytest.mark.parametrize(
    "where",
    [{"shard": 4}, {"dataset": "customers"}, {"generation": 1}, {"plan": "plan-b"}],
)
def test_opened_as_another_shard_is_misplaced(where: dict[str, Any]) -> None:
    sealed = seal_manifest(records_manifest(), KEY, ENCODER)
    with pytest.raises(MisplacedChunkError):
        open_(sealed, **where)


def test_records_chunk_is_not_a_manifest() -> None:
    ident = ChunkIdentity(ChunkKind.RECORDS, PLAN, DATASET, GENERATION, SHARD, 0)
    with pytest.raises(MisplacedChunkError, match="expected manifest"):
        open_(ENCODER.encode(b"{}", ident, KEY).data)


def test_wrong_key() -> None:
    with pytest.raises(WrongKeyError):
        open_(seal_manifest(records_manifest(), KEY, ENCODER), key=OTHER_KEY)


def test_truncated_object() -> None:
    sealed = seal_manifest(records_manifest(), KEY, ENCODER)
    with pytest.raises(TruncatedError):
        open_(sealed[:-10])


def drop_last(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "chunks": body["chunks"][:-1]}


def with_count_fixed(body: dict[str, Any]) -> dict[str, Any]:
    return {**drop_last(body), "chunk_count": body["chunk_count"] - 1}


def with_count_and_records_fixed(body: dict[str, Any]) -> dict[str, Any]:
    dropped = body["chunks"][-1]
    return {
        **with_count_fixed(body),
        "record_count": body["record_count"] - dropped["records"],
        "plain_bytes": body["plain_bytes"] - dropped["plain_size"],
    }


@pytest.mark.parametrize("alter", [drop_last, with_count_fixed, with_count_and_records_fixed])
def test_dropped_last_chunk_is_truncation(alter: Any) -> None:
    body = alter(body_of(records_manifest()))
    with pytest.raises(TruncatedError) as info:
        open_(reseal(body))
    assert info.value.object_key == MANIFEST_KEY


def test_dropped_last_object_part_is_truncation() -> None:
    body = drop_last(body_of(objects_manifest({"a.bin": 1, "b.bin": 3})))
    with pytest.raises(TruncatedError):
        open_(reseal(body))


def test_missing_middle_chunk_is_truncation() -> None:
    body = body_of(records_manifest(4))
    chunks = body["chunks"]
    altered = {
        **body,
        "chunks": [chunks[0], chunks[1], chunks[3]],
        "chunk_count": 3,
    }
    with pytest.raises(TruncatedError, match="sequence 2 is missing"):
        open_(reseal(altered))


def test_missing_object_part_is_truncation() -> None:
    body = body_of(objects_manifest({"a.bin": 3}))
    chunks = body["chunks"]
    altered = {**body, "chunks": [chunks[0], chunks[2]], "chunk_count": 2}
    with pytest.raises(TruncatedError, match="sequence 1 is missing"):
        open_(reseal(altered))


def set_field(path: tuple[str | int, ...], value: object) -> Any:
    def alter(body: dict[str, Any]) -> dict[str, Any]:
        body = orjson.loads(orjson.dumps(body))
        target: Any = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return body

    return alter


def delete_field(name: str) -> Any:
    def alter(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != name}

    return alter


def duplicate_first(body: dict[str, Any]) -> dict[str, Any]:
    chunks = body["chunks"]
    return {**body, "chunks": [chunks[0], *chunks], "chunk_count": len(chunks) + 1}


def swap_first_two(body: dict[str, Any]) -> dict[str, Any]:
    chunks = body["chunks"]
    return {**body, "chunks": [chunks[1], chunks[0], *chunks[2:]]}


@pytest.mark.parametrize(
    "alter",
    [
        set_field(("shard",), 4),
        set_field(("dataset",), "customers"),
        set_field(("format",), "something-else"),
        set_field(("kind",), "blobs"),
        set_field(("chunk_count",), 2),
        set_field(("chunk_count",), True),
        set_field(("record_count",), -1),
        set_field(("record_count",), 1),
        set_field(("plain_bytes",), "12"),
        set_field(("created_at",), "yesterday"),
        set_field(("extra",), []),
        set_field(("chunks",), {}),
        set_field(("chunks", 0, "plain_xxh3"), "xyz"),
        set_field(("chunks", 0, "sequence"), 1.5),
        set_field(("chunks", 0, "object_key"), None),
        set_field(("chunks", 0, "name"), "a.bin"),
        set_field(("chunks", 1, "object_key"), "orders/g000002/s00003/r/00000000.mgc"),
        set_field(("chunks", 0, "surprise"), 1),
        set_field(("surprise",), 1),
        set_field(("chunks", 0), "not an object"),
        set_field(("version",), "2"),
        set_field(("version",), True),
        set_field(("version",), None),
        delete_field("version"),
        delete_field("stored_bytes"),
        delete_field("chunks"),
        duplicate_first,
        swap_first_two,
    ],
)
def test_altered_body_is_tampering(alter: Any) -> None:
    body = alter(body_of(records_manifest()))
    with pytest.raises(TamperedError):
        open_(reseal(body))


@pytest.mark.parametrize(
    "alter",
    [
        set_field(("chunks", 0, "name_tag"), "0" * 32),
        set_field(("chunks", 0, "name"), "reports/q2.pdf"),
        set_field(("chunks", 0, "name_tag"), None),
        set_field(("chunks", 0, "records"), 3),
        swap_first_two,
    ],
)
def test_altered_objects_body_is_tampering(alter: Any) -> None:
    body = alter(body_of(objects_manifest()))
    with pytest.raises(TamperedError):
        open_(reseal(body))


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"null", b'"x"', b"\xff\xfe"])
def test_malformed_body_is_tampering(body: bytes) -> None:
    ident = ChunkIdentity(ChunkKind.MANIFEST, PLAN, DATASET, GENERATION, SHARD, 0)
    with pytest.raises(TamperedError):
        open_(ENCODER.encode(body, ident, KEY).data)


def test_unknown_manifest_version() -> None:
    body = set_field(("version",), 4)(body_of(records_manifest()))
    with pytest.raises(UnknownVersionError, match="version 4"):
        open_(reseal(body))


# --- records layout (version 3) and version-2 manifests -------------------------------------


def as_version_2(body: dict[str, Any]) -> dict[str, Any]:
    """The body a version-2 writer sealed: no records_layout field."""
    return {**delete_field("records_layout")(body), "version": 2}


@pytest.mark.parametrize("make", [records_manifest, objects_manifest])
def test_version_2_manifest_opens_without_a_layout(make: Any) -> None:
    manifest = make()
    opened = open_(reseal(as_version_2(body_of(manifest))))
    assert opened == dataclasses.replace(manifest, records_layout=None)


@pytest.mark.parametrize(
    ("layout", "extra"),
    [
        (RecordsLayout("csv", "id", ";"), {"csv_header": "id;name"}),
        (RecordsLayout("csv", "名", "\t"), {"csv_header": "名\tx"}),
        (RecordsLayout("jsonl", "user_id"), {}),
    ],
)
def test_layout_round_trip(layout: RecordsLayout, extra: dict[str, Any]) -> None:
    manifest = dataclasses.replace(records_manifest(), records_layout=layout, extra=extra)
    assert open_(seal_manifest(manifest, KEY, ENCODER)).records_layout == layout


LAYOUT = ("records_layout",)


@pytest.mark.parametrize(
    "alter",
    [
        set_field(LAYOUT, None),  # version 3: a records manifest says how its records are keyed
        delete_field("records_layout"),
        lambda body: {**as_version_2(body), "records_layout": body["records_layout"]},
        set_field(LAYOUT, "jsonl"),
        set_field((*LAYOUT, "format"), "xml"),
        set_field((*LAYOUT, "key"), ""),
        set_field((*LAYOUT, "key"), 7),
        set_field((*LAYOUT, "csv_delimiter"), None),
        set_field((*LAYOUT, "format"), "jsonl"),  # jsonl has no delimiter
        set_field(LAYOUT, {"format": "jsonl", "key": "id", "csv_delimiter": None}),  # a header
        set_field(("extra",), {}),  # csv records without their header row
        set_field(LAYOUT, {"format": "csv", "key": "id", "csv_delimiter": None}),
        set_field(LAYOUT, {"format": "csv", "key": "id", "csv_delimiter": ";;"}),
        set_field(LAYOUT, {"format": "csv", "key": "id", "csv_delimiter": '"'}),
        set_field(LAYOUT, {"format": "csv", "key": "id", "csv_delimiter": "\n"}),
        set_field(LAYOUT, {"format": "jsonl", "key": "id", "csv_delimiter": None, "x": 1}),
        set_field(LAYOUT, {"format": "jsonl", "key": "id"}),
    ],
)
def test_altered_records_layout_is_tampering(alter: Any) -> None:
    with pytest.raises(TamperedError):
        open_(reseal(alter(body_of(records_manifest()))))


def test_objects_manifest_has_no_records_layout() -> None:
    body = set_field(LAYOUT, {"format": "jsonl", "key": "id", "csv_delimiter": None})(
        body_of(objects_manifest())
    )
    with pytest.raises(TamperedError, match="records layout"):
        open_(reseal(body))


def test_seal_refuses_records_without_a_layout() -> None:
    manifest = dataclasses.replace(records_manifest(), records_layout=None)
    with pytest.raises(ValueError, match="records layout is missing"):
        seal_manifest(manifest, KEY, ENCODER)


# --- writer side ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"record_count": 99},
        {"kind": "blobs"},
        {"chunks": ()},
    ],
)
def test_seal_refuses_inconsistent_manifest(change: dict[str, Any]) -> None:
    manifest = dataclasses.replace(records_manifest(), **change)
    with pytest.raises(ValueError, match="inconsistent manifest"):
        seal_manifest(manifest, KEY, ENCODER)


def test_seal_refuses_wrong_name_tag() -> None:
    manifest = objects_manifest({"a.bin": 1})
    wrong = dataclasses.replace(manifest.chunks[0], name_tag="00" * 16)
    with pytest.raises(ValueError, match="name tag"):
        seal_manifest(dataclasses.replace(manifest, chunks=(wrong,)), KEY, ENCODER)


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError):
        open_(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(body=json_values)
def test_any_sealed_json_raises_only_format_errors(body: object) -> None:
    with pytest.raises(FormatError):
        open_(reseal(body))


RECORDS_BODY = body_of(records_manifest())
CHUNK_FIELDS = sorted(RECORDS_BODY["chunks"][0])
FREE_FIELDS = {"created_at", "extra", "object_key", "plain_xxh3", "stored_xxh3"}


@settings(max_examples=300, deadline=None)
@given(
    top=st.sampled_from(sorted(RECORDS_BODY)),
    index=st.integers(min_value=0, max_value=2),
    field=st.sampled_from(CHUNK_FIELDS),
    in_chunk=st.booleans(),
    value=json_values,
)
def test_any_field_change_is_caught_or_harmless(
    top: str, index: int, field: str, in_chunk: bool, value: object
) -> None:
    path: tuple[str | int, ...] = ("chunks", index, field) if in_chunk else (top,)
    body = set_field(path, value)(RECORDS_BODY)
    try:
        manifest = open_(reseal(body))
    except FormatError:
        return
    # accepted only where any well-typed value is valid, or if nothing changed
    assert path[-1] in FREE_FIELDS or body == RECORDS_BODY
    assert manifest.chunk_count == 3
