"""Routing one block of records: the per-record work, run in worker processes.

Finding a record's key (a full JSON parse, or a CSV field) and hashing it hold the GIL, so one
process routes at most one core's worth. The reader cuts each source file into blocks that end
on a record boundary and hands them to a process pool; each block comes back as per-shard runs
of records and digest entries, appended in block order, so the spools are byte for byte what
routing in one process writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import xxhash

from migrator.codec.digests import DIGEST_ENTRY
from migrator.errors import BadRecordError, RecordTooLargeError
from migrator.records.blocks import DEFAULT_MAX_RECORD
from migrator.records.framing import framing_of, line_ends
from migrator.records.keys import CsvKeyReader, JsonKeyReader
from migrator.sharding import shard_of

_pack_entry = DIGEST_ENTRY.pack
_hash128 = xxhash.xxh3_128_digest


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
    # (shard, its records with their line feeds, their digest entries, their bytes in the spool)
    runs: list[tuple[int, bytearray, bytearray, int]]
    bad: list[BadRecord]  # records set aside (quarantine), in file order


def route_block(task: BlockTask) -> BlockResult:
    reader: JsonKeyReader | CsvKeyReader
    is_csv = task.fmt == "csv"
    if is_csv:
        if task.csv_header is None:
            raise ValueError("a CSV block is routed with its file's header")
        where = f"{task.path}:1"
        reader = CsvKeyReader(task.key_field, task.csv_header, task.delimiter, where)
    else:
        reader = JsonKeyReader(task.key_field)
    records, open_quote = framing_of(task.delimiter if is_csv else None).split(task.data)
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
