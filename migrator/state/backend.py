"""The database under the state store: SQLite beside the plan's state, or PostgreSQL shared by
many workers. Every table's operations (tables/) run through one Backend: its transactions, its
fast path for point look-ups, its locks between processes, and the migrations run on opening.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash
from sqlalchemy import Connection, Engine, Float, Table, create_engine, event, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from migrator.errors import StateError
from migrator.repository.names import lock_file
from migrator.state import migrate
from migrator.state.private import open_private, private_sqlite
from migrator.state.urls import describe_url

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql


class server_now(FunctionElement[float]):
    """Seconds since the epoch on the state server's clock: one clock for every worker."""

    type = Float()
    inherit_cache = True


@compiles(server_now, "postgresql")
def _pg_now(element: server_now, compiler: Any, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(server_now, "sqlite")
def _sqlite_now(element: server_now, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


class Backend:
    """Thread-safe: each thread works on its own pooled connection (upload workers journal
    multipart uploads while the coordinating thread commits chunks)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = describe_url(url)  # how messages name the store
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StateError(f"{self.path}: not a database URL") from None
        if "@" in (parsed.host or ""):
            raise StateError(
                f"{self.path}: the URL's password holds an unescaped '@' (write it as %40)"
            )
        if parsed.drivername == "postgresql":
            # The driver this release ships (the `postgres` extra); SQLAlchemy's own default
            # for a bare postgresql:// may be another.
            parsed = parsed.set(drivername="postgresql+psycopg2")
            url = parsed.render_as_string(hide_password=False)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StateError(f"{self.path}: the state store is SQLite or PostgreSQL")
        self._file: Path | None = None
        try:
            if self.dialect == "sqlite":
                self._file = Path(parsed.database or "")
                self.path = str(self._file)
                if parsed.database not in (None, "", ":memory:"):
                    private_sqlite(self._file)  # state_dir 0700, the database 0600
                self.engine = _sqlite_engine(url)
            else:
                self.engine = _postgres_engine(url)
            migrate.upgrade(self.engine, self.path, lambda: self.lock("schema-migration"))
        except SQLAlchemyError as exc:
            raise StateError(f"{self.path}: cannot open state store ({_reason(exc)})") from None
        except ImportError as exc:
            raise StateError(
                f"{self.path}: the PostgreSQL driver is not installed ({exc.name}); install"
                " migrator with its `postgres` extra"
            ) from None
        # INSERT ... ON CONFLICT, as the dialect spells it.
        self.insert = _postgres_insert() if self.dialect == "postgresql" else sqlite.insert
        # SQLite point look-ups (one per object part when a run resumes, millions at petabyte
        # scale) skip the pool and the statement layer: a per-thread driver connection runs the
        # statements compiled once (14 µs instead of ~90 µs a look-up, bench/scale.py).
        self._fast = threading.local()
        self._fast_lock = threading.Lock()
        self._fast_connections: list[Any] = []
        self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._upserts: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}

    def close(self) -> None:
        with self._fast_lock:
            for raw in self._fast_connections:
                with contextlib.suppress(Exception):
                    raw.close()
            self._fast_connections.clear()
        self.engine.dispose()

    def fetch(self, stmt: Any, params: dict[str, Any]) -> list[Any]:
        """Rows of a prebuilt select: through the driver directly on SQLite, else as usual."""
        if self.dialect != "sqlite":
            with self.read() as conn:
                return list(conn.execute(stmt, params).fetchall())
        compiled = self._compiled.get(id(stmt))
        if compiled is None:
            c = stmt.compile(dialect=self.engine.dialect)
            # The statement's own literals (e.g. coalesce's '') are bound parameters too.
            compiled = self._compiled[id(stmt)] = (str(c), tuple(c.positiontup or ()), c.params)
        sql, order, literals = compiled
        params = {**literals, **params}
        raw = getattr(self._fast, "raw", None)
        try:
            if raw is None:
                raw = self.engine.raw_connection()
                raw.detach()  # its own, closed by close(); never back in the pool
                self._fast.raw = raw
                with self._fast_lock:
                    self._fast_connections.append(raw)
            cursor = raw.cursor()
            try:
                cursor.execute(sql, tuple(params[k] for k in order))
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except (SQLAlchemyError, sqlite3.Error) as exc:
            self._fast.raw = None
            reason = _reason(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
            raise StateError(f"{self.path}: {reason}") from None

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StateError(f"{self.path}: {_reason(exc)}") from None

    @contextlib.contextmanager
    def write(self, what: str = "") -> Iterator[Connection]:
        """One transaction; on SQLite it takes the write lock at once (BEGIN IMMEDIATE), so
        a read inside it and the write that follows are one step for every process."""
        try:
            with self.engine.connect().execution_options(immediate=True) as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            doing = f"cannot {what} " if what else ""
            error = ContendedError if _contended(exc) else StateError
            raise error(f"{self.path}: {doing}({_reason(exc)})") from None

    def upsert(
        self, table: Table, rows: list[dict[str, Any]] | dict[str, Any], keys: Sequence[str]
    ) -> Any:
        """INSERT ... ON CONFLICT (keys) DO UPDATE: the same statement on both databases; built
        once per table and set of columns (building it costs more than running it on SQLite)."""
        sample = rows[0] if isinstance(rows, list) else rows
        cache_key = (table.name, tuple(keys), tuple(sample))
        built = self._upserts.get(cache_key)
        if built is None:
            stmt = self.insert(table)
            built = self._upserts[cache_key] = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={c: stmt.excluded[c] for c in sample if c not in keys},
            )
        return built

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between every process sharing this store, released on exit or
        when the holder dies: a file lock beside a SQLite store (one machine), an advisory lock
        held by a connection on PostgreSQL (any number of machines)."""
        if self._file is not None:
            path = lock_file(self._file.parent, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open_private(path) as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return
        key = int.from_bytes(xxhash.xxh3_64_digest(name.encode()), "big", signed=True)
        with self.read() as conn:
            try:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
            except SQLAlchemyError as exc:
                raise StateError(f"{self.path}: cannot take lock {name} ({_reason(exc)})") from None
            try:
                yield
            finally:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
                except SQLAlchemyError:
                    conn.invalidate()  # never back to the pool still holding the lock


def _postgres_insert() -> Callable[..., postgresql.Insert]:
    """PostgreSQL's dialect (~20 ms of imports) only for a PostgreSQL store, whose engine has
    loaded it anyway: a SQLite run never needs it."""
    from sqlalchemy.dialects import postgresql

    return postgresql.insert


def _sqlite_engine(url: str) -> Engine:
    # timeout: shard runs in other processes may hold the write lock for a moment.
    engine = create_engine(url, connect_args={"timeout": 60.0, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver
        # WAL: readers never wait for the writer. NORMAL: a power loss may drop the last
        # commits, never corrupt; the destination still has those chunks and a rerun redoes
        # them under the same keys.
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writes take the write lock at once; a read is one statement in autocommit, which
        # WAL serves from a consistent snapshot anyway.
        if conn.get_execution_options().get("immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str) -> Engine:
    return create_engine(
        url,
        # Most calls come from a run's coordinating thread; upload threads journal multipart
        # uploads. A few kept, more on demand: dozens of pods share a server.
        pool_size=4,
        max_overflow=16,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            # A dead peer is noticed in about a minute, both ways: the server drops a dead
            # worker's session (and so its advisory locks), the worker stops waiting on a dead
            # server.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "options": "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10"
            " -c tcp_keepalives_count=3",
        },
    )


class ContendedError(StateError):
    """PostgreSQL chose this transaction to end a deadlock (or a serialization conflict): the
    other one went through, and the same transaction again will too."""


# PostgreSQL's SQLSTATEs for a transaction ended to let another through.
_CONTENDED = {"40P01", "40001"}


def _contended(exc: SQLAlchemyError) -> bool:
    return getattr(getattr(exc, "orig", None), "pgcode", None) in _CONTENDED


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own message, without SQL text or parameters."""
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip().splitlines()
    return message[0] if message else type(exc).__name__
