"""Shard keys of a whole block of CSV rows at once, and the block's rows, without a Python
step per row in the common case (see records/block_keys.py for why).

A row's key is its field at the key column, split at the delimiter as the exact reader
(records/keys.py, CsvKeyReader) splits a row without quotes. A block with quotes is read by
quote parity when every `"` in it opens or closes a whole field (the csv module's reading
then): split once at every `"`, the even pieces are the block with its quoted fields emptied,
whose lines are the rows, counted and split by map. A row the fast path cannot decide (a
quoted or empty key, another width, a blank row) is None, decided by the exact reader.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from itertools import compress, repeat
from operator import itemgetter

from migrator.records.framing import framing_of

Keys = list[bytes | None]
_odd = (1).__and__


def split_quoted(data: bytes, delimiter: str) -> tuple[list[bytes], list[bytes]] | None:
    """The rows of a block with quotes, as framing.split gives them, and each row with its
    quoted fields emptied; None unless every quote is at a field's bound and no lone CR ends a
    row (then framing.split, field-aware, decides)."""
    pieces = framing_of(delimiter).quote_pieces(data, len(data)) if data else None
    if pieces is None or len(pieces) % 2 == 0:
        return None  # a quote not at a field's bound, a lone CR, or a quote left open
    outside = pieces[::2]  # between a closing quote and the next opening one
    bare = b"".join(outside).split(b"\n")
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        bare.pop()
        lines.pop()
    if len(lines) != len(bare):
        odd = list(compress(range(len(lines)), map(_odd, map(bytes.count, lines, repeat(b'"')))))
        rows: list[bytes] = []
        done = 0
        for first, last in zip(odd[::2], odd[1::2], strict=True):  # a quoted line end inside
            rows += lines[done:first]
            rows.append(b"\n".join(lines[first : last + 1]))
            done = last + 1
        rows += lines[done:]
        lines = rows
    if len(lines) != len(bare):
        return None
    return lines, bare


@lru_cache(maxsize=16)
def _csv_row(index: int, width: int, delimiter: bytes) -> re.Pattern[bytes]:
    """A whole CSV row of `width` fields whose key field (at `index`) is unquoted and not
    empty; group 1 is the key. A field is unquoted without any `"`, or quoted as a whole (a
    quote opening it, doubled quotes inside, a quote closing it just before a delimiter or the
    row's end): then quote parity reads it as the csv module does. Any other row (a stray `"`
    inside a field, text after a closing quote, another width, a blank row) does not
    match."""
    sep = re.escape(delimiter)
    first = re.escape(delimiter[:1])
    plain = rb'(?:(?!%s)[^"\r\n])*+' % sep if len(delimiter) > 1 else rb'[^%s"\r\n]*+' % first
    quoted = rb'"[^"]*+(?:""[^"]*+)*+"'
    field = rb"(?:%s|%s)" % (quoted, plain)
    key = rb"(%s)" % (plain.removesuffix(b"*+") + b"++")
    before = rb"(?:%s%s){%d}" % (field, sep, index)
    after = rb"(?:%s%s){%d}" % (sep, field, width - 1 - index)
    not_blank = rb"(?=\s*+\S)"  # a row of only whitespace is skipped, as bytes.strip() sees it
    return re.compile(rb"%s%s%s%s\r?" % (not_blank, before, key, after))


def csv_block_keys(
    records: Sequence[bytes],
    bare: Sequence[bytes] | None,
    index: int,
    width: int,
    delimiter: str,
    block: bytes,
) -> Keys:
    """The key bytes of each CSV row (the field at `index` of `width`), or None where the exact
    reader must decide. `bare`: the rows with their quoted fields emptied (split_quoted), or
    None; `block`: the bytes the rows were framed from.

    Without quotes, or with `bare`, every row is counted and split by map. Otherwise the rows
    with a quote are each matched whole by one pattern (_csv_row)."""
    sep = delimiter.encode()
    quoted = b'"' in block
    rows = records if bare is None else bare
    if b"\r" in block:
        rows = list(map(bytes.removesuffix, rows, repeat(b"\r")))
    pad = sep * (index + 1)  # every row has the key's field, so a short row raises nothing
    fields = map(bytes.split, map(bytes.__add__, rows, repeat(pad)), repeat(sep), repeat(index + 1))
    keys: Keys = list(map(itemgetter(index), fields))
    counts = list(map(bytes.count, rows, repeat(sep)))
    blank = list(map(bytes.isspace, records))  # (a row with a quote is never blank)
    if counts.count(width - 1) == len(rows) and True not in blank and (bare or not quoted):
        if b"" in keys:  # an empty key, or a quoted one (emptied in `bare`)
            return [key or None for key in keys]
        return keys
    if bare is not None:
        return [
            None if count != width - 1 or space or not key else key
            for key, count, space in zip(keys, counts, blank, strict=True)
        ]
    match = _csv_row(index, width, sep).fullmatch
    for at, row in enumerate(rows):
        if quoted and b'"' in row:
            found = match(records[at])
            keys[at] = found[1] if found else None
        elif counts[at] != width - 1 or blank[at] or not keys[at]:
            keys[at] = None
    return keys
