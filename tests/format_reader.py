"""Reading a dataset from a local destination by docs/FORMAT.md alone: records framing and keys
(§1.4), manifests (§5), generation records (§6) and the reader's checklist (§12), in its order.

Like format_decoder.py it imports nothing from `migrator`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from tests.format_decoder import (
    GENERATION,
    MANIFEST,
    OBJECT_PART,
    RECORDS,
    Identity,
    Refused,
    data_keys,
    decode,
    name_tag,
    read_kek_file,
    sealing_key,
    xxh3_128_hex,
)

MOD = 2**128
_RECORD_KEY = re.compile(r"g(\d{6,})\.mgc")
_LAYOUT_FIELDS = {"format", "key", "csv_delimiter"}
_MANIFEST_V2 = {
    "format", "version", "plan", "dataset", "generation", "shard", "kind", "chunk_count",
    "record_count", "plain_bytes", "stored_bytes", "created_at", "extra", "chunks", "previous",
    "previous_xxh3", "removed", "removed_records", "added_digest", "removed_digest", "digest",
}  # fmt: skip


@dataclass
class Shard:
    records: Counter[bytes] = field(default_factory=Counter)  # live records, without line feeds
    objects: dict[str, bytes] = field(default_factory=dict)  # live objects by name
    csv_header: str | None = None


# --- §1.4: records -------------------------------------------------------------------------


def split_records(plain: bytes, delimiter: bytes | None, object_key: str) -> list[bytes]:
    """§1.4 framing of a records chunk (§12, step 22): a LF outside a quoted field ends a
    record; in CSV (`delimiter`) a `"` opens a quoted field only at a field's start."""
    records, start, at = [], 0, 0
    quoted, field_start = False, True
    while at < len(plain):
        byte = plain[at : at + 1]
        if quoted:
            if byte == b'"':
                if plain[at + 1 : at + 2] == b'"':
                    at += 2
                    continue
                quoted = False
            at += 1
        elif delimiter and field_start and byte == b'"':
            quoted, field_start = True, False
            at += 1
        elif delimiter and plain.startswith(delimiter, at):
            field_start = True
            at += len(delimiter)
        elif byte == b"\n":
            records.append(plain[start:at])
            start, field_start = at + 1, True
            at += 1
        else:
            field_start = False
            at += 1
    if not plain.endswith(b"\n") or quoted or start != len(plain):
        raise Refused("12.22 records chunk does not end on a record", object_key)
    return records


def csv_fields(record: bytes, delimiter: bytes, upto: int) -> list[bytes]:
    """§1.4 dialect: fields read left to right, as far as field `upto`."""
    fields: list[bytes] = []
    at = 0
    while len(fields) <= upto:
        if record[at : at + 1] == b'"':
            value, at = bytearray(), at + 1
            while True:
                close = record.index(b'"', at)
                value += record[at:close]
                if record[close + 1 : close + 2] == b'"':
                    value += b'"'
                    at = close + 2
                    continue
                at = close + 1
                break
            fields.append(bytes(value))
        else:
            end = record.find(delimiter, at)
            fields.append(record[at : len(record) if end < 0 else end])
            at = len(record) if end < 0 else end
        if at >= len(record):
            break
        at += len(delimiter)  # the delimiter after the field
    return fields


def record_key(record: bytes, layout: dict[str, Any], header: str | None) -> bytes:
    """§1.4, "Key field"."""
    if layout["format"] == "jsonl":
        doc = json.loads(record)  # of repeated names, the last
        value = doc[layout["key"]]
        if isinstance(value, str) and value:
            return value.encode("utf-8", "surrogatepass")  # an unpaired surrogate: WTF-8
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value).encode()
        raise ValueError("no key")
    assert header is not None
    delimiter = layout["csv_delimiter"].encode()
    column = csv_fields(header.encode(), delimiter, 1 << 30).index(layout["key"].encode())
    key = csv_fields(record.removesuffix(b"\r"), delimiter, column)[column]
    if not key:
        raise ValueError("empty key")
    return key


# --- §5: manifests -------------------------------------------------------------------------


