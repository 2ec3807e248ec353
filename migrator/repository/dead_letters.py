"""Sealed dead-letter sets at the destination (docs/FORMAT.md §9): seal and store their chunks,
list the generations that have one, and open a set, each chunk authenticated as it is read.

A set is a generation's quarantined records, sealed with the dataset's data key as chunks of
their own kind under `{dataset}/_deadletters/g{generation}/`. Its first chunk is stored last, so
a set whose first chunk exists is whole.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from migrator.codec.body import U32, BodyReader
from migrator.codec.chunk import ChunkEncoder, decode_chunk
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import MissingObjectError, TruncatedError, UnexpectedObjectError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, key_for
from migrator.repository.names import dead_letters_key, dead_letters_of_key, dead_letters_prefix
from migrator.stores.base import ObjectStore

BODY_FORMAT = "migrator/dead-letters"
BODY_VERSION = 1
_BODY_FIELDS = frozenset(
    (
        "format",
        "version",
        "plan",
        "dataset",
        "generation",
        "sequence",
        "chunk_count",
        "record_count",
        "csv_header",
        "records",
    )
)
_RECORD_FIELDS = frozenset(("file", "line", "offset", "reason", "data"))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    file: str  # the source file's name, relative to the source root
    line: int
    offset: int  # byte offset of the record in its file
    reason: str
    data: bytes  # the record as read, without the line feed that ended it


@dataclass(frozen=True, slots=True)
class DeadLetterSet:
    dataset: str
    generation: int
    records: int
    chunks: int
    csv_header: str | None  # CSV datasets: the header row the records belong under


def dead_letters_identity(plan: str, dataset: str, generation: int, sequence: int) -> ChunkIdentity:
    return ChunkIdentity(ChunkKind.DEAD_LETTERS, plan, dataset, generation, 0, sequence)


# --- storing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetTotals:
    """What every chunk of a set states about the whole set."""

    chunk_count: int
    record_count: int
    csv_header: str | None


def seal_chunk(
    encoder: ChunkEncoder,
    key: DataKey,
    *,
    plan: str,
    dataset: str,
    generation: int,
    sequence: int,
    totals: SetTotals,
    letters: Iterable[DeadLetter],
) -> bytes:
    """One chunk of a set, sealed with the dataset's data key."""
    body = orjson.dumps(
        {
            "format": BODY_FORMAT,
            "version": BODY_VERSION,
            "plan": plan,
            "dataset": dataset,
            "generation": generation,
            "sequence": sequence,
            "chunk_count": totals.chunk_count,
            "record_count": totals.record_count,
            "csv_header": totals.csv_header,
            "records": [_record_json(letter) for letter in letters],
        },
        option=orjson.OPT_SORT_KEYS,
    )
    ident = dead_letters_identity(plan, dataset, generation, sequence)
    return bytes(encoder.encode(body, ident, key).data)


def _record_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "file": letter.file,
        "line": letter.line,
        "offset": letter.offset,
        "reason": letter.reason,
        "data": base64.b64encode(letter.data).decode(),
    }


def put_chunk(
    store: ObjectStore, plan: str, dataset: str, generation: int, sequence: int, sealed: bytes
) -> None:
    store.put(dead_letters_key(dataset, generation, sequence), sealed, {"migrator-plan": plan})


# --- reading back -----------------------------------------------------------------------


def dead_letter_generations(store: ObjectStore, dataset: str) -> list[int]:
    """Generations with a stored dead-letter set (its first chunk is stored last)."""
    gens = set()
    for info in store.list(dead_letters_prefix(dataset)):
        parsed = dead_letters_of_key(info.key, dataset)
        if parsed is not None and parsed[1] == 0:
            gens.add(parsed[0])
    return sorted(gens)


def open_dead_letters(
    store: ObjectStore, plan: str, dataset: str, generation: int, key: DataKey | Keyring
) -> tuple[DeadLetterSet, Iterator[DeadLetter]]:
    """The set's totals, and its records in file order; each chunk is authenticated as it is
    read (with `key`, or the keyring's key its header names: an older set may predate a new
    key), a missing or extra chunk is found before any record is returned."""
    prefix = dead_letters_prefix(dataset, generation)
    listed: dict[int, str] = {}
    for obj in store.list(prefix):
        parsed = dead_letters_of_key(obj.key, dataset)
        if parsed is None or parsed[0] != generation:
            raise UnexpectedObjectError("not a dead-letter chunk", object_key=obj.key)
        listed[parsed[1]] = obj.key
    first = _ChunkReader(plan, dataset, generation, 0).open(store, key)
    count = first["chunk_count"]
    for sequence in range(count):
        if sequence not in listed:
            raise MissingObjectError(
                f"dead-letter chunk {sequence} of {count} is missing",
                object_key=dead_letters_key(dataset, generation, sequence),
            )
    for sequence, object_key in sorted(listed.items()):
        if sequence >= count:
            raise UnexpectedObjectError(
                f"dead-letter chunk beyond the {count} its set has", object_key=object_key
            )
    info = DeadLetterSet(dataset, generation, first["record_count"], count, first["csv_header"])

    def records() -> Iterator[DeadLetter]:
        seen = 0
        for sequence in range(count):
            reader = _ChunkReader(plan, dataset, generation, sequence)
            body = first if sequence == 0 else reader.open(store, key)
            for field in ("chunk_count", "record_count", "csv_header"):
                if body[field] != first[field]:
                    raise reader.bad(f"{field} differs from the set's first chunk")
            for letter in body["records"]:
                seen += 1
                yield letter
        if seen != info.records:
            raise TruncatedError(
                f"dead-letter set holds {seen} records, its chunks state {info.records}",
                object_key=dead_letters_key(dataset, generation, 0),
            )

    return info, records()


class _ChunkReader(BodyReader):
    """Opens one chunk of a set: its seal, then its body, field by field."""

    what = "dead-letter chunk"

    def __init__(self, plan: str, dataset: str, generation: int, sequence: int) -> None:
        self.chunk_key = dead_letters_key(dataset, generation, sequence)
        super().__init__(self.chunk_key)
        self.plan = plan
        self.dataset = dataset
        self.generation = generation
        self.sequence = sequence

    def open(self, store: ObjectStore, key: DataKey | Keyring) -> dict[str, Any]:
        seal = (self.plan, self.dataset, self.generation, self.sequence)
        data = store.get(self.chunk_key)
        ident = dead_letters_identity(*seal)
        body = decode_chunk(
            data, ident, key_for(key, data, self.chunk_key), object_key=self.chunk_key
        )
        doc = self.fields(self.document(body, BODY_FORMAT, BODY_VERSION), _BODY_FIELDS, "body")
        if doc["format"] != BODY_FORMAT or doc["version"] != BODY_VERSION:
            raise self.bad("format or version is not a dead-letter chunk's")
        where = (
            self.str_(doc, "plan", "body"),
            self.str_(doc, "dataset", "body"),
            self.int_(doc, "generation", "body", U32),
            self.int_(doc, "sequence", "body"),
        )
        if where != seal:
            raise self.bad("body names another chunk than its seal")
        count = self.int_(doc, "chunk_count", "body")
        if not self.sequence < count:
            raise self.bad(f"sequence {self.sequence} is not below chunk_count {count}")
        records = doc["records"]
        if not isinstance(records, list):
            raise self.bad("records is not a list")
        return {
            "chunk_count": count,
            "record_count": self.int_(doc, "record_count", "body"),
            "csv_header": self.opt_str(doc, "csv_header", "body"),
            "records": [self.letter(r, i) for i, r in enumerate(records)],
        }

    def letter(self, obj: object, index: int) -> DeadLetter:
        where = f"records[{index}]"
        f: Mapping[str, Any] = self.fields(obj, _RECORD_FIELDS, where)
        try:
            data = base64.b64decode(self.str_(f, "data", where), validate=True)
        except ValueError:
            raise self.bad(f"{where}.data is not base64") from None
        return DeadLetter(
            self.str_(f, "file", where),
            self.int_(f, "line", where),
            self.int_(f, "offset", where),
            self.str_(f, "reason", where),
            data,
        )
