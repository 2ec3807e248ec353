"""Routing one block of records: the per-record work, run in worker processes.

Finding a record's key (a full JSON parse, or a CSV field) and hashing it hold the GIL, so one
process routes at most one core's worth. The reader cuts each source file into blocks that end
on a record boundary and hands them to a process pool; each block comes back as per-shard runs
of records and digest entries, appended in block order, so the spools are byte for byte what
routing in one process writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import itemgetter
from typing import Any

import xxhash

from migrator.codec.digests import DIGEST_ENTRY
from migrator.errors import BadRecordError, RecordTooLargeError
from migrator.records.block_keys import json_block_keys
from migrator.records.blocks import DEFAULT_MAX_RECORD
from migrator.records.csv_block import csv_block_keys, split_quoted
from migrator.records.framing import framing_of, line_ends
from migrator.records.keys import CsvKeyReader, JsonKeyReader
from migrator.sharding import shard_of

_pack_entry = DIGEST_ENTRY.pack
_hash128 = xxhash.xxh3_128_digest
_hash64 = xxhash.xxh3_64_intdigest
_mod = int.__mod__
_plus_one = (1).__add__

# (shard, its records each with a line feed, their digest entries, their bytes in the spool)
Run = tuple[int, bytearray, bytearray, int]


@dataclass(frozen=True, slots=True)
class BlockTask:
    data: bytes  # whole records, each with its line end (the file's last may lack it)
    fmt: str  # jsonl | csv
    key_field: str
    csv_header: bytes | None
    delimiter: str
    shards: int
    path: str  # for messages
    lines_before: int  # lines of the file before this block
    keep_records: bool = True
    offset_before: int = 0  # bytes of the file before this block
    quarantine: bool = False  # set bad records aside (BlockResult.bad) instead of raising
    max_record: int = DEFAULT_MAX_RECORD  # longer records end routing (RecordTooLargeError)


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record routing could not use, as read, for the dead-letter area."""

    line: int  # where the record starts
    offset: int  # byte offset of the record in its file
    reason: str
    data: bytes  # the record's bytes as stored (without its LF or lone CR; a CRLF's CR stays)


@dataclass(frozen=True, slots=True)
class BlockResult:
    runs: list[Run]
    bad: list[BadRecord]  # records set aside (quarantine), in file order


def route_block(task: BlockTask) -> BlockResult:
    """The block's records grouped by shard, in file order within each shard: keys read a
    block at a time in native code (records/block_keys.py), the records the fast readers
    cannot decide (and every record of a block holding an oversize record or an unclosed
    quote) by the exact per-record readers, so the output is byte for byte what reading every
    record by the exact readers gives (route_block_per_record, kept as the reference)."""
    is_csv = task.fmt == "csv"
    reader = _reader(task)
    parsed = split_quoted(task.data, task.delimiter) if is_csv and b'"' in task.data else None
    if parsed is None:
        records, open_quote = framing_of(task.delimiter if is_csv else None).split(task.data)
        bare = None
    else:
        (records, bare), open_quote = parsed, -1
    if open_quote >= 0 or (records and max(map(len, records)) > task.max_record):
        return _route_each(task, reader, records, open_quote)
    if isinstance(reader, CsvKeyReader):
        keys = csv_block_keys(records, bare, reader.index, reader.width, task.delimiter, task.data)
    else:
        keys = json_block_keys(records, task.key_field, task.data)
    bad: list[BadRecord] = []
    if None in keys:
        records, decided = _decide_rest(task, reader, records, keys, bad)
    else:
        decided = keys  # type: ignore[assignment]  # no None left
    return BlockResult(_group(task, records, decided), bad)


def _reader(task: BlockTask) -> JsonKeyReader | CsvKeyReader:
    if task.fmt != "csv":
        return JsonKeyReader(task.key_field)
    if task.csv_header is None:
        raise ValueError("a CSV block is routed with its file's header")
    return CsvKeyReader(task.key_field, task.csv_header, task.delimiter, f"{task.path}:1")


def _decide_rest(
    task: BlockTask,
    reader: JsonKeyReader | CsvKeyReader,
    records: list[bytes],
    keys: list[bytes | None],
    bad: list[BadRecord],
) -> tuple[list[bytes], list[bytes]]:
    """The records the fast readers left undecided, read by the exact reader in file order
    (so the first bad record is the one the per-record path names first); blank and bad
    ones leave the block."""
    starts = list(accumulate(map(len, records), initial=task.offset_before))
    lines = _first_lines(task, records)
    kept: list[int] = []
    for index, key in enumerate(keys):
        if key is not None:
            kept.append(index)
            continue
        record = records[index]
        if not record.strip():
            continue
        first, at = lines[index], starts[index] + index  # each record's end byte before it
        try:
            keys[index] = reader.key(record, task.path, first)
        except BadRecordError as exc:
            if not task.quarantine:
                raise BadRecordError(task.path, first, exc.reason, at) from None
            bad.append(BadRecord(first, at, exc.reason, record))
            continue
        kept.append(index)
    if len(kept) == len(records):
        return records, keys  # type: ignore[return-value]
    if not kept:
        return [], []
    pick = _picker(kept)
    return list(pick(records)), list(pick(keys))


