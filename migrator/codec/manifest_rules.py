"""A shard manifest's consistency rules (docs/FORMAT.md §5.2, step 3): counts, sequences,
totals, chain fields and records layout agree, so a dropped chunk or an edited list is caught.

Writers run them before sealing, readers after opening.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from migrator.codec.body import HEX128 as _HEX128
from migrator.codec.digests import ZERO_DIGEST
from migrator.codec.manifest_model import KIND_OBJECTS, KIND_RECORDS, ChunkRef, ShardManifest
from migrator.errors import TamperedError, TruncatedError


def check_manifest(
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


def check_layout(manifest: ShardManifest, object_key: str | None) -> None:
    """Since version 3, a records manifest says how its records are framed and keyed; an
    objects manifest has no records layout."""
    layout = manifest.records_layout
    if manifest.kind == KIND_OBJECTS:
        if layout is not None:
            raise TamperedError(
                "inconsistent manifest: an objects manifest has a records layout",
                object_key=object_key,
            )
        return
    problem = "is missing" if layout is None else layout.problem()
    header = manifest.extra.get("csv_header")
    if problem is None and layout is not None:
        if layout.format == "csv" and manifest.chunks and not isinstance(header, str):
            problem = "is csv, but extra.csv_header is not the header row"
        elif layout.format == "jsonl" and header is not None:
            problem = "is jsonl, but extra holds a csv_header"
    if problem is not None:
        raise TamperedError(
            f"inconsistent manifest: its records layout {problem}", object_key=object_key
        )


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
