"""The landed table's layout: names, columns, the SQL that makes and fills it, and rows as
COPY writes them and as a CSV record reads back.

A dataset lands as two tables and a checkpoint. `<name>` serves one row per key (its last record
in archive order); `<name>_duplicates` keeps a key's earlier records, so the two together hold
the archive's records exactly, as a multiset. `migrator_landed` (in the same schema) records the
generation each shard holds, written in the transaction that wrote the shard's rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import xxhash

from migrator.errors import UsageError

MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are truncated, silently
CHECKPOINT_TABLE = "migrator_landed"
DUPLICATES_SUFFIX = "_duplicates"
SCHEMA = "\0schema"  # what `missing` holds for an absent schema: no name holds a NUL
# Columns landing adds beside the dataset's own: a header naming one of them is refused.
LANDING_COLUMNS = ("shard", "key_hash", "record", "record_xxh3")
RESERVED = frozenset({*LANDING_COLUMNS, "doc", "seq"})

csv.field_size_limit(2**31 - 1)  # a record's size is the dataset's limit, checked upstream


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_identifier(name: str, what: str) -> None:
    if not name:
        raise UsageError(f"{what} is empty")
    if "\0" in name:
        raise UsageError(f"{what} {name!r} holds a NUL character")
    if len(name.encode()) > MAX_IDENTIFIER:
        raise UsageError(
            f"{what} {name!r} is {len(name.encode())} bytes, more than PostgreSQL's"
            f" {MAX_IDENTIFIER}-byte limit for names"
        )


@dataclass(frozen=True, slots=True)
class TableNames:
    """The target's relations, as quoted SQL and as plain names for catalog look-ups."""

    schema: str | None
    name: str

    def sql(self, name: str) -> str:
        return f"{quote(self.schema)}.{quote(name)}" if self.schema else quote(name)

    @property
    def main(self) -> str:
        return self.sql(self.name)

    @property
    def duplicates_name(self) -> str:
        return self.name + DUPLICATES_SUFFIX

    @property
    def duplicates(self) -> str:
        return self.sql(self.duplicates_name)

    @property
    def checkpoint(self) -> str:
        return self.sql(CHECKPOINT_TABLE)

    def index(self, table: str, column: str) -> str:
        """An index's name: `<table>_<column>_idx`, shortened by a hash where it would pass
        the limit (PostgreSQL's own truncation could make two indexes one name)."""
        name = f"{table}_{column}_idx"
        if len(name.encode()) > MAX_IDENTIFIER:
            tag = xxhash.xxh3_64_hexdigest(name.encode())[:8]
            head = table.encode()[: MAX_IDENTIFIER - len(column) - 14].decode(errors="ignore")
            name = f"{head}_{tag}_{column}_idx"
        return quote(name)


def table_names(table: str) -> TableNames:
    """`name` or `schema.name`; the duplicates table's name must fit the limit too."""
    parts = table.split(".")
    if len(parts) > 2:
        raise UsageError(f"landing table {table!r}: write it as name or schema.name")
    for part in parts:
        _check_identifier(part, f"landing table {table!r}: the name part")
    names = TableNames(parts[0] if len(parts) == 2 else None, parts[-1])
    _check_identifier(names.duplicates_name, f"landing table {table!r}: its duplicates table")
    return names


@dataclass(frozen=True, slots=True)
class Layout:
    """The dataset's own columns (a CSV header, the key column among them; or the key alone
    for JSON), then landing's; `doc` is generated from the record for JSON landed as jsonb."""

    columns: tuple[str, ...]
    key_column: str
    json_doc: bool

    @property
    def key_index(self) -> int:
        return self.columns.index(self.key_column)

    @property
    def stored(self) -> tuple[str, ...]:
        """The columns an insert names, in the order rows carry them."""
        return (*self.columns, *LANDING_COLUMNS)

    @property
    def main_columns(self) -> tuple[str, ...]:
        """Every column of the main table, as the catalog lists them."""
        return (*self.stored, "doc") if self.json_doc else self.stored


def json_layout(key_column: str, json_doc: bool) -> Layout:
    _check_column(key_column, "key field")
    return Layout((key_column,), key_column, json_doc)


def csv_layout(header: tuple[str, ...], key_column: str) -> Layout:
    """A CSV header as columns, each a name PostgreSQL keeps as written: refused, naming the
    column, when one is empty, too long, repeated or one landing adds itself."""
    seen: set[str] = set()
    for index, name in enumerate(header):
        _check_column(name, f"CSV header column {index + 1}")
        if name in seen:
            raise UsageError(f"CSV header column {name!r} appears more than once")
        seen.add(name)
    if key_column not in seen:
        raise UsageError(f"key field {key_column!r} is not in the CSV header {list(header)}")
    return Layout(tuple(header), key_column, False)


def _check_column(name: str, what: str) -> None:
    _check_identifier(name, what)
    if name in RESERVED:
        raise UsageError(
            f"{what} {name!r} is a column landing adds itself"
            f" ({', '.join(sorted(RESERVED))}); rename it in the source"
        )