def check_manifest(body: dict[str, Any], where: tuple[str, str, int, int], okey: str) -> None:
    """§5.2, steps 2-3 (§12, step 12)."""
    version = body.get("version")
    if body.get("format") != "migrator/shard-manifest" or version not in (2, 3):
        raise Refused("5.2 format or version", okey)
    if set(body) != (_MANIFEST_V2 | {"records_layout"} if version == 3 else _MANIFEST_V2):
        raise Refused("5.2 fields", okey)
    if (body["plan"], body["dataset"], body["generation"], body["shard"]) != where:
        raise Refused("5.2 names another shard", okey)
    chunks = body["chunks"]
    if len(chunks) != body["chunk_count"]:
        raise Refused("5.2 chunk_count", okey)
    for total, part in (("record_count", "records"), ("plain_bytes", "plain_size")):
        if body[total] != sum(c[part] for c in chunks):
            raise Refused(f"5.2 {total}", okey)
    if body["stored_bytes"] != sum(c["stored_size"] for c in chunks):
        raise Refused("5.2 stored_bytes", okey)
    if body["kind"] == "records":
        if [c["sequence"] for c in chunks] != list(range(len(chunks))):
            raise Refused("5.2 records sequences", okey)
    else:
        parts: dict[str, list[int]] = {}
        for c in chunks:
            parts.setdefault(c["name"], []).append(c["sequence"])
        if any(seqs != list(range(len(seqs))) for seqs in parts.values()):
            raise Refused("5.2 object parts", okey)
    if len({c["object_key"] for c in chunks}) != len(chunks):
        raise Refused("5.2 object keys repeat", okey)
    if version == 3:
        layout, header = body["records_layout"], body["extra"].get("csv_header")
        if body["kind"] == "objects":
            good = layout is None
        else:
            good = (
                isinstance(layout, dict)
                and set(layout) == _LAYOUT_FIELDS
                and isinstance(layout["key"], str)
                and bool(layout["key"])
                and (
                    (layout["format"] == "jsonl" and layout["csv_delimiter"] is None)
                    or (
                        layout["format"] == "csv"
                        and isinstance(layout["csv_delimiter"], str)
                        and len(layout["csv_delimiter"]) == 1
                        and layout["csv_delimiter"] not in '"\r\n'
                    )
                )
            )
            if good and layout["format"] == "csv" and chunks:
                good = isinstance(header, str)
            if good and layout["format"] == "jsonl":
                good = header is None
        if not good:
            raise Refused("5.2 records layout", okey)


