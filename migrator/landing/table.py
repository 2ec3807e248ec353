"""Records landed into a PostgreSQL table, applied exactly once per shard and generation.

Each generation is one transaction: the shard's rows change and its checkpoint row moves with
them, under an advisory lock on (dataset, table, shard), so a landing killed at any point, or two
workers on one shard, leave either the old generation or the new one, never half of it. Rows go
in ~1000 at a time while the archive's records are decrypted, so a shard never sits in memory.
The layout is table_schema.py's.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from itertools import islice
from typing import Any

import xxhash
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from migrator.codec.digests import MOD, key_hash, record_digest
from migrator.errors import LandingError, UsageError
from migrator.landing.table_schema import (
    CHECKPOINT_TABLE,
    SCHEMA,
    Layout,
    Statements,
    TableNames,
    copy_text,
    csv_differences,
    csv_layout,
    json_layout,
    parse_csv_row,
    quote,
    table_names,
)
from migrator.landing.target import LandedContent, LandedRecord, RecordsGeneration
from migrator.sharding import shard_of

BATCH_ROWS = 1000  # rows an insert carries: one round trip each, a few MB of SQL at most
REMOVE_BATCH = 10_000  # key hashes a delete names at once
FETCH_ROWS = 5000  # rows a server-side cursor hands over at once when reading a shard back
MAX_PROBLEMS = 20
MAX_KEY_SHOWN = 200  # characters of a key a message shows
UNIQUE_VIOLATION = "23505"  # SQLSTATE: a key the main table already serves

Row = tuple[str, str]  # a record's key, and its row as a line of COPY's text format


class PostgresTable:
    """A RecordsTarget. Thread-safe: every call takes its own pooled connection, so workers
    land different shards at once; two on one shard take turns, and the second finds the
    generation landed and does nothing. `shards`: the dataset's shard count, to name rows
    held under a shard their key does not belong to (without it that check is skipped)."""

    def __init__(
        self,
        url: str,
        table: str,
        *,
        dataset: str,
        key_column: str,
        csv: bool,
        json_doc: bool,
        delimiter: str = ",",
        shards: int | None = None,
    ) -> None:
        self._names: TableNames = table_names(table)
        self._table = table
        self._dataset = dataset
        self._key_column = key_column
        self._csv = csv
        self._delimiter = delimiter
        self._shards = shards
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise UsageError(f"landing table {table}: the database URL is not a URL") from None
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg2")  # the driver this release ships
        if parsed.get_backend_name() != "postgresql":
            raise UsageError(f"landing table {table}: the database URL is not PostgreSQL's")
        port = f":{parsed.port}" if parsed.port else ""
        self._where = (
            f"postgresql://{parsed.host or ''}{port}/{parsed.database or ''} table {table}"
        )
        try:
            import psycopg2
        except ImportError as exc:
            raise UsageError(
                f"{self._where}: the PostgreSQL driver is not installed ({exc.name}); install"
                " migrator with its `postgres` extra"
            ) from None
        self._pg: Any = psycopg2
        self._engine: Engine = create_engine(
            parsed,
            pool_pre_ping=True,
            pool_recycle=1800,
            # A dead peer is noticed in about a minute, both ways (as the state store does).
            connect_args={"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10},
        )
        self._layout: Layout | None = None if csv else json_layout(key_column, json_doc)
        self._sql: Statements | None = None
        if self._layout is not None:
            self._sql = Statements(self._names, self._layout)

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> PostgresTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the RecordsTarget protocol --------------------------------------------------------

    def prepare(self, header: tuple[str, ...] | None) -> None:
        if self._csv:
            if header is None:
                raise UsageError(f"{self._where}: a CSV dataset lands with its header")
            layout = csv_layout(header, self._key_column)
        else:
            assert self._layout is not None
            layout = self._layout
        sql = Statements(self._names, layout)
        with self._connection("create the tables") as raw, raw.cursor() as cur:
            # Two workers preparing at once: one creates, the other finds it made.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key("prepare"),))
            missing = self._missing(cur)
            for statement in sql.create(missing):
                cur.execute(statement)
            for name, want in sql.expected_columns():
                have = self._columns(cur, name)
                if have != want:
                    raise UsageError(
                        f"{self._where}: table {name} has columns {list(have)}; landing"
                        f" {self._dataset} needs {list(want)} (drop it or land elsewhere)"
                    )
        self._layout, self._sql = layout, sql

    def landed_generation(self, shard: int) -> int | None:
        with self._connection(f"read shard {shard}'s checkpoint") as raw, raw.cursor() as cur:
            if CHECKPOINT_TABLE in self._missing(cur):
                return None
            cur.execute(self._checkpoint_sql(), (self._dataset, self._table, shard))
            row = cur.fetchone()
        return None if row is None else int(row[0])

    def apply(self, change: RecordsGeneration) -> None:
        sql = self._statements()
        if self._csv and change.header is not None and change.header != sql.layout.columns:
            raise self._refused(
                change, None, f"its CSV header {list(change.header)} is not the table's columns"
            )
        doing = f"land {change.dataset} shard {change.shard} generation {change.generation}"
        with self._connection(doing) as raw, raw.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(change.shard),))
            cur.execute(self._checkpoint_sql(), (self._dataset, self._table, change.shard))
            landed = cur.fetchone()
            if landed is not None and change.generation <= int(landed[0]):
                return  # applied before: by an earlier run, or a worker just ahead of this one
            if change.base:
                cur.execute(sql.clear_shard, (change.shard, change.shard))
            else:
                removed = list(change.removed)
                for at in range(0, len(removed), REMOVE_BATCH):
                    batch = removed[at : at + REMOVE_BATCH]
                    cur.execute(sql.remove, (change.shard, batch, change.shard, batch))
            rows = self._rows(change)
            while batch_rows := list(islice(rows, BATCH_ROWS)):
                self._put_batch(cur, sql, batch_rows, change)
            cur.execute(
                sql.save_checkpoint,
                (self._dataset, self._table, change.shard, change.generation),
            )

    def content(self, shard: int) -> LandedContent:
        out = LandedContent()
        with self._connection(f"read shard {shard}") as raw:
            with raw.cursor() as cur:
                if self._names.name in self._missing(cur):
                    return out
            sql = self._statements()
            # A server-side cursor: the shard streams through, FETCH_ROWS rows at a time.
            with raw.cursor(name="landed_content") as cur:
                cur.itersize = FETCH_ROWS
                cur.execute(sql.read_shard, (shard, shard))
                out = self._sum(cur, shard)
        return out

    # --- applying --------------------------------------------------------------------------

    def _rows(self, change: RecordsGeneration) -> Iterator[Row]:
        """Each record as the line COPY reads, checked for what PostgreSQL cannot hold."""
        layout = self._statements().layout
        width, key_index = len(layout.columns), layout.key_index
        shard_then_hash = f"\t{change.shard}\t\\\\x"  # bytea in hex: \\x, COPY unescapes it
        for rec in change.records:
            try:
                text = rec.record.decode()
            except UnicodeDecodeError:
                raise self._refused(change, rec.key, "the record is not UTF-8") from None
            if "\0" in text or "\0" in rec.key:
                where = "record" if "\0" in text else "key"
                raise self._refused(change, rec.key, f"the {where} holds a NUL character")
            if self._csv:
                fields = rec.fields if rec.fields is not None else self._parse(change, rec, text)
                if len(fields) != width:
                    raise self._refused(
                        change, rec.key, f"the row has {len(fields)} fields, the header {width}"
                    )
                if fields[key_index] != rec.key:
                    raise self._refused(change, rec.key, "the key field differs from the key")
                own = "\t".join(map(copy_text, fields))
            else:
                own = copy_text(rec.key)
            line = (
                f"{own}{shard_then_hash}{rec.key_hash.hex()}\t{copy_text(text)}"
                f"\t\\\\x{record_digest(rec.record).hex()}\n"
            )
            yield rec.key, line

    def _parse(self, change: RecordsGeneration, rec: LandedRecord, text: str) -> list[str]:
        try:
            return parse_csv_row(text, self._delimiter)
        except (csv.Error, StopIteration):
            raise self._refused(change, rec.key, "the record is not a readable CSV row") from None

    def _put_batch(
        self, cur: Any, sql: Statements, rows: list[Row], change: RecordsGeneration
    ) -> None:
        """The batch at once; if PostgreSQL refuses it, row by row to name the key at fault."""
        cur.execute("SAVEPOINT landing_batch")
        try:
            try:
                self._put(cur, sql, rows, move=False)  # keys the table does not hold: usual
            except self._pg.Error as exc:
                if exc.pgcode != UNIQUE_VIOLATION or cur.connection.closed:
                    raise
                cur.execute("ROLLBACK TO SAVEPOINT landing_batch")
                self._put(cur, sql, rows, move=True)
        except self._pg.Error as exc:
            if cur.connection.closed:
                raise
            cur.execute("ROLLBACK TO SAVEPOINT landing_batch")
            for key, line in rows:
                try:
                    self._put(cur, sql, [(key, line)], move=True)
                except self._pg.Error as row_exc:
                    raise self._refused(change, key, _reason(row_exc)) from None
            raise self._refused(change, None, _reason(exc)) from None
        cur.execute("RELEASE SAVEPOINT landing_batch")

    def _put(self, cur: Any, sql: Statements, rows: list[Row], *, move: bool) -> None:
        """A key's last record serves in the main table; one it already served (`move`), and
        earlier records of the batch with that key, go to the duplicates in archive order."""
        last = {key: i for i, (key, _line) in enumerate(rows)}
        winners, earlier = rows, []
        if len(last) < len(rows):
            winners = [rows[i] for i in sorted(last.values())]
            earlier = [row for i, row in enumerate(rows) if last[row[0]] != i]
        if move:
            cur.execute(sql.move_to_duplicates, (list(last),))
        if earlier:
            cur.copy_expert(sql.copy_duplicates, io.StringIO("".join(r[1] for r in earlier)))
        cur.copy_expert(sql.copy_main, io.StringIO("".join(r[1] for r in winners)))

    # --- reading back ----------------------------------------------------------------------

    def _sum(self, cur: Any, shard: int) -> LandedContent:
        sql = self._statements()
        layout = sql.layout
        width, key_index = len(layout.columns), layout.key_index
        names = (self._names.name, self._names.duplicates_name)
        shards, delimiter, is_csv = self._shards, self._delimiter, self._csv
        total = count = bad = 0
        problems: list[str] = []
        for row in cur:
            key, text = row[key_index], row[width + 1]
            record = text.encode()
            digest = record_digest(record)
            total += int.from_bytes(digest)
            count += 1
            found: list[str] = []
            if bytes(row[width + 2]) != digest:
                found.append("its record changed after landing")
            key_bytes = key.encode()
            if bytes(row[width]) != key_hash(key_bytes):
                found.append("its key changed after landing (key_hash no longer matches it)")
            if shards is not None and (home := shard_of(key_bytes, shards)) != shard:
                found.append(f"held under shard {shard}, its key belongs in shard {home}")
            if is_csv:
                found += csv_differences(text, row[:width], layout.columns, delimiter)
            if found:
                bad += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append(f"{names[row[-1]]} row {_shown(key)!r}: {'; '.join(found)}")
        if bad > len(problems):
            problems.append(f"... and {bad - len(problems)} more rows with problems")
        return LandedContent(total % MOD, count, problems)

    # --- plumbing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self, doing: str) -> Iterator[Any]:
        """The driver's connection inside one transaction: committed when the block ends,
        rolled back if it raises. Database errors become a LandingError naming the target."""
        try:
            with self._engine.begin() as conn:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                yield raw
        except (SQLAlchemyError, self._pg.Error) as exc:
            raise LandingError(f"{self._where}: cannot {doing} ({_reason(exc)})") from None

    def _statements(self) -> Statements:
        """The statements of the layout prepare() set, or that the table in place has."""
        if self._sql is None:
            with self._connection("read the table's columns") as raw, raw.cursor() as cur:
                have = self._columns(cur, self._names.name)
            if "shard" not in have:
                raise UsageError(
                    f"{self._where}: no landed table for {self._dataset} (prepare it first)"
                )
            layout = csv_layout(have[: have.index("shard")], self._key_column)
            self._layout, self._sql = layout, Statements(self._names, layout)
        return self._sql

    def _missing(self, cur: Any) -> set[str]:
        """Which of the target's relations (and its schema) do not exist yet."""
        names = self._names
        wanted = [names.name, names.duplicates_name, CHECKPOINT_TABLE]
        cur.execute(
            "SELECT to_regclass(x) IS NULL FROM unnest(%s::text[]) WITH ORDINALITY AS t(x, i)"
            " ORDER BY i",
            ([names.sql(name) for name in wanted],),
        )
        missing = {name for name, (absent,) in zip(wanted, cur.fetchall(), strict=True) if absent}
        if names.schema is not None:
            cur.execute("SELECT to_regnamespace(%s) IS NULL", (quote(names.schema),))
            if cur.fetchone()[0]:
                missing.add(SCHEMA)
        return missing

    def _columns(self, cur: Any, name: str) -> tuple[str, ...]:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (self._names.sql(name),),
        )
        return tuple(row[0] for row in cur.fetchall())

    def _checkpoint_sql(self) -> str:
        return (
            f"SELECT generation FROM {self._names.checkpoint}"
            " WHERE dataset = %s AND tbl = %s AND shard = %s"
        )

    def _lock_key(self, what: object) -> int:
        """An advisory lock's 64-bit key for (dataset, table, what)."""
        name = f"migrator-landed\0{self._dataset}\0{self._table}\0{what}".encode()
        return int.from_bytes(xxhash.xxh3_64_digest(name), "big", signed=True)

    def _refused(self, change: RecordsGeneration, key: str | None, reason: str) -> LandingError:
        what = f"record key {_shown(key)!r}: " if key is not None else ""
        return LandingError(
            f"{self._where}: cannot land {change.dataset} shard {change.shard} generation"
            f" {change.generation}: {what}{reason}"
        )


def _shown(key: str) -> str:
    return key if len(key) <= MAX_KEY_SHOWN else key[:MAX_KEY_SHOWN] + "..."


def _reason(exc: BaseException) -> str:
    """The driver's first line: no SQL text, no parameters, no row values."""
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip().splitlines()
    return message[0] if message else type(exc).__name__