class Statements:
    """The SQL one layout lands and reads with, built once."""

    def __init__(self, names: TableNames, layout: Layout) -> None:
        self.names = names
        self.layout = layout
        main, dup = names.main, names.duplicates
        cols = ", ".join(map(quote, layout.stored))
        own = ", ".join(map(quote, layout.columns))
        key = quote(layout.key_column)
        # COPY's text format: 2.4 times the rows a second of multi-row INSERTs (200k JSON rows).
        self.copy_main = f"COPY {main} ({cols}) FROM STDIN"
        self.copy_duplicates = f"COPY {dup} ({cols}) FROM STDIN"
        # The row a key served moves to the duplicates before the key's next record serves.
        self.move_to_duplicates = (
            f"WITH moved AS (DELETE FROM {main} WHERE {key} = ANY(%s::text[])"
            f" RETURNING {cols}) INSERT INTO {dup} ({cols}) SELECT {cols} FROM moved"
        )
        self.clear_shard = (
            f"DELETE FROM {main} WHERE shard = %s; DELETE FROM {dup} WHERE shard = %s"
        )
        self.remove = (
            f"DELETE FROM {main} WHERE shard = %s AND key_hash = ANY(%s::bytea[]);"
            f" DELETE FROM {dup} WHERE shard = %s AND key_hash = ANY(%s::bytea[])"
        )
        self.save_checkpoint = (
            f"INSERT INTO {names.checkpoint} (dataset, tbl, shard, generation)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (dataset, tbl, shard)"
            " DO UPDATE SET generation = EXCLUDED.generation"
        )
        # The dataset's columns, key_hash, record, record_xxh3, and which table (0 main).
        read = f"{own}, key_hash, record, record_xxh3"
        self.read_shard = (
            f"SELECT {read}, 0 FROM {main} WHERE shard = %s"
            f" UNION ALL SELECT {read}, 1 FROM {dup} WHERE shard = %s"
        )

    def expected_columns(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each table's columns in the catalog's order, to tell a table made for another
        layout (another header, jsonb or not) from ours."""
        return [
            (self.names.name, self.layout.main_columns),
            (self.names.duplicates_name, (*self.layout.stored, "seq")),
        ]

    def create(self, missing: set[str]) -> list[str]:
        """CREATE statements for what `missing` names (relations, SCHEMA): only what is
        absent is created, so a role that may write but not create in the schema lands into
        tables made for it beforehand."""
        names, layout = self.names, self.layout
        own = [
            f"{quote(c)} text PRIMARY KEY" if c == layout.key_column else f"{quote(c)} text"
            for c in layout.columns
        ]
        landing = [
            "shard integer NOT NULL",
            "key_hash bytea NOT NULL",
            "record text NOT NULL",
            "record_xxh3 bytea NOT NULL",  # names a row whose record changed after landing
        ]
        out: list[str] = []
        if names.schema and SCHEMA in missing:
            out.append(f"CREATE SCHEMA IF NOT EXISTS {quote(names.schema)}")
        if names.name in missing:
            doc = (
                ["doc jsonb GENERATED ALWAYS AS (record::jsonb) STORED"] if layout.json_doc else []
            )
            out.append(
                f"CREATE TABLE IF NOT EXISTS {names.main} ({', '.join(own + landing + doc)})"
            )
            out += self._indexes(names.name, names.main)
        if names.duplicates_name in missing:
            plain = [f"{quote(c)} text" for c in layout.columns]
            seq = ["seq bigint GENERATED BY DEFAULT AS IDENTITY"]  # archive order of a key's
            # The jsonb a main row must be, so a record is refused whichever table it goes to.
            check = ["CHECK (record::jsonb IS NOT NULL)"] if layout.json_doc else []
            columns = ", ".join(plain + landing + seq + check)
            out.append(f"CREATE TABLE IF NOT EXISTS {names.duplicates} ({columns})")
            out += self._indexes(names.duplicates_name, names.duplicates)
        if CHECKPOINT_TABLE in missing:
            out.append(
                f"CREATE TABLE IF NOT EXISTS {names.checkpoint} (dataset text NOT NULL,"
                " tbl text NOT NULL, shard integer NOT NULL, generation bigint NOT NULL,"
                " PRIMARY KEY (dataset, tbl, shard))"
            )
        return out

    def _indexes(self, name: str, table: str) -> list[str]:
        return [
            f"CREATE INDEX IF NOT EXISTS {self.names.index(name, column)} ON {table} ({column})"
            for column in ("shard", "key_hash")
        ]


# --- rows: written as COPY lines, read back as CSV fields -------------------------------


def parse_csv_row(text: str, delimiter: str) -> list[str]:
    """A CSV record's fields as routing reads them (a CRLF's CR is not part of the row)."""
    return next(csv.reader([text.removesuffix("\r")], delimiter=delimiter, strict=True))


def csv_differences(
    text: str, stored: Iterable[Any], columns: tuple[str, ...], delimiter: str
) -> list[str]:
    """What a CSV row's columns say that its record does not (someone updated one alone)."""
    try:
        fields = parse_csv_row(text, delimiter)
    except (csv.Error, StopIteration):
        return ["its record is not a readable CSV row"]
    stored = list(stored)
    if len(fields) != len(columns):
        return [f"its record has {len(fields)} fields, the table {len(columns)} columns"]
    changed = [c for c, want, have in zip(columns, fields, stored, strict=True) if want != have]
    return [f"column {', '.join(map(repr, changed))} differs from its record"] if changed else []


def copy_text(value: str) -> str:
    """A text value as COPY's text format reads it back unchanged."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )
