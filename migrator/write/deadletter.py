"""Dead letters: the records a dataset with `on_bad_record: quarantine` sets aside while routing.

Routing appends each bad record (its bytes as read, file, line, byte offset and reason) to a
dead-letter spool beside the shard spools. Each entry carries the index of its file in the
listing, so a resumed routing cuts the spool back to the files its checkpoint covers: a record is
never lost nor counted twice. Once routing is complete, the spool is sealed with the dataset's
data key as chunks of their own kind and stored under `{dataset}/_deadletters/g{generation}/`
(docs/FORMAT.md §9); `migrator deadletters` reads them back.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from migrator.codec.body import U32, BodyReader
from migrator.codec.chunk import ChunkEncoder, decode_chunk
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import (
    MissingObjectError,
    StateError,
    TamperedError,
    TruncatedError,
    UnexpectedObjectError,
)
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring, key_for
from migrator.plan.model import DatasetPlan, Plan
from migrator.repository.names import (
    dead_letter_marker,
    dead_letter_markers,
    dead_letters_key,
    dead_letters_of_key,
    dead_letters_prefix,
)
from migrator.state.private import open_private, write_private
from migrator.stores.base import ObjectStore
from migrator.write.route_blocks import BadRecord

BODY_FORMAT = "migrator/dead-letters"
BODY_VERSION = 1
SPOOL_NAME = "deadletters.spool"
_FLUSH_BYTES = 1024 * 1024
# file index in the listing, line, byte offset, then the lengths of name, reason and record
_ENTRY = struct.Struct(">IQQIIQ")
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


# --- routing: the spool ---------------------------------------------------------------


class DeadLetterSpool:
    """The quarantined records of one generation's routing, in file order."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SPOOL_NAME
        self._buffer = bytearray()
        self._dirty = False

    def restore(self, next_file: int, *, create: bool) -> None:
        """Cut the spool back to the entries of files [0, next_file), which routing made durable
        before its checkpoint; later ones (and a torn last entry) came from a crashed run."""
        if not self.path.exists():
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                open_private(self.path).close()
            return
        keep = 0
        with self.path.open("rb") as fh:
            for end, entry in _scan(fh, self.path, torn_ok=True):
                if entry[0] >= next_file:
                    break
                keep = end
        with open_private(self.path) as fh:
            fh.truncate(keep)

    def add(self, file_index: int, name: str, bad: list[BadRecord]) -> None:
        raw_name = name.encode()
        for record in bad:
            reason = record.reason.encode()
            self._buffer += _ENTRY.pack(
                file_index, record.line, record.offset, len(raw_name), len(reason), len(record.data)
            )
            self._buffer += raw_name + reason + record.data
        if len(self._buffer) >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        try:
            with open_private(self.path) as fh:
                fh.write(self._buffer)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write the dead-letter spool ({exc})") from None
        self._buffer.clear()
        self._dirty = True

    def make_durable(self) -> None:
        """Before routing saves a checkpoint: what it covers is on disk."""
        self._flush()
        if not self._dirty:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write the dead-letter spool ({exc})") from None
        self._dirty = False


def _scan(
    fh: BinaryIO, path: Path, *, torn_ok: bool
) -> Iterator[tuple[int, tuple[int, int, int, int, int, int]]]:
    """(end offset, header) of each whole entry; payloads are skipped, not read."""
    pos = 0
    size = os.fstat(fh.fileno()).st_size
    while pos < size:
        fh.seek(pos)
        head = fh.read(_ENTRY.size)
        entry = _ENTRY.unpack(head) if len(head) == _ENTRY.size else None
        end = pos + _ENTRY.size + sum(entry[3:]) if entry else size + 1
        if entry is None or end > size:
            if torn_ok:
                return
            raise StateError(f"{path}: dead-letter spool ends inside an entry")
        yield end, entry
        pos = end


def _data_lengths(path: Path) -> Iterator[int]:
    """Each entry's record length, in spool order, read from the entry headers alone."""
    with path.open("rb") as fh:
        for _, entry in _scan(fh, path, torn_ok=False):
            yield entry[5]


def iter_spool(path: Path) -> Iterator[DeadLetter]:
    with path.open("rb") as fh:
        for end, (_, line, offset, name_len, reason_len, data_len) in _scan(
            fh, path, torn_ok=False
        ):
            fh.seek(end - name_len - reason_len - data_len)
            name = fh.read(name_len).decode()
            reason = fh.read(reason_len).decode()
            yield DeadLetter(name, line, offset, reason, fh.read(data_len))


# --- after routing: sealing and storing -------------------------------------------------


def dead_letters_identity(plan: str, dataset: str, generation: int, sequence: int) -> ChunkIdentity:
    return ChunkIdentity(ChunkKind.DEAD_LETTERS, plan, dataset, generation, 0, sequence)


def store_dead_letters(
    plan: Plan,
    ds: DatasetPlan,
    generation: int,
    key: DataKey,
    store: ObjectStore,
    spool_dir: Path,
    csv_header: bytes | None,
) -> int:
    """Once a generation is routed: seal its quarantined records with the dataset's data key
    and store them in the dead-letter area; returns how many there are. A dataset that
    quarantines stores a (possibly empty) set for every generation it routes, so the latest set
    is the source's bad records as of the latest routing. Done once per generation."""
    marker = dead_letter_marker(plan.state_dir, ds.name, generation)
    if marker.exists():
        return int(orjson.loads(marker.read_bytes())["records"])
    spool = spool_dir / SPOOL_NAME
    if not spool.exists() and ds.on_bad_record != "quarantine":
        return 0

    # Chunk boundaries first, so every chunk can state how many there are: from the entries'
    # headers alone (their lengths), no record is read for it.
    counts: list[int] = []
    size = 0
    for data_len in _data_lengths(spool) if spool.exists() else ():
        if not counts or size >= plan.chunk_size:
            counts.append(0)
            size = 0
        counts[-1] += 1
        size += data_len
    counts = counts or [0]
    total = sum(counts)
    header = None if csv_header is None else csv_header.decode("utf-8", "surrogateescape")
    encoder = ChunkEncoder(plan.compression_level)
    metadata = {"migrator-plan": plan.name}
    first: bytes | None = None
    it = iter_spool(spool) if spool.exists() else iter(())
    for sequence, count in enumerate(counts):
        body = orjson.dumps(
            {
                "format": BODY_FORMAT,
                "version": BODY_VERSION,
                "plan": plan.name,
                "dataset": ds.name,
                "generation": generation,
                "sequence": sequence,
                "chunk_count": len(counts),
                "record_count": total,
                "csv_header": header,
                "records": [_record_json(next(it)) for _ in range(count)],
            },
            option=orjson.OPT_SORT_KEYS,
        )
        ident = dead_letters_identity(plan.name, ds.name, generation, sequence)
        sealed = bytes(encoder.encode(body, ident, key).data)
        if sequence == 0:
            first = sealed  # stored last: a set whose first chunk exists is whole
            continue
        store.put(dead_letters_key(ds.name, generation, sequence), sealed, metadata)
    assert first is not None
    store.put(dead_letters_key(ds.name, generation, 0), first, metadata)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    write_private(tmp, orjson.dumps({"records": total, "chunks": len(counts)}))
    os.replace(tmp, marker)
    return total


def _record_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "file": letter.file,
        "line": letter.line,
        "offset": letter.offset,
        "reason": letter.reason,
        "data": base64.b64encode(letter.data).decode(),
    }


def dead_letter_counts(state_dir: Path, dataset: str) -> dict[int, int]:
    """Records quarantined per generation, as this state directory stored them."""
    folder = dead_letter_markers(state_dir, dataset)
    counts: dict[int, int] = {}
    for path in sorted(folder.glob("g*.json")) if folder.is_dir() else ():
        if path.stem[1:].isdigit():
            counts[int(path.stem[1:])] = int(orjson.loads(path.read_bytes())["records"])
    return counts


# --- reading back -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterSet:
    dataset: str
    generation: int
    records: int
    chunks: int
    csv_header: str | None  # CSV datasets: the header row the records belong under


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
    first = _Reader(dead_letters_key(dataset, generation, 0)).open(
        store, plan, dataset, generation, 0, key
    )
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
            object_key = dead_letters_key(dataset, generation, sequence)
            reader = _Reader(object_key)
            body = (
                first
                if sequence == 0
                else reader.open(store, plan, dataset, generation, sequence, key)
            )
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


class _Reader(BodyReader):
    what = "dead-letter chunk"

    def open(
        self,
        store: ObjectStore,
        plan: str,
        dataset: str,
        generation: int,
        sequence: int,
        key: DataKey | Keyring,
    ) -> dict[str, Any]:
        assert self.object_key is not None
        data = store.get(self.object_key)
        ident = dead_letters_identity(plan, dataset, generation, sequence)
        body = decode_chunk(
            data, ident, key_for(key, data, self.object_key), object_key=self.object_key
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
        if where != (plan, dataset, generation, sequence):
            raise self.bad("body names another chunk than its seal")
        count = self.int_(doc, "chunk_count", "body")
        if not sequence < count:
            raise self.bad(f"sequence {sequence} is not below chunk_count {count}")
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


def check_file_name(name: str, object_key: str) -> Path:
    """A dead letter's file name as a path below the output folder, never outside it."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise TamperedError(f"unsafe file name {name!r} in dead letters", object_key=object_key)
    return Path(*parts)


def write_dead_letters(info: DeadLetterSet, letters: Iterator[DeadLetter], out: Path) -> int:
    """Each source file's dead letters into out/<its name>, byte for byte, each ended by a line
    feed (CSV: under the header row), ready to fix and feed back; returns the files written."""
    written: set[Path] = set()
    fh: BinaryIO | None = None
    current: str | None = None
    try:
        for letter in letters:
            if letter.file != current:
                if fh is not None:
                    fh.close()
                current = letter.file
                target = out / check_file_name(letter.file, dead_letters_prefix(info.dataset))
                target.parent.mkdir(parents=True, exist_ok=True)
                fh = target.open("ab" if target in written else "wb")
                if target not in written and info.csv_header is not None:
                    fh.write(info.csv_header.encode("utf-8", "surrogateescape") + b"\n")
                written.add(target)
            assert fh is not None
            fh.write(letter.data + b"\n")
    finally:
        if fh is not None:
            fh.close()
    return len(written)
