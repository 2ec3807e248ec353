"""Generation records: the sealed commit point of one bulk run, sync or compaction of a dataset.

A sync touches some shards and leaves the others as they were, so no single shard manifest says
what the dataset holds. The record does: for every shard, the chain of generations restore
applies (a base, then deltas), the stored digest of the head manifest (binding the record to
it), and the shard's live record count and order-independent digest. Restore reads the latest
record (or an earlier one) and so sees every shard as of one finished sync, never half of one.
Records chain like manifests: each names the previous record and the digest of its bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from migrator.codec.body import U32 as _U32
from migrator.codec.body import BodyReader
from migrator.codec.chunk import ChunkEncoder, decode_chunk
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import TamperedError
from migrator.keys.datakey import DataKey

RECORD_FORMAT = "migrator/generation"
RECORD_VERSION = 1


class GenerationKind(StrEnum):
    """What made a generation; stored as its value."""

    BULK = "bulk"  # a dataset's first full copy
    SYNC = "sync"  # the changes since the generation before
    COMPACT = "compact"  # a compaction: deltas folded into new bases


KINDS = tuple(str(kind) for kind in GenerationKind)

_SHARD_FIELDS = frozenset(("shard", "chain", "head_xxh3", "records", "digest"))
_BODY_FIELDS = frozenset(
    (
        "format",
        "version",
        "plan",
        "dataset",
        "generation",
        "kind",
        "started_at",
        "finished_at",
        "seconds",
        "previous",
        "previous_xxh3",
        "changed_records",
        "changed_bytes",
        "shards",
    )
)


@dataclass(frozen=True, slots=True)
class ShardHead:
    shard: int
    chain: tuple[int, ...]  # generations whose manifests restore applies, base first
    head_xxh3: str  # xxh3-128 of the stored bytes of the last manifest of the chain
    records: int  # live records after applying the chain (0 for objects)
    digest: str  # the shard's order-independent digest (hex), as its head manifest states it

    @property
    def head(self) -> int:
        return self.chain[-1]


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    plan: str
    dataset: str
    generation: int
    kind: GenerationKind
    started_at: str  # ISO-8601 UTC
    finished_at: str
    seconds: float
    previous: int  # the record before this one (0 for the first)
    previous_xxh3: str | None
    changed_records: int  # records written or removed by this generation
    changed_bytes: int  # source bytes written by this generation
    shards: tuple[ShardHead, ...]

    def identity(self) -> ChunkIdentity:
        return record_identity(self.plan, self.dataset, self.generation)

    def shard(self, shard: int) -> ShardHead:
        head = self.shards[shard]
        assert head.shard == shard
        return head


def record_identity(plan: str, dataset: str, generation: int) -> ChunkIdentity:
    return ChunkIdentity(ChunkKind.GENERATION, plan, dataset, generation, 0, 0)


def _body(record: GenerationRecord) -> bytes:
    return orjson.dumps(
        {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "plan": record.plan,
            "dataset": record.dataset,
            "generation": record.generation,
            "kind": record.kind,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "seconds": record.seconds,
            "previous": record.previous,
            "previous_xxh3": record.previous_xxh3,
            "changed_records": record.changed_records,
            "changed_bytes": record.changed_bytes,
            "shards": [
                {
                    "shard": h.shard,
                    "chain": list(h.chain),
                    "head_xxh3": h.head_xxh3,
                    "records": h.records,
                    "digest": h.digest,
                }
                for h in record.shards
            ],
        },
        option=orjson.OPT_SORT_KEYS,
    )


def seal_record(record: GenerationRecord, key: DataKey, encoder: ChunkEncoder) -> bytes:
    _check(record, None)
    return bytes(encoder.encode(_body(record), record.identity(), key).data)


def open_record(
    data: bytes,
    *,
    plan: str,
    dataset: str,
    generation: int,
    key: DataKey,
    object_key: str | None = None,
) -> GenerationRecord:
    """Decrypt, authenticate and validate; only FormatErrors escape."""
    body = decode_chunk(
        data, record_identity(plan, dataset, generation), key, object_key=object_key
    )
    record = _Reader(object_key).record(body, (plan, dataset, generation))
    _check(record, object_key)
    return record


def _inconsistent(message: str, object_key: str | None) -> TamperedError:
    return TamperedError(f"inconsistent generation record: {message}", object_key=object_key)


def _unknown_kind(kind: str) -> str | None:
    return None if kind in KINDS else f"kind {kind!r} is not one of {KINDS}"


def _check(record: GenerationRecord, object_key: str | None) -> None:
    def bad(message: str) -> TamperedError:
        return _inconsistent(message, object_key)

    if (unknown := _unknown_kind(record.kind)) is not None:  # typed, yet any str gets here
        raise bad(unknown)
    if record.previous >= record.generation and record.generation:
        raise bad(f"generation {record.generation} follows generation {record.previous}")
    if (record.previous == 0) != (record.previous_xxh3 is None):
        raise bad("previous and previous_xxh3 disagree")
    for index, head in enumerate(record.shards):
        if head.shard != index:
            raise bad(f"shards[{index}] is shard {head.shard}")
        if not head.chain or any(b <= a for a, b in zip(head.chain, head.chain[1:], strict=False)):
            raise bad(f"shard {index}: chain {list(head.chain)} is not rising")
        if head.chain[-1] > record.generation:
            raise bad(f"shard {index}: chain reaches past generation {record.generation}")


class _Reader(BodyReader):
    what = "generation record"

    def time(self, obj: Mapping[str, Any], name: str) -> str:
        value = self.str_(obj, name, "record")
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise self.bad(f"{name} {value!r} is not ISO-8601") from None
        return value

    def head(self, obj: object, index: int) -> ShardHead:
        where = f"shards[{index}]"
        f = self.fields(obj, _SHARD_FIELDS, where)
        chain = f["chain"]
        if not isinstance(chain, list) or not all(type(g) is int and 0 < g <= _U32 for g in chain):
            raise self.bad(f"{where}.chain is not a list of generations")
        return ShardHead(
            shard=self.int_(f, "shard", where, _U32),
            chain=tuple(chain),
            head_xxh3=self.hex128(f, "head_xxh3", where),
            records=self.int_(f, "records", where),
            digest=self.hex128(f, "digest", where),
        )

    def record(self, body: bytes, sealed_as: tuple[str, str, int]) -> GenerationRecord:
        """The record in `body`, which its seal says is of (plan, dataset, generation)."""
        doc = self.document(body, RECORD_FORMAT, RECORD_VERSION)
        f = self.fields(doc, _BODY_FIELDS, "record")
        if f["format"] != RECORD_FORMAT or f["version"] != RECORD_VERSION:
            raise self.bad("format or version is not a generation record's")
        seconds = f["seconds"]
        if type(seconds) not in (int, float) or seconds < 0:
            raise self.bad("seconds is not a non-negative number")
        shards = f["shards"]
        if not isinstance(shards, list):
            raise self.bad("shards is not a list")
        plan = self.str_(f, "plan", "record")
        dataset = self.str_(f, "dataset", "record")
        generation = self.int_(f, "generation", "record", _U32)
        kind = self.str_(f, "kind", "record")
        started_at = self.time(f, "started_at")
        finished_at = self.time(f, "finished_at")
        previous = self.int_(f, "previous", "record", _U32)
        previous_xxh3 = self.opt_hex128(f, "previous_xxh3", "record")
        changed_records = self.int_(f, "changed_records", "record")
        changed_bytes = self.int_(f, "changed_bytes", "record")
        heads = tuple(self.head(obj, i) for i, obj in enumerate(shards))
        if (plan, dataset, generation) != sealed_as:
            raise TamperedError(
                "generation record body names another generation than its seal",
                object_key=self.object_key,
            )
        if (unknown := _unknown_kind(kind)) is not None:
            raise _inconsistent(unknown, self.object_key)
        return GenerationRecord(
            plan=plan,
            dataset=dataset,
            generation=generation,
            kind=GenerationKind(kind),
            started_at=started_at,
            finished_at=finished_at,
            seconds=float(seconds),
            previous=previous,
            previous_xxh3=previous_xxh3,
            changed_records=changed_records,
            changed_bytes=changed_bytes,
            shards=heads,
        )
