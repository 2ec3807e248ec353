"""The state store: SQLite in the plan's state_dir by default, PostgreSQL where many workers
share one plan. One schema (schema.py), moved forward by migrations (migrate.py).

It is a fast index of the destination, never the only truth: verify and restore read manifests,
and `migrator state rebuild` makes it anew from them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import xxhash
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from migrator.errors import StateError
from migrator.keys.datakey import DataKey
from migrator.repository.names import dataset_of
from migrator.state import migrate
from migrator.state.leases import Lease, LeaseLostError
from migrator.state.model import (
    CommittedChunk,
    GenerationRow,
    LedgerHead,
    LedgerMove,
    RouteCheckpoint,
    ShardHeadRow,
    ShardProgress,
    ShardStatus,
    UploadEntry,
    check_shard_move,
)
from migrator.state.private import open_private, private_sqlite
from migrator.state.schema import (
    chunks,
    generations,
    leases,
    ledger_heads,
    meta,
    routes,
    shard_maps,
    shards,
    uploads,
)
from migrator.state.sealed import (
    UPLOAD_DIGEST,
    StateSealer,
    is_sealed,
    legacy_marker,
    no_key,
    seal_legacy_rows,
)

Fence = Mapping[tuple[str, int], Lease]  # the leases a writer holds, by (dataset, shard)


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


_CHUNK_COLUMNS = (
    chunks.c.dataset,
    chunks.c.generation,
    chunks.c.shard,
    chunks.c.object_key,
    chunks.c.sequence,
    chunks.c.name,
    chunks.c.records,
    chunks.c.plain_size,
    chunks.c.stored_size,
    chunks.c.plain_xxh3,
    chunks.c.stored_xxh3,
    chunks.c.source_end,
    chunks.c.source_version,
)
_UPLOAD_COLUMNS = (
    uploads.c.object_key,
    uploads.c.upload_id,
    uploads.c.salt,
    uploads.c.plain_xxh3,
    uploads.c.stored_xxh3,
    uploads.c.stored_size,
)


# Statements run once per chunk or per look-up, built once: building a select costs more than
# running it on SQLite.
_BY_CHUNK_KEY = select(*_CHUNK_COLUMNS).where(
    chunks.c.dataset == bindparam("d"),
    chunks.c.generation == bindparam("g"),
    chunks.c.object_key == bindparam("k"),
)
_BY_SHARD = (
    select(*_CHUNK_COLUMNS)
    .where(
        chunks.c.dataset == bindparam("d"),
        chunks.c.generation == bindparam("g"),
        chunks.c.shard == bindparam("s"),
    )
    .order_by(func.coalesce(chunks.c.name, ""), chunks.c.sequence)
)
_STATUS = select(shards.c.status).where(
    shards.c.dataset == bindparam("d"),
    shards.c.generation == bindparam("g"),
    shards.c.shard == bindparam("s"),
)
_TOTALS = select(
    func.count(),
    func.coalesce(func.sum(chunks.c.records), 0),
    func.coalesce(func.sum(chunks.c.plain_size), 0),
    func.coalesce(func.sum(chunks.c.stored_size), 0),
).where(
    chunks.c.dataset == bindparam("d"),
    chunks.c.generation == bindparam("g"),
    chunks.c.shard == bindparam("s"),
)
_UPLOAD = select(*_UPLOAD_COLUMNS).where(uploads.c.object_key == bindparam("k"))


def describe_url(url: str) -> str:
    """The URL as messages may show it: never a password (neither in the authority nor as a
    query parameter)."""
    try:
        parsed = make_url(url)
        query = {k: v for k, v in parsed.query.items() if k.lower() not in _SECRET_PARAMS}
        shown = parsed.set(password=None, query=query).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<state URL>"
    if "@" in (parsed.host or "") or (
        parsed.password is not None and str(parsed.password) in shown
    ):
        return "<state URL>"  # an unescaped separator in the password: show nothing of it
    return shown


_SECRET_PARAMS = frozenset({"password", "passfile", "sslpassword", "sslkey"})


class StateDB:
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
                self.engine = create_engine(
                    url,
                    # Most calls come from a run's coordinating thread; upload threads journal
                    # multipart uploads. A few kept, more on demand: dozens of pods share a server.
                    pool_size=4,
                    max_overflow=16,
                    pool_pre_ping=True,
                    pool_recycle=1800,
                    connect_args={
                        # A dead peer is noticed in about a minute, both ways: the server drops
                        # a dead worker's session (and so its advisory locks), the worker stops
                        # waiting on a dead server.
                        "keepalives": 1,
                        "keepalives_idle": 30,
                        "keepalives_interval": 10,
                        "keepalives_count": 3,
                        "options": "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10"
                        " -c tcp_keepalives_count=3",
                    },
                )
            migrate.upgrade(self.engine, self.path, lambda: self.lock("schema-migration"))
        except SQLAlchemyError as exc:
            raise StateError(f"{self.path}: cannot open state store ({_reason(exc)})") from None
        except ImportError as exc:
            raise StateError(
                f"{self.path}: the PostgreSQL driver is not installed ({exc.name}); install"
                " migrator with its `postgres` extra"
            ) from None
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        # SQLite point look-ups (one per object part when a run resumes, millions at petabyte
        # scale) skip the pool and the statement layer: a per-thread driver connection runs the
        # statements compiled once (14 µs instead of ~90 µs a look-up, bench/scale.py).
        self._fast = threading.local()
        self._fast_lock = threading.Lock()
        self._fast_connections: list[Any] = []
        self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._sealers: dict[str, StateSealer] = {}  # by dataset: see bind_dataset_key
        self._upserts: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}
        chunk_insert = self._insert(chunks)
        self._chunk_upsert = chunk_insert.on_conflict_do_update(
            index_elements=["dataset", "generation", "object_key"],
            set_={
                c.name: chunk_insert.excluded[c.name]
                for c in chunks.columns
                if c.name not in ("dataset", "generation", "object_key")
            },
        )

    @classmethod
    def sqlite_file(cls, path: Path) -> StateDB:
        return cls(f"sqlite:///{path}")

    def close(self) -> None:
        with self._fast_lock:
            for raw in self._fast_connections:
                with contextlib.suppress(Exception):
                    raw.close()
            self._fast_connections.clear()
        self.engine.dispose()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateDB({self.path})"

    # --- plumbing ------------------------------------------------------------------------

    def _fetch(self, stmt: Any, params: dict[str, Any]) -> list[Any]:
        """Rows of a prebuilt select: through the driver directly on SQLite, else as usual."""
        if self.dialect != "sqlite":
            with self._read() as conn:
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
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StateError(f"{self.path}: {_reason(exc)}") from None

    @contextlib.contextmanager
    def _write(self, what: str = "") -> Iterator[Connection]:
        """One transaction; on SQLite it takes the write lock at once (BEGIN IMMEDIATE), so
        a read inside it and the write that follows are one step for every process."""
        try:
            with self.engine.connect().execution_options(immediate=True) as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            doing = f"cannot {what} " if what else ""
            raise StateError(f"{self.path}: {doing}({_reason(exc)})") from None

    def _upsert(
        self, table: Any, rows: list[dict[str, Any]] | dict[str, Any], keys: Sequence[str]
    ) -> Any:
        """INSERT ... ON CONFLICT (keys) DO UPDATE: the same statement on both databases; built
        once per table and set of columns (building it costs more than running it on SQLite)."""
        sample = rows[0] if isinstance(rows, list) else rows
        cache_key = (table.name, tuple(keys), tuple(sample))
        built = self._upserts.get(cache_key)
        if built is None:
            stmt = self._insert(table)
            built = self._upserts[cache_key] = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={c: stmt.excluded[c] for c in sample if c not in keys},
            )
        return built

    # --- meta and ownership -------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._read() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == key)).fetchone()
        return None if row is None else str(row[0])

    def claim_for_plan(self, plan: str) -> None:
        """A store serves one plan: datasets of two plans must never mix in one database."""
        with self._write("record the plan") as conn:
            conn.execute(
                self._insert(meta).on_conflict_do_nothing(index_elements=["key"]),
                {"key": "plan", "value": plan},
            )
            owner = conn.execute(select(meta.c.value).where(meta.c.key == "plan")).scalar_one()
        if owner != plan:
            raise StateError(
                f"{self.path}: this state store belongs to plan {owner!r}, not {plan!r}; give"
                " each plan its own database (state_url) or state_dir"
            )

    # --- sealed values (state/sealed.py) -------------------------------------------------

    def bind_dataset_key(self, dataset: str, first: DataKey) -> None:
        """Names and digests of `dataset` are sealed under a key derived from its first data
        key: bind it before writing or reading them. The first bind seals what an older
        release stored in plain."""
        sealer = StateSealer(dataset, first)
        marker = legacy_marker(dataset)
        with self._read() as conn:
            done = conn.execute(select(meta.c.value).where(meta.c.key == marker)).first()
        if done is None:
            with self._write(f"seal dataset {dataset}'s values") as conn:
                seal_legacy_rows(conn, sealer)
                conn.execute(
                    self._insert(meta).on_conflict_do_nothing(index_elements=["key"]),
                    {"key": marker, "value": "1"},
                )
        self._sealers[dataset] = sealer

    def _sealer(self, dataset: str, what: str) -> StateSealer:
        sealer = self._sealers.get(dataset)
        if sealer is None:
            raise no_key(dataset, what)
        return sealer

    def _open_text(self, dataset: str, column: str, value: str | None) -> str | None:
        if value is None or not is_sealed(value):
            return value
        return self._sealer(dataset, column).open_text(column, value)

    def _open_bytes(self, dataset: str, column: str, value: bytes | None) -> bytes | None:
        if value is None or not is_sealed(value):
            return value
        return self._sealer(dataset, column).open_bytes(column, value)

    def _chunk(self, row: Sequence[Any]) -> CommittedChunk:
        """A chunks row (_CHUNK_COLUMNS) with its name and plaintext digest opened."""
        dataset = row[0]
        values = list(row)
        values[5] = self._open_text(dataset, "name", values[5])
        values[9] = self._open_text(dataset, "plain_xxh3", values[9])
        return CommittedChunk(*values)

    # --- locks between processes ---------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between every process sharing this store, released on exit or
        when the holder dies: a file lock beside a SQLite store (one machine), an advisory lock
        held by a connection on PostgreSQL (any number of machines)."""
        if self._file is not None:
            path = self._file.parent / "locks" / f"{name}.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open_private(path) as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return
        key = int.from_bytes(xxhash.xxh3_64_digest(name.encode()), "big", signed=True)
        with self._read() as conn:
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

    # --- shard leases --------------------------------------------------------------------

    def claim_shard(
        self, dataset: str, shard: int, owner: str, ttl: float, steal_from: str | None = None
    ) -> Lease | None:
        """The shard's lease for `owner` if it is free, lapsed, already its own, or held by
        `steal_from` (a holder known to be dead); else None."""
        now = server_now()
        stmt = self._insert(leases).values(
            dataset=dataset,
            shard=shard,
            owner=owner,
            token=1,
            expires_at=now + ttl,
            claimed_at=now,
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=["dataset", "shard"],
            set_={
                "owner": stmt.excluded.owner,
                "token": leases.c.token + 1,
                "expires_at": stmt.excluded.expires_at,
                "claimed_at": stmt.excluded.claimed_at,
            },
            where=(leases.c.expires_at < server_now())
            | leases.c.owner.in_([owner, steal_from or owner]),
        ).returning(leases.c.token)
        with self._write(f"claim shard {shard}") as conn:
            token = conn.execute(upsert).scalar()
        return None if token is None else Lease(dataset, shard, owner, int(token))

    def renew_leases(self, held: Iterable[Lease], ttl: float) -> list[Lease]:
        """Extend every lease still held; returns those lost (taken over by another worker)."""
        lost = []
        with self._write("renew leases") as conn:
            # In shard order, as the fence locks them: two transactions never wait on each
            # other's rows in opposite orders.
            for lease in sorted(held, key=lambda x: (x.dataset, x.shard)):
                done = conn.execute(
                    update(leases)
                    .where(
                        leases.c.dataset == lease.dataset,
                        leases.c.shard == lease.shard,
                        leases.c.owner == lease.owner,
                        leases.c.token == lease.token,
                    )
                    .values(expires_at=server_now() + ttl)
                )
                if done.rowcount != 1:
                    lost.append(lease)
        return lost

    def release_leases(self, held: Iterable[Lease]) -> None:
        with self._write("release leases") as conn:
            for lease in sorted(held, key=lambda x: (x.dataset, x.shard)):
                conn.execute(
                    delete(leases).where(
                        leases.c.dataset == lease.dataset,
                        leases.c.shard == lease.shard,
                        leases.c.owner == lease.owner,
                        leases.c.token == lease.token,
                    )
                )

    def lease_holders(self, dataset: str) -> dict[int, tuple[str, float]]:
        """shard -> (owner, seconds until the lease lapses; negative: lapsed)."""
        with self._read() as conn:
            rows = conn.execute(
                select(leases.c.shard, leases.c.owner, leases.c.expires_at - server_now()).where(
                    leases.c.dataset == dataset
                )
            ).fetchall()
        return {int(s): (str(o), float(left)) for s, o, left in rows}

    def _check_fence(
        self, conn: Connection, dataset: str, shard_ids: Iterable[int], fence: Fence | None
    ) -> None:
        """Inside the writing transaction: every shard written is still leased to the writer
        (PostgreSQL locks the lease rows, so a takeover waits for this commit)."""
        if fence is None:
            return
        wanted = sorted(set(shard_ids))
        query = (
            select(leases.c.shard, leases.c.owner, leases.c.token)
            .where(leases.c.dataset == dataset, leases.c.shard.in_(wanted))
            .order_by(leases.c.shard)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update()
        found = {int(s): (o, int(t)) for s, o, t in conn.execute(query)}
        for shard in wanted:
            held = fence.get((dataset, shard))
            if held is None or found.get(shard) != (held.owner, held.token):
                raise LeaseLostError(
                    f"dataset {dataset} shard {shard}: this worker's lease lapsed and another"
                    " worker took the shard over; nothing of this worker was recorded for it"
                )

    # --- records routing ---------------------------------------------------------------

    def route_checkpoint(self, dataset: str, generation: int) -> RouteCheckpoint | None:
        with self._read() as conn:
            row = conn.execute(
                select(
                    routes.c.next_file,
                    routes.c.inventory_digest,
                    routes.c.spool_sizes,
                    routes.c.csv_header,
                    routes.c.complete,
                ).where(routes.c.dataset == dataset, routes.c.generation == generation)
            ).fetchone()
        if row is None:
            return None
        blob = bytes(row[2])
        sizes = struct.unpack(f">{len(blob) // 8}Q", blob)
        header = self._open_bytes(dataset, "csv_header", None if row[3] is None else bytes(row[3]))
        listing = self._open_text(dataset, "inventory_digest", row[1])
        return RouteCheckpoint(int(row[0]), listing or "", sizes, header, bool(row[4]))

    def last_csv_header(self, dataset: str, before: int) -> bytes | None:
        """The CSV header the last completed routing before generation `before` saw."""
        with self._read() as conn:
            row = conn.execute(
                select(routes.c.csv_header)
                .where(
                    routes.c.dataset == dataset,
                    routes.c.generation < before,
                    routes.c.complete == 1,
                )
                .order_by(routes.c.generation.desc())
                .limit(1)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return self._open_bytes(dataset, "csv_header", bytes(row[0]))

    def save_route_checkpoint(self, dataset: str, generation: int, cp: RouteCheckpoint) -> None:
        sealer = self._sealer(dataset, "the routing checkpoint")
        row = {
            "dataset": dataset,
            "generation": generation,
            "next_file": cp.next_file,
            "inventory_digest": sealer.seal_text("inventory_digest", cp.inventory_digest),
            "spool_sizes": struct.pack(f">{len(cp.spool_sizes)}Q", *cp.spool_sizes),
            "csv_header": (
                None if cp.csv_header is None else sealer.seal_bytes("csv_header", cp.csv_header)
            ),
            "complete": int(cp.complete),
        }
        with self._write("save the routing checkpoint") as conn:
            conn.execute(self._upsert(routes, row, ["dataset", "generation"]), row)

    # --- shards ------------------------------------------------------------------------

    def shard_status(self, dataset: str, generation: int, shard: int) -> ShardStatus:
        rows = self._fetch(_STATUS, {"d": dataset, "g": generation, "s": shard})
        return ShardStatus(rows[0][0]) if rows else ShardStatus.PENDING

    def set_shard_status(
        self,
        dataset: str,
        generation: int,
        shard: int,
        status: ShardStatus,
        manifest_key: str | None = None,
    ) -> None:
        with self._write(f"mark shard {shard} {status}") as conn:
            check_shard_move(dataset, shard, _status(conn, dataset, generation, shard), status)
            row = {
                "dataset": dataset,
                "generation": generation,
                "shard": shard,
                "status": str(status),
                "manifest_key": manifest_key,
                "updated_at": time.time(),
            }
            stmt = self._insert(shards)
            # Never over a complete shard, even if one completed since the check above (on
            # PostgreSQL the check and the write are not one step).
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["dataset", "generation", "shard"],
                    set_={k: stmt.excluded[k] for k in ("status", "manifest_key", "updated_at")},
                    where=shards.c.status != str(ShardStatus.COMPLETE),
                ),
                row,
            )

    def complete_shards(self, dataset: str, generation: int) -> set[int]:
        """The shards complete in the generation: one query, for workers polling it."""
        with self._read() as conn:
            rows = conn.execute(
                select(shards.c.shard).where(
                    shards.c.dataset == dataset,
                    shards.c.generation == generation,
                    shards.c.status == str(ShardStatus.COMPLETE),
                )
            ).scalars()
            return {int(r) for r in rows}

    def complete_shard(
        self,
        dataset: str,
        generation: int,
        shard: int,
        *,
        manifest_key: str | None,
        manifest_xxh3: str | None = None,
        base: bool = False,
        inventory: bytes | None = None,
        live_records: int = 0,
        digest: str | None = None,
        removed_records: int = 0,
        fence: Fence | None = None,
    ) -> None:
        """The shard's manifest is stored (or the generation left it untouched: no manifest),
        and its inventory is what the next sync diffs against: both in one transaction."""
        if digest is not None:
            digest = self._sealer(dataset, "shard digests").seal_text("digest", digest)
        if inventory is not None:
            inventory = self._sealer(dataset, "inventories").seal_bytes("blob", inventory)
        with self._write(f"complete shard {shard}") as conn:
            self._check_fence(conn, dataset, [shard], fence)
            old = _status(conn, dataset, generation, shard)
            check_shard_move(dataset, shard, old, ShardStatus.COMPLETE)
            # The shard's totals, kept with it: `status` then never sums millions of rows.
            n, r, p, st = _totals(conn, dataset, generation, shard)
            row = {
                "dataset": dataset,
                "generation": generation,
                "shard": shard,
                "status": str(ShardStatus.COMPLETE),
                "manifest_key": manifest_key,
                "updated_at": time.time(),
                "manifest_xxh3": manifest_xxh3,
                "base": int(base),
                "live_records": live_records,
                "digest": digest,
                "removed_records": removed_records,
                "chunks_n": n,
                "records_n": r,
                "plain_n": p,
                "stored_n": st,
            }
            conn.execute(self._upsert(shards, row, ["dataset", "generation", "shard"]), row)
            if inventory is not None:
                inv = {
                    "dataset": dataset,
                    "shard": shard,
                    "generation": generation,
                    "blob": inventory,
                }
                conn.execute(self._upsert(shard_maps, inv, ["dataset", "shard", "generation"]), inv)

    def shard_heads(self, dataset: str, shard: int) -> list[ShardHeadRow]:
        """Every stored manifest of the shard, oldest first."""
        return self._heads(dataset, shard).get(shard, [])

    def latest_heads(self, dataset: str) -> dict[int, ShardHeadRow]:
        """Each shard's newest stored manifest, in one query."""
        return {shard: rows[-1] for shard, rows in self._heads(dataset, None).items()}

    def _heads(self, dataset: str, shard: int | None) -> dict[int, list[ShardHeadRow]]:
        where = [
            shards.c.dataset == dataset,
            shards.c.status == str(ShardStatus.COMPLETE),
            shards.c.manifest_key.is_not(None),
        ]
        if shard is not None:
            where.append(shards.c.shard == shard)
        with self._read() as conn:
            rows = conn.execute(
                select(
                    shards.c.shard,
                    shards.c.generation,
                    shards.c.manifest_key,
                    shards.c.manifest_xxh3,
                    shards.c.base,
                    shards.c.live_records,
                    shards.c.digest,
                    shards.c.removed_records,
                    shards.c.updated_at,
                )
                .where(*where)
                .order_by(shards.c.shard, shards.c.generation)
            ).fetchall()
        out: dict[int, list[ShardHeadRow]] = {}
        # Only a generation record needs the digest: a reader without the dataset's key gets
        # it sealed (never hex, so never taken for one).
        sealer = self._sealers.get(dataset)
        for r in rows:
            digest = r[6] or ""
            if sealer is not None:
                digest = sealer.open_text("digest", digest)
            head = ShardHeadRow(r[1], r[2], r[3] or "", bool(r[4]), r[5], digest, r[7], r[8])
            out.setdefault(int(r[0]), []).append(head)
        return out

    def forget_shard_generations(
        self,
        dataset: str,
        shard: int,
        generations: Iterable[int],
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        """Generations of a shard a compaction deleted, with the ledger segment recording the
        deletion: one transaction."""
        with self._write(f"forget shard {shard}") as conn:
            for generation in generations:
                for table in (chunks, shards):
                    conn.execute(
                        delete(table).where(
                            table.c.dataset == dataset,
                            table.c.generation == generation,
                            table.c.shard == shard,
                        )
                    )
            self._advance_ledger(conn, ledger)

    def forget_chunks(
        self,
        dataset: str,
        generation: int,
        object_keys: Iterable[str],
        fence: Fence | None = None,
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        """Chunks committed for an object that changed or vanished before its shard closed,
        with the ledger segment recording their deletion."""
        keys = list(object_keys)
        if not keys:
            return
        with self._write("forget chunks") as conn:
            if fence is not None:
                owned = conn.execute(
                    select(chunks.c.shard)
                    .where(
                        chunks.c.dataset == dataset,
                        chunks.c.generation == generation,
                        chunks.c.object_key.in_(keys),
                    )
                    .distinct()
                ).scalars()
                self._check_fence(conn, dataset, list(owned), fence)
            conn.execute(
                delete(chunks).where(
                    chunks.c.dataset == dataset,
                    chunks.c.generation == generation,
                    chunks.c.object_key == bindparam("okey"),
                ),
                [{"okey": k} for k in keys],
            )
            self._advance_ledger(conn, ledger)

    def shard_inventory(self, dataset: str, shard: int, before: int) -> bytes | None:
        """The shard's inventory as of the last generation before `before` that changed it."""
        with self._read() as conn:
            row = conn.execute(
                select(shard_maps.c.blob)
                .where(
                    shard_maps.c.dataset == dataset,
                    shard_maps.c.shard == shard,
                    shard_maps.c.generation < before,
                )
                .order_by(shard_maps.c.generation.desc())
                .limit(1)
            ).fetchone()
        return None if row is None else self._open_bytes(dataset, "blob", bytes(row[0]))

    def prune_inventories(self, dataset: str, shard: int, keep_from: int) -> None:
        """Drop inventories older than the newest one before `keep_from`: no sync needs them."""
        newest = (
            select(func.coalesce(func.max(shard_maps.c.generation), 0))
            .where(
                shard_maps.c.dataset == dataset,
                shard_maps.c.shard == shard,
                shard_maps.c.generation < keep_from,
            )
            .scalar_subquery()
        )
        with self._write("prune inventories") as conn:
            conn.execute(
                delete(shard_maps).where(
                    shard_maps.c.dataset == dataset,
                    shard_maps.c.shard == shard,
                    shard_maps.c.generation < newest,
                )
            )

    # --- generations -------------------------------------------------------------------

    def generations(self, dataset: str) -> list[GenerationRow]:
        with self._read() as conn:
            rows = conn.execute(
                select(
                    generations.c.dataset,
                    generations.c.generation,
                    generations.c.kind,
                    generations.c.status,
                    generations.c.started_at,
                    generations.c.finished_at,
                    generations.c.changed_records,
                    generations.c.changed_bytes,
                    generations.c.record_xxh3,
                )
                .where(generations.c.dataset == dataset)
                .order_by(generations.c.generation)
            ).fetchall()
        return [GenerationRow(*r) for r in rows]

    def latest_generation(self, dataset: str) -> GenerationRow | None:
        rows = self.generations(dataset)
        return rows[-1] if rows else None

    def open_generation(self, dataset: str, generation: int, kind: str) -> GenerationRow:
        """Start `generation` unless it exists (a shard run of another process opened it)."""
        with self._write("open a generation") as conn:
            conn.execute(
                self._insert(generations).on_conflict_do_nothing(
                    index_elements=["dataset", "generation"]
                ),
                {
                    "dataset": dataset,
                    "generation": generation,
                    "kind": kind,
                    "status": "open",
                    "started_at": time.time(),
                },
            )
        return next(g for g in self.generations(dataset) if g.generation == generation)

    def commit_generation(
        self,
        dataset: str,
        generation: int,
        *,
        changed_records: int,
        changed_bytes: int,
        record_xxh3: str,
        finished_at: float,
        started_at: float | None = None,
    ) -> None:
        """The generation's record is stored. `started_at`: as the record tells it, when the
        state is rebuilt from the destination."""
        values: dict[str, object] = {
            "status": "committed",
            "finished_at": finished_at,
            "changed_records": changed_records,
            "changed_bytes": changed_bytes,
            "record_xxh3": record_xxh3,
        }
        if started_at is not None:
            values["started_at"] = started_at
        with self._write("commit a generation") as conn:
            conn.execute(
                update(generations)
                .where(generations.c.dataset == dataset, generations.c.generation == generation)
                .values(**values)
            )

    def shard_progress(self, dataset: str, generation: int) -> list[ShardProgress]:
        """Every shard with a status, in shard order. A complete shard's totals were kept when
        it completed; only shards still open are summed from their chunks, so this stays fast
        at millions of chunks."""
        out = []
        with self._read() as conn:
            rows = conn.execute(
                select(
                    shards.c.shard,
                    shards.c.status,
                    shards.c.chunks_n,
                    shards.c.records_n,
                    shards.c.plain_n,
                    shards.c.stored_n,
                    shards.c.manifest_key,
                )
                .where(shards.c.dataset == dataset, shards.c.generation == generation)
                .order_by(shards.c.shard)
            ).fetchall()
            # A complete shard's totals were kept; the open ones are summed in one query.
            open_ids = [r[0] for r in rows if r[1] != ShardStatus.COMPLETE]
            sums: dict[int, tuple[int, ...]] = {}
            if open_ids:
                grouped = conn.execute(
                    select(
                        chunks.c.shard,
                        func.count(),
                        func.coalesce(func.sum(chunks.c.records), 0),
                        func.coalesce(func.sum(chunks.c.plain_size), 0),
                        func.coalesce(func.sum(chunks.c.stored_size), 0),
                    )
                    .where(
                        chunks.c.dataset == dataset,
                        chunks.c.generation == generation,
                        chunks.c.shard.in_(open_ids),
                    )
                    .group_by(chunks.c.shard)
                )
                sums = {int(g[0]): tuple(int(v) for v in g[1:]) for g in grouped}
            for shard, status, n, r, p, st, mkey in rows:
                if status != ShardStatus.COMPLETE:
                    n, r, p, st = sums.get(shard, (0, 0, 0, 0))
                out.append(
                    ShardProgress(
                        dataset, generation, shard, ShardStatus(status), n, r, p, st, mkey
                    )
                )
        return out

    # --- chunks ------------------------------------------------------------------------

    def commit_chunks(
        self,
        chunks_: Iterable[CommittedChunk],
        fence: Fence | None = None,
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        """One transaction for a batch: batching keeps commits cheap at millions of chunks. The
        ledger heads of the batch's shards move in the same transaction."""
        batch = list(chunks_)
        now = time.time()
        sealers = {c.dataset: self._sealer(c.dataset, "chunk names and digests") for c in batch}
        rows = [
            {
                "dataset": c.dataset,
                "generation": c.generation,
                "object_key": c.object_key,
                "shard": c.shard,
                "sequence": c.sequence,
                "name": None if c.name is None else sealers[c.dataset].seal_text("name", c.name),
                "records": c.records,
                "plain_size": c.plain_size,
                "stored_size": c.stored_size,
                "plain_xxh3": sealers[c.dataset].seal_text("plain_xxh3", c.plain_xxh3),
                "stored_xxh3": c.stored_xxh3,
                "source_end": c.source_end,
                "source_version": c.source_version,
                "committed_at": now,
            }
            for c in batch
        ]
        if not rows:
            return
        with self._write("commit chunks") as conn:
            if fence is not None:
                touched: dict[str, set[int]] = {}
                for c in batch:
                    touched.setdefault(c.dataset, set()).add(c.shard)
                for dataset, owned in touched.items():
                    self._check_fence(conn, dataset, owned, fence)
            conn.execute(self._chunk_upsert, rows)
            self._advance_ledger(conn, ledger)

    def has_chunks(self, dataset: str, generation: int) -> bool:
        with self._read() as conn:
            row = conn.execute(
                select(chunks.c.shard)
                .where(chunks.c.dataset == dataset, chunks.c.generation == generation)
                .limit(1)
            ).fetchone()
        return row is not None

    def chunk_count(self, dataset: str, generation: int, shard: int) -> int:
        with self._read() as conn:
            return _totals(conn, dataset, generation, shard)[0]

    def committed_chunk(
        self, dataset: str, generation: int, object_key: str
    ) -> CommittedChunk | None:
        rows = self._fetch(_BY_CHUNK_KEY, {"d": dataset, "g": generation, "k": object_key})
        return self._chunk(rows[0]) if rows else None

    def shard_chunks(self, dataset: str, generation: int, shard: int) -> Iterator[CommittedChunk]:
        """In (name, sequence) order: records by sequence, object parts grouped by object
        (sorted here: the database holds the names sealed)."""
        rows = self._fetch(_BY_SHARD, {"d": dataset, "g": generation, "s": shard})
        yield from sorted(map(self._chunk, rows), key=lambda c: (c.name or "", c.sequence))

    # --- audit ledger heads ------------------------------------------------------------

    def ledger_heads(self, dataset: str, shard_ids: Iterable[int]) -> dict[int, LedgerHead]:
        """Where each shard's audit ledger ends; shards without one are left out."""
        wanted = sorted(set(shard_ids))
        with self._read() as conn:
            rows = conn.execute(
                select(
                    ledger_heads.c.shard,
                    ledger_heads.c.segment,
                    ledger_heads.c.entries,
                    ledger_heads.c.link,
                ).where(ledger_heads.c.dataset == dataset, ledger_heads.c.shard.in_(wanted))
            ).fetchall()
        return {int(s): LedgerHead(dataset, int(s), int(g), int(n), str(k)) for s, g, n, k in rows}

    def ledger_begun(self, dataset: str) -> bool:
        """Whether the store knows an audit ledger head of any shard of the dataset."""
        with self._read() as conn:
            row = conn.execute(
                select(ledger_heads.c.shard).where(ledger_heads.c.dataset == dataset).limit(1)
            ).fetchone()
        return row is not None

    def ledger_head(self, dataset: str, shard: int) -> LedgerHead | None:
        return self.ledger_heads(dataset, [shard]).get(shard)

    def set_ledger_head(self, head: LedgerHead) -> None:
        """The head as the destination's ledger shows it (state rebuild)."""
        row = _ledger_row(head)
        with self._write("set a ledger head") as conn:
            conn.execute(self._upsert(ledger_heads, row, ["dataset", "shard"]), row)

    def _advance_ledger(self, conn: Connection, moves: Sequence[LedgerMove]) -> None:
        """Inside the writing transaction: a head moves only from the segment its new segment
        was written after, so two writers can never both extend one ledger."""
        for move in moves:
            row = _ledger_row(move.after)
            if move.before == 0:
                stmt = self._insert(ledger_heads).on_conflict_do_nothing(
                    index_elements=["dataset", "shard"]
                )
                done = conn.execute(stmt, row).rowcount
            else:
                done = conn.execute(
                    update(ledger_heads)
                    .where(
                        ledger_heads.c.dataset == move.after.dataset,
                        ledger_heads.c.shard == move.after.shard,
                        ledger_heads.c.segment == move.before,
                    )
                    .values(row)
                ).rowcount
            if done != 1:
                raise StateError(
                    f"dataset {move.after.dataset} shard {move.after.shard}: the audit ledger"
                    f" moved past segment {move.before} while segment {move.after.segment} was"
                    " written; nothing of this batch was recorded"
                )

    # --- multipart upload journal ------------------------------------------------------

    def journaled_upload(self, object_key: str) -> UploadEntry | None:
        with self._read() as conn:
            row = conn.execute(_UPLOAD, {"k": object_key}).fetchone()  # rare: not the fast path
        return None if row is None else self._upload(row)

    def journal_upload(self, entry: UploadEntry) -> None:
        row = {
            "object_key": entry.object_key,
            "upload_id": entry.upload_id,
            "salt": entry.salt,
            "plain_xxh3": self._sealer(dataset_of(entry.object_key), UPLOAD_DIGEST).seal_bytes(
                UPLOAD_DIGEST, entry.plain_xxh3
            ),
            "stored_xxh3": entry.stored_xxh3,
            "stored_size": entry.stored_size,
            "started_at": time.time(),
        }
        with self._write("journal an upload") as conn:
            conn.execute(self._upsert(uploads, row, ["object_key"]), row)

    def forget_upload(self, object_key: str) -> None:
        with self._write("forget an upload") as conn:
            conn.execute(delete(uploads).where(uploads.c.object_key == object_key))

    def journaled_uploads(self) -> list[UploadEntry]:
        with self._read() as conn:
            rows = conn.execute(select(*_UPLOAD_COLUMNS).order_by(uploads.c.object_key))
            return [self._upload(r) for r in rows]

    def _upload(self, row: Any) -> UploadEntry:
        digest = self._open_bytes(dataset_of(row[0]), UPLOAD_DIGEST, bytes(row[3]))
        assert digest is not None
        return UploadEntry(row[0], row[1], bytes(row[2]), digest, bytes(row[4]), int(row[5]))


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


def _status(conn: Connection, dataset: str, generation: int, shard: int) -> ShardStatus:
    row = conn.execute(_STATUS, {"d": dataset, "g": generation, "s": shard}).fetchone()
    return ShardStatus.PENDING if row is None else ShardStatus(row[0])


def _totals(conn: Connection, dataset: str, generation: int, shard: int) -> tuple[int, ...]:
    row = conn.execute(_TOTALS, {"d": dataset, "g": generation, "s": shard}).one()
    return tuple(int(v) for v in row)


def _ledger_row(head: LedgerHead) -> dict[str, Any]:
    return {
        "dataset": head.dataset,
        "shard": head.shard,
        "segment": head.segment,
        "entries": head.entries,
        "link": head.link,
        "updated_at": time.time(),
    }


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own message, without SQL text or parameters."""
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


def state_url_for(state_dir: Path, plan_url: str | None, default_file: str) -> str:
    """MIGRATOR_STATE_URL, else the plan's state_url, else SQLite in state_dir."""
    return os.environ.get(STATE_URL_ENV) or plan_url or f"sqlite:///{state_dir / default_file}"


STATE_URL_ENV = "MIGRATOR_STATE_URL"
