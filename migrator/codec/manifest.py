"""Shard manifests: the authenticated, encrypted list of every chunk a shard wrote.

The body is canonical JSON (sorted keys) sealed in a MANIFEST chunk (docs/FORMAT.md), so the
destination holds neither plaintext digests nor object names in the clear, and a manifest moved
to another shard, or a chunk dropped from it, is detected on open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

import orjson

from migrator.codec.body import HEX128 as _HEX128
from migrator.codec.body import U32 as _U32
from migrator.codec.body import BodyReader
from migrator.codec.chunk import ChunkEncoder, decode_chunk, object_tagger
from migrator.codec.digests import ZERO_DIGEST
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import FormatError, TamperedError, TruncatedError
from migrator.keys.datakey import DataKey

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "ChunkRef",
    "ShardManifest",
    "manifest_key",
    "object_part_key",
    "open_manifest",
    "records_chunk_key",
    "seal_manifest",
]

MANIFEST_FORMAT = "migrator/shard-manifest"
MANIFEST_VERSION = 2  # 2: generation chains (previous, removed, digests) and part versions
MANIFEST_NAME = "manifest.mgc"  # a shard's manifest object, under its shard prefix
KIND_RECORDS = "records"
KIND_OBJECTS = "objects"

_CHUNK_FIELDS = frozenset(
    (
        "sequence",
        "object_key",
        "plain_size",
        "stored_size",
        "records",
        "plain_xxh3",
        "stored_xxh3",
        "name",
        "name_tag",
        "version",
    )
)
_BODY_FIELDS = frozenset(
    (
        "format",
        "version",
        "plan",
        "dataset",
        "generation",
        "shard",
        "kind",
        "chunk_count",
        "record_count",
        "plain_bytes",
        "stored_bytes",
        "created_at",
        "extra",
        "chunks",
        "previous",
        "previous_xxh3",
        "removed",
        "removed_records",
        "added_digest",
        "removed_digest",
        "digest",
    )
)


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One stored chunk as the manifest lists it."""

    sequence: int  # identity sequence: chunk number for records, part number for object parts
    object_key: str  # destination key (relative to the store root)
    plain_size: int
    stored_size: int
    records: int  # records in the chunk (0 for object parts)
    plain_xxh3: str  # hex
    stored_xxh3: str  # hex
    name: str | None = None  # object parts: the source object's relative name
    name_tag: str | None = None  # object parts: hex of object_tag
    version: str | None = None  # object parts: the source object's version when it was read


@dataclass(frozen=True, slots=True)
class ShardManifest:
    """Everything one shard of one generation wrote, with totals that detect truncation."""

    plan: str
    dataset: str
    generation: int
    shard: int
    kind: str  # "records" | "objects"
    chunks: tuple[ChunkRef, ...]
    record_count: int
    plain_bytes: int
    stored_bytes: int
    created_at: str  # ISO-8601 UTC
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-safe values
    # Generations: 0 makes this a base; else the generation of the shard manifest it follows,
    # whose stored bytes hash to previous_xxh3. A delta first removes `removed` (records: hex
    # key hashes, objects: names) and every key or name it rewrites, then adds its chunks.
    previous: int = 0
    previous_xxh3: str | None = None
    removed: tuple[str, ...] = ()
    removed_records: int = 0
    added_digest: str = ZERO_DIGEST  # order-independent digest of what the chunks hold
    removed_digest: str = ZERO_DIGEST  # ... of the entries this generation removed or replaced
    digest: str = ZERO_DIGEST  # ... of the shard after this generation: previous + added - removed

    @property
    def is_base(self) -> bool:
        return self.previous == 0

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    def identity(self) -> ChunkIdentity:
        return ChunkIdentity(
            ChunkKind.MANIFEST, self.plan, self.dataset, self.generation, self.shard, 0
        )


# --- object key layout ---------------------------------------------------------------------


def _shard_prefix(dataset: str, generation: int, shard: int) -> str:
    return f"{dataset}/g{generation:06d}/s{shard:05d}"


