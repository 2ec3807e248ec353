"""Shard manifests: the authenticated, encrypted list of every chunk a shard wrote.

The body is canonical JSON (sorted keys) sealed in a MANIFEST chunk (docs/FORMAT.md), so the
destination holds neither plaintext digests nor object names in the clear, and a manifest moved
to another shard, or a chunk dropped from it, is detected on open.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from migrator.codec.body import U32 as _U32
from migrator.codec.body import BodyReader
from migrator.codec.chunk import ChunkEncoder, decode_chunk, object_tagger
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.codec.manifest_model import (
    KIND_OBJECTS,
    KIND_RECORDS,
    ChunkRef,
    RecordsLayout,
    ShardManifest,
)
from migrator.codec.manifest_rules import check_layout, check_manifest
from migrator.errors import FormatError, TamperedError, UnknownVersionError
from migrator.keys.datakey import DataKey

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "READABLE_VERSIONS",
    "ChunkRef",
    "RecordsLayout",
    "ShardManifest",
    "open_manifest",
    "seal_manifest",
]

MANIFEST_FORMAT = "migrator/shard-manifest"
# 2: generation chains (previous, removed, digests) and part versions; 3: records_layout
MANIFEST_VERSION = 3
READABLE_VERSIONS = (2, 3)  # a version-2 manifest records no layout: readers take the plan's

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
_V2_FIELDS = frozenset(
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
_BODY_FIELDS = _V2_FIELDS | {"records_layout"}
_LAYOUT_FIELDS = frozenset(("format", "key", "csv_delimiter"))


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


def _layout_body(layout: RecordsLayout | None) -> dict[str, Any] | None:
    if layout is None:
        return None
    return {"format": layout.format, "key": layout.key, "csv_delimiter": layout.csv_delimiter}


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
            "records_layout": _layout_body(manifest.records_layout),
        },
        option=orjson.OPT_SORT_KEYS,
    )


def seal_manifest(manifest: ShardManifest, key: DataKey, encoder: ChunkEncoder) -> bytes:
    """Check the manifest is self-consistent, then seal it as a MANIFEST chunk."""
    try:
        check_manifest(manifest, manifest.chunk_count, object_tagger(key), None)
        check_layout(manifest, None)
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
    manifest, declared_count, version = reader.manifest(body)
    sealed_as = (plan, dataset, generation, shard)
    if (manifest.plan, manifest.dataset, manifest.generation, manifest.shard) != sealed_as:
        raise TamperedError(
            "manifest body names another shard than its seal", object_key=object_key
        )
    check_manifest(manifest, declared_count, object_tagger(key), object_key)
    if version >= 3:
        check_layout(manifest, object_key)
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

    def versioned(self, body: bytes) -> tuple[object, int]:
        """The parsed body and its version; a well-formed version this build does not read is
        named as such before the schema is checked (a newer writer's fields look like tampering)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise self.bad(f"not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            return doc, MANIFEST_VERSION  # the schema check names what is wrong
        version = doc.get("version")
        if type(version) is not int:
            raise self.bad("version is not an integer")
        if version not in READABLE_VERSIONS:
            raise UnknownVersionError(
                f"manifest version {version} is not supported (this build reads"
                f" {', '.join(map(str, READABLE_VERSIONS))})",
                object_key=self.object_key,
            )
        return doc, version

    def layout(self, obj: object) -> RecordsLayout | None:
        if obj is None:
            return None
        f = self.fields(obj, _LAYOUT_FIELDS, "records_layout")
        return RecordsLayout(
            format=self.str_(f, "format", "records_layout"),
            key=self.str_(f, "key", "records_layout"),
            csv_delimiter=self.opt_str(f, "csv_delimiter", "records_layout"),
        )

    def manifest(self, body: bytes) -> tuple[ShardManifest, int, int]:
        """(the manifest, its declared chunk_count, its version)."""
        doc, version = self.versioned(body)
        f = self.fields(doc, _BODY_FIELDS if version >= 3 else _V2_FIELDS, "manifest")
        if f["format"] != MANIFEST_FORMAT:
            raise self.bad(f"format is {f['format']!r}, not {MANIFEST_FORMAT!r}")
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
            records_layout=self.layout(f.get("records_layout")),
        )
        return manifest, self.int_(f, "chunk_count", "manifest"), version