@dataclass
class Reader:
    """One local destination (its store root) and its local KEK file."""

    root: Path
    kek_file: Path
    plan: str
    manifests: list[dict[str, Any]] = field(default_factory=list)  # every one read, in order

    def get(self, object_key: str) -> bytes:
        path = self.root / object_key
        if not path.is_file():
            raise Refused("missing object", object_key)
        return path.read_bytes()

    def dataset(self, dataset: str, plan_layout: dict[str, Any] | None = None) -> dict[int, Shard]:
        """Every shard of the dataset as of its newest generation: §12, steps 1-27."""
        keys = data_keys(self.root, read_kek_file(self.kek_file), self.plan, dataset)
        folder = self.root / dataset / "_generations"
        gens = sorted(int(m[1]) for p in folder.iterdir() if (m := _RECORD_KEY.fullmatch(p.name)))
        generation = gens[-1]
        rkey = f"{dataset}/_generations/g{generation:06d}.mgc"
        ident = Identity(GENERATION, self.plan, dataset, generation, 0, 0)
        record = json.loads(decode(self.get(rkey), ident, keys, rkey))
        if (record["format"], record["version"]) != ("migrator/generation", 1):
            raise Refused("6.2 format or version", rkey)
        if (record["plan"], record["dataset"], record["generation"]) != (
            self.plan,
            dataset,
            generation,
        ):
            raise Refused("6.2 names another generation", rkey)
        out: dict[int, Shard] = {}
        for index, head in enumerate(record["shards"]):
            if head["shard"] != index:
                raise Refused("6.2 shards out of order", rkey)
            out[index] = self.shard(dataset, index, head, keys, plan_layout)
        return out

    def shard(
        self,
        dataset: str,
        shard: int,
        head: dict[str, Any],
        keys: dict[bytes, bytes],
        plan_layout: dict[str, Any] | None,
    ) -> Shard:
        chain: list[tuple[dict[str, Any], str]] = []
        tag_keys: list[bytes] = []  # the key that sealed each manifest makes its name tags
        for generation in head["chain"]:  # steps 11-14
            okey = f"{dataset}/g{generation:06d}/s{shard:05d}/manifest.mgc"
            stored = self.get(okey)
            ident = Identity(MANIFEST, self.plan, dataset, generation, shard, 0)
            body = json.loads(decode(stored, ident, keys, okey))
            check_manifest(body, (self.plan, dataset, generation, shard), okey)
            if chain:
                before, before_xxh3 = chain[-1]
                digest = (
                    int(before["digest"], 16)
                    - int(body["removed_digest"], 16)
                    + int(body["added_digest"], 16)
                ) % MOD
                if (body["previous"], body["previous_xxh3"]) != (
                    before["generation"],
                    before_xxh3,
                ) or digest != int(body["digest"], 16):
                    raise Refused("5.3 link", okey)
            elif body["previous"] != 0 or body["digest"] != body["added_digest"]:
                raise Refused("5.3 chain starts at a delta", okey)
            chain.append((body, xxh3_128_hex(stored)))
            self.manifests.append(body)
            tag_keys.append(sealing_key(stored, keys))
        if chain[-1][1] != head["head_xxh3"]:
            raise Refused("12.14 head manifest is not the record's", okey)
        manifests = [body for body, _ in chain]
        live = sum(m["record_count"] - m["removed_records"] for m in manifests)
        if (head["records"], head["digest"]) != (live, manifests[-1]["digest"]):  # step 16
            raise Refused("12.16 the record's count or digest", okey)
        layouts = {json.dumps(m["records_layout"]) for m in manifests if m.get("records_layout")}
        headers = {m["extra"]["csv_header"] for m in manifests if "csv_header" in m["extra"]}
        if len(layouts) > 1 or len(headers) > 1:  # step 15
            raise Refused("12.15 one layout and header a chain", okey)
        layout = json.loads(layouts.pop()) if layouts else plan_layout
        out = Shard(csv_header=headers.pop() if headers else None)
        for i, body in enumerate(manifests):  # steps 17-27, then 23 against later manifests
            later = manifests[i + 1 :]
            removed = {r for m in later for r in m["removed"]}
            if body["kind"] == "objects":
                rewritten = removed | {c["name"] for m in later for c in m["chunks"]}
                self.objects(body, keys, tag_keys[i], rewritten, out)
            else:
                assert layout is not None, "version-2 manifests: pass the plan's layout"
                self.records(body, keys, layout, out.csv_header, removed, out)
        return out

    def chunk(self, body: dict[str, Any], ref: dict[str, Any], keys: dict[bytes, bytes]) -> bytes:
        """Steps 17-20: fetch, decode as the manifest says, both digests."""
        okey = ref["object_key"]
        stored = self.get(okey)
        if body["kind"] == "records":
            kind, tag = RECORDS, bytes(16)
        else:
            kind, tag = OBJECT_PART, bytes.fromhex(ref["name_tag"])
        ident = Identity(
            kind,
            self.plan,
            body["dataset"],
            body["generation"],
            body["shard"],
            ref["sequence"],
            tag,
        )
        plain = decode(stored, ident, keys, okey, ref["plain_size"])
        if xxh3_128_hex(plain) != ref["plain_xxh3"]:
            raise Refused("12.19 plaintext digest", okey)
        if xxh3_128_hex(stored) != ref["stored_xxh3"]:
            raise Refused("12.20 stale or replayed copy", okey)
        return plain

    def records(
        self,
        body: dict[str, Any],
        keys: dict[bytes, bytes],
        layout: dict[str, Any],
        header: str | None,
        removed: set[str],
        out: Shard,
    ) -> None:
        added = 0
        for ref in body["chunks"]:
            delimiter = layout["csv_delimiter"].encode() if layout["format"] == "csv" else None
            for record in split_records(self.chunk(body, ref, keys), delimiter, ref["object_key"]):
                added += int.from_bytes(xxhash.xxh3_128_digest(record))
                if xxh3_128_hex(record_key(record, layout, header)) not in removed:
                    out.records[record] += 1
        if added % MOD != int(body["added_digest"], 16):  # step 27
            raise Refused("12.27 added digest", f"{body['dataset']}/g{body['generation']:06d}")

    def objects(
        self,
        body: dict[str, Any],
        keys: dict[bytes, bytes],
        tag_key: bytes,
        gone: set[str],
        out: Shard,
    ) -> None:
        data: dict[str, bytearray] = {}
        versions: dict[str, str] = {}
        for ref in body["chunks"]:
            if name_tag(tag_key, ref["name"]).hex() != ref["name_tag"]:
                raise Refused("5.2 name tag", ref["object_key"])
            data.setdefault(ref["name"], bytearray()).extend(self.chunk(body, ref, keys))
            versions[ref["name"]] = ref["version"]
        added = 0
        for name, content in data.items():
            entry = f"{name}\0{len(content)}\0{versions[name]}".encode()
            added += int.from_bytes(xxhash.xxh3_128_digest(entry))
            if name not in gone:
                out.objects[name] = bytes(content)
        if added % MOD != int(body["added_digest"], 16):
            raise Refused("12.27 added digest", f"{body['dataset']}/g{body['generation']:06d}")