def shard_prefix(dataset: str, generation: int, shard: int) -> str:
    """Everything one shard of one generation wrote lies under this prefix."""
    return _shard_prefix(dataset, generation, shard) + "/"


def manifest_key(prefix_free_dataset: str, generation: int, shard: int) -> str:
    return f"{_shard_prefix(prefix_free_dataset, generation, shard)}/{MANIFEST_NAME}"


def records_chunk_key(dataset: str, generation: int, shard: int, sequence: int) -> str:
    return f"{_shard_prefix(dataset, generation, shard)}/r/{sequence:08d}.mgc"


def object_part_key(dataset: str, generation: int, shard: int, name_tag: bytes, part: int) -> str:
    return f"{_shard_prefix(dataset, generation, shard)}/o/{name_tag.hex()}/{part:06d}.mgc"


# --- seal / open ---------------------------------------------------------------------------


def _chunk_body(ref: ChunkRef) -> dict[str, Any]:
    return {
        "sequence": ref.sequence,
        "object_key": ref.object_key,
        "plain_size": ref.plain_size,
        "stored_size": ref.stored_size,
        "records": ref.records,
        "plain_xxh3": ref.plain_xxh3,
        "stored_xxh3": ref.stored_xxh3,
        "name": ref.name,
        "name_tag": ref.name_tag,
        "version": ref.version,
    }


def _body(manifest: ShardManifest) -> bytes:
    return orjson.dumps(
        {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "plan": manifest.plan,
            "dataset": manifest.dataset,
            "generation": manifest.generation,
            "shard": manifest.shard,
            "kind": manifest.kind,
            "chunk_count": manifest.chunk_count,
            "record_count": manifest.record_count,
            "plain_bytes": manifest.plain_bytes,
            "stored_bytes": manifest.stored_bytes,
            "created_at": manifest.created_at,
            "extra": manifest.extra,
            "chunks": [_chunk_body(ref) for ref in manifest.chunks],
            "previous": manifest.previous,
            "previous_xxh3": manifest.previous_xxh3,
            "removed": list(manifest.removed),
            "removed_records": manifest.removed_records,
            "added_digest": manifest.added_digest,
            "removed_digest": manifest.removed_digest,
            "digest": manifest.digest,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def seal_manifest(manifest: ShardManifest, key: DataKey, encoder: ChunkEncoder) -> bytes:
    """Check the manifest is self-consistent, then seal it as a MANIFEST chunk."""
    try:
        _check(manifest, manifest.chunk_count, object_tagger(key), None)
    except FormatError as exc:
        raise ValueError(f"refusing to seal an inconsistent manifest: {exc}") from None
    return bytes(encoder.encode(_body(manifest), manifest.identity(), key).data)


def open_manifest(
    data: bytes,
    *,
    plan: str,
    dataset: str,
    generation: int,
    shard: int,
    key: DataKey,
    object_key: str | None = None,
) -> ShardManifest:
    """Decrypt, authenticate and validate a shard manifest; only FormatErrors escape."""
    expected = ChunkIdentity(ChunkKind.MANIFEST, plan, dataset, generation, shard, 0)
    body = decode_chunk(data, expected, key, object_key=object_key)
    reader = _BodyReader(object_key)
    manifest, declared_count = reader.manifest(body)
    sealed_as = (plan, dataset, generation, shard)
    if (manifest.plan, manifest.dataset, manifest.generation, manifest.shard) != sealed_as:
        raise TamperedError(
            "manifest body names another shard than its seal", object_key=object_key
        )
    _check(manifest, declared_count, object_tagger(key), object_key)
    return manifest


# --- validation ----------------------------------------------------------------------------


class _BodyReader(BodyReader):
    what = "manifest"

    def chunk(self, obj: object, index: int) -> ChunkRef:
        where = f"chunks[{index}]"
        f = self.fields(obj, _CHUNK_FIELDS, where)
        name_tag = None if f["name_tag"] is None else self.hex128(f, "name_tag", where)
        return ChunkRef(
            sequence=self.int_(f, "sequence", where),
            object_key=self.str_(f, "object_key", where),
            plain_size=self.int_(f, "plain_size", where),
            stored_size=self.int_(f, "stored_size", where),
            records=self.int_(f, "records", where),
            plain_xxh3=self.hex128(f, "plain_xxh3", where),
            stored_xxh3=self.hex128(f, "stored_xxh3", where),
            name=self.opt_str(f, "name", where),
            name_tag=name_tag,
            version=self.opt_str(f, "version", where),
        )

    def manifest(self, body: bytes) -> tuple[ShardManifest, int]:
        doc = self.document(body, MANIFEST_FORMAT, MANIFEST_VERSION)
        f = self.fields(doc, _BODY_FIELDS, "manifest")
        if f["format"] != MANIFEST_FORMAT:
            raise self.bad(f"format is {f['format']!r}, not {MANIFEST_FORMAT!r}")
        if type(f["version"]) is not int:
            raise self.bad("version is not an integer")
        created_at = self.str_(f, "created_at", "manifest")
        try:
            datetime.fromisoformat(created_at)
        except ValueError:
            raise self.bad(f"created_at {created_at!r} is not ISO-8601") from None
        extra = f["extra"]
        if not isinstance(extra, dict):
            raise self.bad("extra is not an object")
        chunks = f["chunks"]
        if not isinstance(chunks, list):
            raise self.bad("chunks is not a list")
        kind = self.str_(f, "kind", "manifest")
        if kind not in (KIND_RECORDS, KIND_OBJECTS):
            raise self.bad(f"kind {kind!r} is neither {KIND_RECORDS!r} nor {KIND_OBJECTS!r}")
        manifest = ShardManifest(
            plan=self.str_(f, "plan", "manifest"),
            dataset=self.str_(f, "dataset", "manifest"),
            generation=self.int_(f, "generation", "manifest", _U32),
            shard=self.int_(f, "shard", "manifest", _U32),
            kind=kind,
            chunks=tuple(self.chunk(obj, i) for i, obj in enumerate(chunks)),
            record_count=self.int_(f, "record_count", "manifest"),
            plain_bytes=self.int_(f, "plain_bytes", "manifest"),
            stored_bytes=self.int_(f, "stored_bytes", "manifest"),
            created_at=created_at,
            extra=extra,
            previous=self.int_(f, "previous", "manifest", _U32),
            previous_xxh3=self.opt_hex128(f, "previous_xxh3", "manifest"),
            removed=self.strings(f, "removed", "manifest"),
            removed_records=self.int_(f, "removed_records", "manifest"),
            added_digest=self.hex128(f, "added_digest", "manifest"),
            removed_digest=self.hex128(f, "removed_digest", "manifest"),
            digest=self.hex128(f, "digest", "manifest"),
        )
        return manifest, self.int_(f, "chunk_count", "manifest")


def _check(
    manifest: ShardManifest,
    declared_count: int,
    tag: Callable[[str], bytes],
    object_key: str | None,
) -> None:
    """Counts, sequences and totals agree: the checks that catch a dropped chunk."""

    def tampered(message: str) -> TamperedError:
        return TamperedError(f"inconsistent manifest: {message}", object_key=object_key)

    def truncated(message: str) -> TruncatedError:
        return TruncatedError(f"shard is missing chunks: {message}", object_key=object_key)

    listed = len(manifest.chunks)
    if listed < declared_count:
        raise truncated(f"manifest lists {listed} chunks, chunk_count is {declared_count}")
    if listed > declared_count:
        raise tampered(f"manifest lists {listed} chunks, chunk_count is {declared_count}")

    if manifest.kind == KIND_RECORDS:
        _check_records(manifest.chunks, tampered, truncated)
    elif manifest.kind == KIND_OBJECTS:
        _check_objects(manifest.chunks, tag, tampered, truncated)
    else:
        raise tampered(f"kind {manifest.kind!r} is neither {KIND_RECORDS!r} nor {KIND_OBJECTS!r}")

    _check_chain(manifest, tampered)

    if len({ref.object_key for ref in manifest.chunks}) != listed:
        raise tampered("two chunks share one object key")
    for total, declared in (
        ("record_count", manifest.record_count),
        ("plain_bytes", manifest.plain_bytes),
        ("stored_bytes", manifest.stored_bytes),
    ):
        summed = sum(getattr(ref, _SUMMED[total]) for ref in manifest.chunks)
        if summed < declared:
            raise truncated(f"chunks add up to {total} {summed}, manifest says {declared}")
        if summed > declared:
            raise tampered(f"chunks add up to {total} {summed}, manifest says {declared}")


def _check_chain(manifest: ShardManifest, tampered: Callable[[str], TamperedError]) -> None:
    """A base removes nothing and follows nothing; a delta follows an earlier generation."""
    if manifest.previous == 0:
        if manifest.previous_xxh3 is not None or manifest.removed or manifest.removed_records:
            raise tampered("a base manifest names a previous generation or removals")
        if manifest.removed_digest != ZERO_DIGEST:
            raise tampered("a base manifest has a removed digest")
    else:
        if manifest.previous >= manifest.generation:
            raise tampered(
                f"generation {manifest.generation} follows generation {manifest.previous}"
            )
        if manifest.previous_xxh3 is None:
            raise tampered("a delta manifest lacks its previous manifest's digest")
    if len(set(manifest.removed)) != len(manifest.removed):
        raise tampered("a removal is listed twice")
    if manifest.kind == KIND_RECORDS:
        for value in manifest.removed:
            if not _HEX128.fullmatch(value):
                raise tampered("a removed record key hash is not 32 lowercase hex digits")


_SUMMED = {"record_count": "records", "plain_bytes": "plain_size", "stored_bytes": "stored_size"}


def _check_sequences(
    sequences: list[int],
    what: str,
    tampered: Callable[[str], TamperedError],
    truncated: Callable[[str], TruncatedError],
) -> None:
    """Must be 0..n-1: a repeat or step back is an edit, a gap in a rising run a lost chunk."""
    for previous, current in pairwise(sequences):
        if current <= previous:
            raise tampered(f"{what}: sequence {current} follows {previous}")
    for expected, sequence in enumerate(sequences):
        if sequence != expected:
            raise truncated(f"{what}: sequence {expected} is missing")


def _check_records(
    chunks: tuple[ChunkRef, ...],
    tampered: Callable[[str], TamperedError],
    truncated: Callable[[str], TruncatedError],
) -> None:
    for ref in chunks:
        if ref.name is not None or ref.name_tag is not None or ref.version is not None:
            raise tampered(f"records chunk {ref.object_key} carries an object name")
    _check_sequences([ref.sequence for ref in chunks], "records chunks", tampered, truncated)


def _check_objects(
    chunks: tuple[ChunkRef, ...],
    tag: Callable[[str], bytes],
    tampered: Callable[[str], TamperedError],
    truncated: Callable[[str], TruncatedError],
) -> None:
    parts: dict[str, list[ChunkRef]] = {}
    for ref in chunks:
        if ref.name is None or ref.name_tag is None:
            raise tampered(f"object part {ref.object_key} has no name or name tag")
        if ref.records != 0:
            raise tampered(f"object part {ref.object_key} claims {ref.records} records")
        if ref.version is None:
            raise tampered(f"object part {ref.object_key} has no source version")
        parts.setdefault(ref.name, []).append(ref)
    names_by_tag: dict[str, str] = {}
    for name, refs in parts.items():
        name_tag = tag(name).hex()
        if names_by_tag.setdefault(name_tag, name) != name:
            raise tampered(f"two object names share name tag {name_tag}")
        for ref in refs:
            if ref.name_tag != name_tag:
                raise tampered(f"name tag of {ref.object_key} does not match its name")
            if ref.version != refs[0].version:
                raise tampered(f"parts of object {name_tag} come from different versions")
        # name the object by its tag: names stay out of logs
        what = f"parts of object {name_tag}"
        _check_sequences([ref.sequence for ref in refs], what, tampered, truncated)