def _first_lines(task: BlockTask, records: list[bytes]) -> list[int]:
    """The line each record starts on: one line a record, plus a CSV record's line ends
    inside quoted fields (a CRLF's CR at its end stays, not ending another line)."""
    first = task.lines_before + 1
    if task.fmt != "csv" or b'"' not in task.data:  # no quoted field: no line end inside
        return list(range(first, first + len(records)))
    inner = (line_ends(r) - (r[-1:] == b"\r") if b"\n" in r or b"\r" in r else 0 for r in records)
    return [first + i + extra for i, extra in enumerate(accumulate(inner, initial=0))][
        : len(records)
    ]


def _group(task: BlockTask, records: list[bytes], keys: list[bytes]) -> list[Run]:
    """Per-shard runs of the block, shards in ascending order, records in file order: hashes,
    digest entries and slices made by map over the block, one Python step a shard."""
    lengths = list(map(_plus_one, map(len, records)))  # each record's bytes and its line feed
    shard_of_key = list(map(_mod, map(_hash64, keys), repeat(task.shards)))
    entries = list(map(_pack_entry, map(_hash128, keys), map(_hash128, records), lengths))
    counts = sorted(Counter(shard_of_key).items())
    if len(counts) == 1:
        order: list[int] | None = None
    else:
        order = sorted(range(len(records)), key=shard_of_key.__getitem__)  # stable: file order
    runs: list[Run] = []
    at = 0
    for shard, count in counts:
        recs: Sequence[bytes] = records
        digs: Sequence[bytes] = entries
        lens: Sequence[int] = lengths
        if order is not None:
            pick = _picker(order[at : at + count])
            recs, digs, lens = pick(records), pick(entries), pick(lengths)
        at += count
        body = bytearray(b"\n".join(recs) + b"\n") if task.keep_records else bytearray()
        runs.append((shard, body, bytearray(b"".join(digs)), sum(lens)))
    return runs


def _picker(indices: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The items at `indices`, as a tuple however many (itemgetter gives one item bare)."""
    if len(indices) == 1:
        index = indices[0]
        return lambda seq: (seq[index],)
    return itemgetter(*indices)


def route_block_per_record(task: BlockTask) -> BlockResult:
    """Every record read by the exact per-record readers: the reference route_block must
    match byte for byte (tests/unit/test_route_block_identity.py)."""
    reader = _reader(task)
    records, open_quote = framing_of(task.delimiter if task.fmt == "csv" else None).split(task.data)
    return _route_each(task, reader, records, open_quote)


def _route_each(
    task: BlockTask,
    reader: JsonKeyReader | CsvKeyReader,
    records: list[bytes],
    open_quote: int,
) -> BlockResult:
    is_csv = task.fmt == "csv"
    recs: dict[int, bytearray] = {}
    digs: dict[int, bytearray] = {}
    sizes: dict[int, int] = {}
    bad: list[BadRecord] = []
    shards, keep, key_of, path = task.shards, task.keep_records, reader.key, task.path
    line, offset, limit = task.lines_before, task.offset_before, task.max_record
    last = len(records) - 1
    for index, record in enumerate(records):
        line += 1
        first, at = line, offset
        offset += len(record) + 1  # its bytes, then the LF or lone CR that ends it
        if is_csv and (b"\n" in record or b"\r" in record):  # line ends in quoted fields
            line += line_ends(record) - (record[-1:] == b"\r")  # a CRLF's CR stays
        if len(record) > limit:
            raise RecordTooLargeError(path, first, at, len(record), limit, True)
        if not record.strip():
            continue
        if index == last and open_quote >= 0:  # a quote left open runs to the file's end
            quote = open_quote - (len(task.data) - len(record))
            reason = (
                f"CSV quoted field opened at line {first + line_ends(record[:quote])}, byte"
                f" {at + quote:,} never closes (it runs to the end of the file)"
            )
            if not task.quarantine:
                raise BadRecordError(path, first, reason, at)
            bad.append(BadRecord(first, at, reason, record))
            continue
        try:
            key = key_of(record, path, first)
        except BadRecordError as exc:
            if not task.quarantine:
                raise BadRecordError(path, first, exc.reason, at) from None
            bad.append(BadRecord(first, at, exc.reason, record))
            continue
        shard = shard_of(key, shards)
        length = len(record) + 1
        dig = digs.get(shard)
        if dig is None:
            dig = digs[shard] = bytearray()
            recs[shard] = bytearray()
            sizes[shard] = 0
        dig += _pack_entry(_hash128(key), _hash128(record), length)
        sizes[shard] += length
        if keep:
            buf = recs[shard]
            buf += record
            buf += b"\n"
    runs = [(s, recs[s], digs[s], sizes[s]) for s in sorted(digs)]
    return BlockResult(runs, bad)
