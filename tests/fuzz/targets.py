"""The parsers under fuzzing, one table entry each: a new parser is one more `Target`.

A target's `parse` takes untrusted bytes and either returns or raises one of the format's own
errors (`PARSE_ERRORS`) naming `object_key`; `check` enforces that, and anything else escaping
is a finding. Seeds are real objects made by the codec's own encoders; `wrap` turns a crafted
inner payload (a JSON body, a digest spool) into an input that gets past the outer layers
(sealed under the right key and identity, or compressed), so the inner parser sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import xxhash
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from migrator.codec.chunk import ChunkEncoder, decode_chunk, object_tag, read_header
from migrator.codec.digests import (
    DIGEST_ENTRY,
    ObjectEntry,
    iter_spool_entries,
    key_hash,
    pack_objects_map,
    pack_records_inventory,
    record_digest,
    records_map_from_spool,
    spool_digest,
    unpack_objects_map,
    unpack_records_map,
)
from migrator.codec.generation import (
    GenerationRecord,
    ShardHead,
    open_record,
    record_identity,
    seal_record,
)
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.ledger import (
    LedgerEntry,
    LedgerKeys,
    LedgerSegment,
    entry_link,
    genesis_link,
    open_segment,
    seal_segment,
)
from migrator.codec.manifest import (
    ChunkRef,
    RecordsLayout,
    ShardManifest,
    open_manifest,
    seal_manifest,
)
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
from migrator.keys.local_signing import MemorySigner
from migrator.repository.names import (
    generation_key,
    manifest_key,
    object_part_key,
    records_chunk_key,
    segment_key,
)

KEY = DataKey(bytes(range(32)))
OTHER_KEY = DataKey(bytes(range(1, 33)))
ENCODER = ChunkEncoder(3)
PLAN, DATASET, GENERATION, SHARD = "plan-ü", "orders", 5, 3

# What reading stored data may raise: the format's own errors (docs/FORMAT.md §3, §5.2, §6.2).
PARSE_ERRORS: tuple[type[FormatError], ...] = (
    TamperedError,
    TruncatedError,
    WrongKeyError,
    UnknownVersionError,
    MisplacedChunkError,
    DigestMismatchError,
)


@dataclass(frozen=True, repr=False)
class Target:
    """One parser: how to call it on untrusted bytes, and valid inputs to start from."""

    name: str
    parse: Callable[[bytes], object]
    seeds: tuple[bytes, ...]  # valid inputs, made by the codec's own encoders
    object_key: str  # passed to the parser; every error it raises must name it
    identity: ChunkIdentity | None = None  # chunk parsers: the identity the reader expects
    # damaged input -> the same damage behind valid keyless checks (header checksum, commitment)
    fixup: Callable[[bytes], bytes] | None = None
    wrap: Callable[[bytes], bytes] | None = None  # inner payload -> input that reaches its parser
    bodies: tuple[bytes, ...] = ()  # valid inner payloads, for `wrap`
    json_body: bool = False  # the inner payload is JSON: mutate it structurally too
    opens_nothing: bool = False  # no input may parse (e.g. read under the wrong key)

    def __repr__(self) -> str:
        return f"Target({self.name})"


def check(target: Target, data: bytes) -> FormatError | None:
    """Parse; None if it parsed, the error if it raised one of ours. Anything else escapes."""
    try:
        target.parse(data)
    except PARSE_ERRORS as exc:
        assert exc.object_key == target.object_key, f"{target.name}: {exc!r} lost the object key"
        assert str(exc).startswith(f"{target.object_key}: "), f"{target.name}: {exc}"
        return exc
    assert not target.opens_nothing, f"{target.name}: opened {data!r}"
    return None


# --- chunks forged from docs/FORMAT.md, independently of the encoder ------------------------

_INFO_AES = b"migrator/v1/chunk/aes-256-gcm-key"
_INFO_NONCE = b"migrator/v1/chunk/aes-256-gcm-nonce"
_INFO_COMMIT = b"migrator/v1/chunk/commitment-key"


def _hkdf(key: DataKey, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key.secret)


def identity_bytes(
    kind: int, plan: bytes, dataset: bytes, generation: int, shard: int, seq: int, tag: bytes
) -> bytes:
    """FORMAT.md §1.1's identity encoding, from raw fields (names need not be UTF-8)."""
    return b"".join(
        (
            struct.pack(">BH", kind, len(plan)),
            plan,
            struct.pack(">H", len(dataset)),
            dataset,
            struct.pack(">IIQ", generation, shard, seq),
            tag,
        )
    )


def forge_chunk(
    identity: bytes,
    payload: bytes,
    *,
    plain_size: int,
    salt: bytes,
    key: DataKey = KEY,
    key_id: bytes | None = None,
    cipher_size: int | None = None,
    aad_identity: bytes | None = None,
) -> bytes:
    """A chunk whose header fields and "compressed" payload are whatever the caller says,
    with a valid checksum, commitment and GCM tag under `key`: only the body checks remain."""
    cipher_size = len(payload) + 16 if cipher_size is None else cipher_size
    before_commitment = b"".join(
        (
            b"MGRC\x01\x01",
            identity,
            key.key_id if key_id is None else key_id,
            salt,
            struct.pack(">QQ", plain_size, cipher_size),
        )
    )
    commit_key = _hkdf(key, salt, _INFO_COMMIT, 32)
    header = before_commitment + hmac.new(commit_key, before_commitment, hashlib.sha256).digest()
    header += xxhash.xxh3_64_digest(header)
    aad = header + (identity if aad_identity is None else aad_identity)
    aes = AESGCM(_hkdf(key, salt, _INFO_AES, 32))
    return header + aes.encrypt(_hkdf(key, salt, _INFO_NONCE, 12), payload, aad)


def header_size(data: bytes) -> int | None:
    """The header length plan_len and dataset_len declare, if the data holds them."""
    if len(data) < 147:
        return None
    (plan_len,) = struct.unpack_from(">H", data, 7)
    if len(data) < 147 + plan_len:
        return None
    (dataset_len,) = struct.unpack_from(">H", data, 9 + plan_len)
    size = 147 + plan_len + dataset_len
    return size if len(data) >= size else None


def reseal_header(data: bytes, key: DataKey = KEY) -> bytes:
    """Recompute the commitment (under `key`) and checksum of a damaged header, so decoding
    gets past them to the checks behind (identity, sizes, AEAD, zstd)."""
    size = header_size(data)
    if size is None:
        return data
    commitment_at = size - 40
    salt = data[commitment_at - 48 : commitment_at - 16]
    head = data[:commitment_at]
    head += hmac.new(_hkdf(key, salt, _INFO_COMMIT, 32), head, hashlib.sha256).digest()
    return head + xxhash.xxh3_64_digest(head) + data[size:]


# --- seeds: real objects from the codec's own encoders --------------------------------------


def _records_identity(sequence: int = 0) -> ChunkIdentity:
    return ChunkIdentity(ChunkKind.RECORDS, PLAN, DATASET, GENERATION, SHARD, sequence)


def _chunk_seeds() -> tuple[bytes, ...]:
    plains = (b"", b'{"id": 1}\n', b'{"id": 2, "name": "x"}\n' * 2000, bytes(range(256)) * 3)
    return tuple(bytes(ENCODER.encode(p, _records_identity(), KEY).data) for p in plains)


def _header_seeds() -> tuple[bytes, ...]:
    tag = object_tag(KEY, "videos/a.mp4")
    identities = (
        ChunkIdentity(ChunkKind.OBJECT_PART, "p", "videos", 1, 0, 2, tag),
        ChunkIdentity(ChunkKind.MANIFEST, "", "", 0, 0, 0),
        ChunkIdentity(ChunkKind.GENERATION, "plan-" + "é" * 40, "d" * 300, 2**32 - 1, 0, 0),
    )
    made = tuple(bytes(ENCODER.encode(b"part", i, KEY).data) for i in identities)
    return _chunk_seeds() + made


def _ref(sequence: int, plain: bytes) -> ChunkRef:
    enc = ENCODER.encode(plain, _records_identity(sequence), KEY)
    return ChunkRef(
        sequence=sequence,
        object_key=records_chunk_key(DATASET, GENERATION, SHARD, sequence),
        plain_size=enc.plain_size,
        stored_size=enc.stored_size,
        records=plain.count(b"\n"),
        plain_xxh3=enc.plain_xxh3.hex(),
        stored_xxh3=enc.stored_xxh3.hex(),
    )


def _manifests() -> tuple[ShardManifest, ...]:
    refs = tuple(_ref(i, b'{"id": %d}\n' % i * (i + 1)) for i in range(3))
    base = ShardManifest(
        plan=PLAN,
        dataset=DATASET,
        generation=GENERATION,
        shard=SHARD,
        kind="records",
        chunks=refs,
        record_count=sum(r.records for r in refs),
        plain_bytes=sum(r.plain_size for r in refs),
        stored_bytes=sum(r.stored_size for r in refs),
        created_at="2026-01-02T03:04:05+00:00",
        extra={"csv_header": "id,name\n", "source": {"files": 2}},
        added_digest="1" * 32,
        digest="1" * 32,
        records_layout=RecordsLayout("csv", "id", ","),
    )
    delta = ShardManifest(
        plan=PLAN,
        dataset=DATASET,
        generation=GENERATION,
        shard=SHARD,
        kind="records",
        chunks=refs[:1],
        record_count=refs[0].records,
        plain_bytes=refs[0].plain_size,
        stored_bytes=refs[0].stored_size,
        created_at="2026-01-02T03:04:05Z",
        previous=GENERATION - 2,
        previous_xxh3="ab" * 16,
        removed=(key_hash(b"1").hex(), key_hash(b"2").hex()),
        removed_records=2,
        added_digest="2" * 32,
        removed_digest="3" * 32,
        digest="4" * 32,
        records_layout=RecordsLayout("jsonl", "id"),
    )
    parts = []
    for name, count in (("videos/a.mp4", 2), ("docs/ü.pdf", 1)):
        tag = object_tag(KEY, name)
        for part in range(count):
            parts.append(
                ChunkRef(
                    sequence=part,
                    object_key=object_part_key(DATASET, GENERATION, SHARD, tag, part),
                    plain_size=100 + part,
                    stored_size=300 + part,
                    records=0,
                    plain_xxh3="5" * 32,
                    stored_xxh3="6" * 32,
                    name=name,
                    name_tag=tag.hex(),
                    version="etag-1",
                )
            )
    objects = ShardManifest(
        plan=PLAN,
        dataset=DATASET,
        generation=GENERATION,
        shard=SHARD,
        kind="objects",
        chunks=tuple(parts),
        record_count=0,
        plain_bytes=sum(r.plain_size for r in parts),
        stored_bytes=sum(r.stored_size for r in parts),
        created_at="2026-01-02T03:04:05+00:00",
        previous=1,
        previous_xxh3="cd" * 16,
        removed=("old/gone.bin",),
        removed_digest="7" * 32,
        added_digest="8" * 32,
        digest="9" * 32,
    )
    return base, delta, objects


def _manifest_identity() -> ChunkIdentity:
    return ChunkIdentity(ChunkKind.MANIFEST, PLAN, DATASET, GENERATION, SHARD, 0)


def _records() -> tuple[GenerationRecord, ...]:
    first = GenerationRecord(
        plan=PLAN,
        dataset=DATASET,
        generation=GENERATION,
        kind="bulk",
        started_at="2026-01-02T03:04:05+00:00",
        finished_at="2026-01-02T03:05:05+00:00",
        seconds=60,
        previous=0,
        previous_xxh3=None,
        changed_records=10,
        changed_bytes=1000,
        shards=(ShardHead(0, (1,), "1" * 32, 10, "2" * 32),),
    )
    sync = GenerationRecord(
        plan=PLAN,
        dataset=DATASET,
        generation=GENERATION,
        kind="sync",
        started_at="2026-01-03T03:04:05+00:00",
        finished_at="2026-01-03T03:04:06.5+00:00",
        seconds=1.5,
        previous=GENERATION - 1,
        previous_xxh3="ef" * 16,
        changed_records=3,
        changed_bytes=120,
        shards=(
            ShardHead(0, (1, 3, GENERATION), "3" * 32, 12, "4" * 32),
            ShardHead(1, (2,), "5" * 32, 0, "0" * 32),
        ),
    )
    return first, sync


def _spools() -> tuple[bytes, ...]:
    lines = [b'{"id": 1}', b'{"id": 2}', b'{"id": 1, "v": 2}']
    keys = [b"1", b"2", b"1"]
    entries = [
        DIGEST_ENTRY.pack(key_hash(k), record_digest(line), len(line) + 1)
        for k, line in zip(keys, lines, strict=True)
    ]
    return b"", entries[0], b"".join(entries)


_OBJECT_MAPS = (
    {},
    {"videos/a.mp4": ObjectEntry("etag-1", 2048)},
    {"docs/ü.pdf": ObjectEntry("1714564800.0", 0), "b": ObjectEntry("", 2**63)},
)


def _compress(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(body)


# Inventories and spools live in the local state, not at the destination: named by their file.
RECORDS_INVENTORY = "state/orders/s00003.inventory"
OBJECTS_INVENTORY = "state/videos/s00001.inventory"
DIGEST_SPOOL = "state/orders/s00003.digests"


def _spool_parse(data: bytes) -> object:
    return (
        records_map_from_spool(data, object_key=DIGEST_SPOOL),
        spool_digest(data, object_key=DIGEST_SPOOL),
        list(iter_spool_entries(data, object_key=DIGEST_SPOOL)),
    )


# --- the table ----------------------------------------------------------------------------


# A fixed signing key (ECDSA signatures themselves are randomized).
LEDGER_SIGNER = MemorySigner(ec.derive_private_key(7, ec.SECP256R1()))
LEDGER_KEYS = LedgerKeys(KEY, LEDGER_SIGNER)
LEDGER_SEGMENT = segment_key(DATASET, SHARD, 1)


def _ledger_segments() -> tuple[bytes, ...]:
    """A shard's first audit ledger segment: empty, and with an add and a delete."""
    genesis = genesis_link(PLAN, DATASET, SHARD)
    entries, link = [], genesis
    for index, kind in enumerate(("add", "delete")):
        entry = LedgerEntry(
            index=index,
            kind=kind,
            reason="stored" if kind == "add" else "stale-part",
            at="2026-01-02T03:04:05.000006+00:00",
            who="worker-ü:12:abcd",
            user="migrator",
            object_key=records_chunk_key(DATASET, GENERATION, SHARD, 0),
            generation=GENERATION,
            stored_size=4096,
            stored_xxh3="ab" * 16,
            plain_size=65536 if kind == "add" else None,
            plain_tag=LEDGER_KEYS.plain_tag("cd" * 16) if kind == "add" else None,
            key_id=KEY.key_id.hex() if kind == "add" else None,
            link="",
        )
        link = entry_link(link, entry)
        entries.append(LedgerEntry(**{**entry.body(), "link": link}))

    def seal(chosen: list[LedgerEntry]) -> bytes:
        return seal_segment(
            plan=PLAN,
            dataset=DATASET,
            shard=SHARD,
            segment=1,
            first_index=0,
            previous_link=genesis,
            entries=chosen,
            keys=LEDGER_KEYS,
        )

    return seal([]), seal(entries)


def _ledger_wrap(line: bytes) -> bytes:
    """One crafted entry line behind a header signed for it (head: the line's own `link`)."""
    try:
        head = orjson.loads(line).get("link")
    except (orjson.JSONDecodeError, AttributeError):
        head = None
    genesis = genesis_link(PLAN, DATASET, SHARD)
    if not isinstance(head, str) or len(head) != 64:
        head = genesis
    header = LedgerSegment(
        PLAN, DATASET, SHARD, 1, 0, 1, genesis, head, LEDGER_KEYS.signing_key_id, "", ()
    )
    signed = header.header() | {"signature": LEDGER_KEYS.sign(header.signed_bytes()).hex()}
    return orjson.dumps(signed, option=orjson.OPT_SORT_KEYS) + b"\n" + line + b"\n"


def _build() -> tuple[Target, ...]:
    chunk_key = records_chunk_key(DATASET, GENERATION, SHARD, 0)
    record_key = generation_key(DATASET, GENERATION)
    mkey = manifest_key(DATASET, GENERATION, SHARD)
    records_ident = _records_identity()
    manifest_ident = _manifest_identity()
    gen_ident = record_identity(PLAN, DATASET, GENERATION)
    chunk_seeds = _chunk_seeds()
    manifests = _manifests()
    records = _records()
    spools = _spools()

    def seal(identity: ChunkIdentity) -> Callable[[bytes], bytes]:
        return lambda body: bytes(ENCODER.encode(body, identity, KEY).data)

    record_seeds = tuple(seal_record(r, KEY, ENCODER) for r in records)
    ledger_seeds = _ledger_segments()
    return (
        Target(
            name="chunk-header",
            parse=lambda d: read_header(d, object_key=chunk_key),
            seeds=_header_seeds(),
            object_key=chunk_key,
            fixup=reseal_header,
        ),
        Target(
            name="chunk",
            parse=lambda d: decode_chunk(d, records_ident, KEY, object_key=chunk_key),
            seeds=chunk_seeds,
            object_key=chunk_key,
            identity=records_ident,
            fixup=reseal_header,
            wrap=seal(records_ident),
            bodies=(b"", b"x" * 100),
        ),
        Target(
            name="chunk-wrong-key",
            parse=lambda d: decode_chunk(d, records_ident, OTHER_KEY, object_key=chunk_key),
            seeds=chunk_seeds,
            object_key=chunk_key,
            identity=records_ident,
            fixup=reseal_header,
            opens_nothing=True,
        ),
        Target(
            name="manifest",
            parse=lambda d: open_manifest(
                d,
                plan=PLAN,
                dataset=DATASET,
                generation=GENERATION,
                shard=SHARD,
                key=KEY,
                object_key=mkey,
            ),
            seeds=tuple(seal_manifest(m, KEY, ENCODER) for m in manifests),
            object_key=mkey,
            identity=manifest_ident,
            fixup=reseal_header,
            wrap=seal(manifest_ident),
            bodies=tuple(
                decode_chunk(seal_manifest(m, KEY, ENCODER), manifest_ident, KEY) for m in manifests
            ),
            json_body=True,
        ),
        Target(
            name="generation-record",
            parse=lambda d: open_record(
                d, plan=PLAN, dataset=DATASET, generation=GENERATION, key=KEY, object_key=record_key
            ),
            seeds=record_seeds,
            object_key=record_key,
            identity=gen_ident,
            fixup=reseal_header,
            wrap=seal(gen_ident),
            bodies=tuple(decode_chunk(s, gen_ident, KEY) for s in record_seeds),
            json_body=True,
        ),
        Target(
            name="records-inventory",
            parse=lambda d: unpack_records_map(d, object_key=RECORDS_INVENTORY),
            seeds=tuple(pack_records_inventory(s) for s in spools),
            object_key=RECORDS_INVENTORY,
            wrap=_compress,
            bodies=spools,
        ),
        Target(
            name="objects-inventory",
            parse=lambda d: unpack_objects_map(d, object_key=OBJECTS_INVENTORY),
            seeds=tuple(pack_objects_map(m) for m in _OBJECT_MAPS),
            object_key=OBJECTS_INVENTORY,
            wrap=_compress,
            bodies=tuple(
                orjson.dumps({n: [e.version, e.size] for n, e in m.items()}) for m in _OBJECT_MAPS
            ),
            json_body=True,
        ),
        Target(
            name="digest-spool",
            parse=_spool_parse,
            seeds=spools,
            object_key=DIGEST_SPOOL,
        ),
        Target(
            name="audit-ledger-segment",
            parse=lambda d: open_segment(
                d,
                plan=PLAN,
                dataset=DATASET,
                shard=SHARD,
                segment=1,
                verifier=LEDGER_SIGNER,
                object_key=LEDGER_SEGMENT,
            ),
            seeds=ledger_seeds,
            object_key=LEDGER_SEGMENT,
            wrap=_ledger_wrap,
            bodies=(ledger_seeds[1].split(b"\n")[1],),
            json_body=True,
        ),
    )


TARGETS: tuple[Target, ...] = _build()
BY_NAME: dict[str, Target] = {t.name: t for t in TARGETS}
