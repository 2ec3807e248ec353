"""SQLite checkpoint store: the embedded default, one file in the plan's state_dir.

It is a fast index of the destination, never the only truth: verify and restore read manifests.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from migrator.errors import StateError
from migrator.state.model import (
    CommittedChunk,
    GenerationRow,
    RouteCheckpoint,
    ShardHeadRow,
    ShardProgress,
    ShardStatus,
    UploadEntry,
    check_shard_move,
)

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS routes (
  dataset TEXT NOT NULL, generation INTEGER NOT NULL,
  next_file INTEGER NOT NULL, inventory_digest TEXT NOT NULL,
  spool_sizes BLOB NOT NULL, csv_header BLOB, complete INTEGER NOT NULL,
  PRIMARY KEY (dataset, generation));
CREATE TABLE IF NOT EXISTS shards (
  dataset TEXT NOT NULL, generation INTEGER NOT NULL, shard INTEGER NOT NULL,
  status TEXT NOT NULL, manifest_key TEXT, updated_at REAL NOT NULL,
  manifest_xxh3 TEXT, base INTEGER NOT NULL DEFAULT 0,
  live_records INTEGER NOT NULL DEFAULT 0, digest TEXT, removed_records INTEGER NOT NULL DEFAULT 0,
  chunks_n INTEGER NOT NULL DEFAULT 0, records_n INTEGER NOT NULL DEFAULT 0,
  plain_n INTEGER NOT NULL DEFAULT 0, stored_n INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (dataset, generation, shard));
CREATE TABLE IF NOT EXISTS generations (
  dataset TEXT NOT NULL, generation INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
  started_at REAL NOT NULL, finished_at REAL, changed_records INTEGER NOT NULL DEFAULT 0,
  changed_bytes INTEGER NOT NULL DEFAULT 0, record_xxh3 TEXT,
  PRIMARY KEY (dataset, generation));
CREATE TABLE IF NOT EXISTS shard_maps (
  dataset TEXT NOT NULL, shard INTEGER NOT NULL, generation INTEGER NOT NULL, blob BLOB NOT NULL,
  PRIMARY KEY (dataset, shard, generation));
CREATE TABLE IF NOT EXISTS chunks (
  dataset TEXT NOT NULL, generation INTEGER NOT NULL, object_key TEXT NOT NULL,
  shard INTEGER NOT NULL, sequence INTEGER NOT NULL, name TEXT,
  records INTEGER NOT NULL, plain_size INTEGER NOT NULL, stored_size INTEGER NOT NULL,
  plain_xxh3 TEXT NOT NULL, stored_xxh3 TEXT NOT NULL,
  source_end INTEGER NOT NULL, source_version TEXT NOT NULL, committed_at REAL NOT NULL,
  PRIMARY KEY (dataset, generation, object_key));
CREATE INDEX IF NOT EXISTS chunks_by_shard ON chunks (dataset, generation, shard, sequence);
CREATE TABLE IF NOT EXISTS uploads (
  object_key TEXT PRIMARY KEY, upload_id TEXT NOT NULL, salt BLOB NOT NULL,
  plain_xxh3 BLOB NOT NULL, stored_xxh3 BLOB NOT NULL, stored_size INTEGER NOT NULL,
  started_at REAL NOT NULL);
"""


class _Rows(list[Any]):
    """Fetched rows, with the cursor methods callers use."""

    def fetchone(self) -> Any:
        return self[0] if self else None

    def fetchall(self) -> list[Any]:
        return list(self)


_CHUNK_COLUMNS = (
    "dataset, generation, shard, object_key, sequence, name, records, plain_size, stored_size,"
    " plain_xxh3, stored_xxh3, source_end, source_version"
)


class SqliteStateStore:
    """One connection; a lock serialises it, since upload workers journal multipart uploads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout: shard runs in other processes may hold the write lock for a moment.
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=60.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power loss may drop the last commits, never corrupt; the
            # destination still has those chunks and a rerun redoes them under the same keys.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise StateError(
                    f"{path}: state schema {row[0]} is not {SCHEMA_VERSION}; this state was"
                    " written by an older release: move it aside and start the plan afresh"
                )
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open state store ({exc})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, sql: str, args: tuple[object, ...] | dict[str, object] = ()) -> _Rows:
        """Execute and fetch under the lock: a cursor must not outlive it across threads."""
        try:
            with self._lock:
                return _Rows(self._db.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {exc}") from None

    # --- meta --------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._run("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._run("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # --- records routing ---------------------------------------------------------------

    def route_checkpoint(self, dataset: str, generation: int) -> RouteCheckpoint | None:
        row = self._run(
            "SELECT next_file, inventory_digest, spool_sizes, csv_header, complete FROM routes"
            " WHERE dataset=? AND generation=?",
            (dataset, generation),
        ).fetchone()
        if row is None:
            return None
        blob: bytes = row[2]
        sizes = struct.unpack(f">{len(blob) // 8}Q", blob)
        return RouteCheckpoint(row[0], row[1], sizes, row[3], bool(row[4]))

    def last_csv_header(self, dataset: str, before: int) -> bytes | None:
        """The CSV header the last completed routing before generation `before` saw."""
        row = self._run(
            "SELECT csv_header FROM routes WHERE dataset=? AND generation<? AND complete=1"
            " ORDER BY generation DESC LIMIT 1",
            (dataset, before),
        ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def save_route_checkpoint(self, dataset: str, generation: int, cp: RouteCheckpoint) -> None:
        blob = struct.pack(f">{len(cp.spool_sizes)}Q", *cp.spool_sizes)
        self._run(
            "INSERT OR REPLACE INTO routes VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                dataset,
                generation,
                cp.next_file,
                cp.inventory_digest,
                blob,
                cp.csv_header,
                int(cp.complete),
            ),
        )

    # --- shards ------------------------------------------------------------------------

    def shard_status(self, dataset: str, generation: int, shard: int) -> ShardStatus:
        row = self._run(
            "SELECT status FROM shards WHERE dataset=? AND generation=? AND shard=?",
            (dataset, generation, shard),
        ).fetchone()
        return ShardStatus.PENDING if row is None else ShardStatus(row[0])

    def set_shard_status(
        self,
        dataset: str,
        generation: int,
        shard: int,
        status: ShardStatus,
        manifest_key: str | None = None,
    ) -> None:
        old = self.shard_status(dataset, generation, shard)
        check_shard_move(dataset, shard, old, status)
        self._run(
            "INSERT OR REPLACE INTO shards (dataset, generation, shard, status, manifest_key,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (dataset, generation, shard, str(status), manifest_key, time.time()),
        )

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
    ) -> None:
        """The shard's manifest is stored (or the generation left it untouched: no manifest),
        and its inventory is what the next sync diffs against: both in one transaction."""
        try:
            with self._lock, self._db:
                # IMMEDIATE: the status read and the write are one step for every process
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT status FROM shards WHERE dataset=? AND generation=? AND shard=?",
                    (dataset, generation, shard),
                ).fetchone()
                old = ShardStatus.PENDING if row is None else ShardStatus(row[0])
                check_shard_move(dataset, shard, old, ShardStatus.COMPLETE)
                # The shard's totals, kept with it: `status` then never sums millions of rows.
                totals = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(plain_size), 0),"
                    " COALESCE(SUM(stored_size), 0) FROM chunks"
                    " WHERE dataset=? AND generation=? AND shard=?",
                    (dataset, generation, shard),
                ).fetchone()
                self._db.execute(
                    "INSERT OR REPLACE INTO shards VALUES"
                    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        dataset,
                        generation,
                        shard,
                        str(ShardStatus.COMPLETE),
                        manifest_key,
                        time.time(),
                        manifest_xxh3,
                        int(base),
                        live_records,
                        digest,
                        removed_records,
                        *totals,
                    ),
                )
                if inventory is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO shard_maps VALUES (?, ?, ?, ?)",
                        (dataset, shard, generation, inventory),
                    )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot complete shard {shard} ({exc})") from None

    def shard_heads(self, dataset: str, shard: int) -> list[ShardHeadRow]:
        """Every stored manifest of the shard, oldest first."""
        rows = self._run(
            "SELECT generation, manifest_key, manifest_xxh3, base, live_records, digest,"
            " removed_records, updated_at FROM shards"
            " WHERE dataset=? AND shard=? AND status='complete' AND manifest_key IS NOT NULL"
            " ORDER BY generation",
            (dataset, shard),
        )
        return [
            ShardHeadRow(r[0], r[1], r[2] or "", bool(r[3]), r[4], r[5] or "", r[6], r[7])
            for r in rows
        ]

    def forget_shard_generation(self, dataset: str, generation: int, shard: int) -> None:
        """A shard's generation a compaction replaced and deleted at the destination."""
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN")
                for table in ("chunks", "shards"):
                    self._db.execute(
                        f"DELETE FROM {table} WHERE dataset=? AND generation=? AND shard=?",
                        (dataset, generation, shard),
                    )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot forget shard {shard} ({exc})") from None

    def forget_chunks(self, dataset: str, generation: int, object_keys: Iterable[str]) -> None:
        """Chunks committed for an object that changed or vanished before its shard closed."""
        with self._lock:
            for okey in object_keys:
                self._run(
                    "DELETE FROM chunks WHERE dataset=? AND generation=? AND object_key=?",
                    (dataset, generation, okey),
                )

    def shard_inventory(self, dataset: str, shard: int, before: int) -> bytes | None:
        """The shard's inventory as of the last generation before `before` that changed it."""
        row = self._run(
            "SELECT blob FROM shard_maps WHERE dataset=? AND shard=? AND generation<?"
            " ORDER BY generation DESC LIMIT 1",
            (dataset, shard, before),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def prune_inventories(self, dataset: str, shard: int, keep_from: int) -> None:
        """Drop inventories older than the newest one before `keep_from`: no sync needs them."""
        self._run(
            "DELETE FROM shard_maps WHERE dataset=? AND shard=? AND generation < ("
            " SELECT COALESCE(MAX(generation), 0) FROM shard_maps"
            " WHERE dataset=? AND shard=? AND generation<?)",
            (dataset, shard, dataset, shard, keep_from),
        )

    # --- generations -------------------------------------------------------------------

    def generations(self, dataset: str) -> list[GenerationRow]:
        rows = self._run(
            "SELECT dataset, generation, kind, status, started_at, finished_at, changed_records,"
            " changed_bytes, record_xxh3 FROM generations WHERE dataset=? ORDER BY generation",
            (dataset,),
        )
        return [GenerationRow(*r) for r in rows]

    def latest_generation(self, dataset: str) -> GenerationRow | None:
        rows = self.generations(dataset)
        return rows[-1] if rows else None

    def open_generation(self, dataset: str, generation: int, kind: str) -> GenerationRow:
        """Start `generation` unless it exists (a shard run of another process opened it)."""
        self._run(
            "INSERT OR IGNORE INTO generations (dataset, generation, kind, status, started_at)"
            " VALUES (?, ?, ?, 'open', ?)",
            (dataset, generation, kind, time.time()),
        )
        row = next(g for g in self.generations(dataset) if g.generation == generation)
        return row

    def restore_generation(
        self,
        dataset: str,
        generation: int,
        *,
        started_at: float,
        finished_at: float,
        changed_records: int,
        changed_bytes: int,
        record_xxh3: str,
    ) -> None:
        """A committed generation as its record at the destination tells it (state rebuild)."""
        self._run(
            "UPDATE generations SET status='committed', started_at=?, finished_at=?,"
            " changed_records=?, changed_bytes=?, record_xxh3=? WHERE dataset=? AND generation=?",
            (
                started_at,
                finished_at,
                changed_records,
                changed_bytes,
                record_xxh3,
                dataset,
                generation,
            ),
        )

    def commit_generation(
        self,
        dataset: str,
        generation: int,
        *,
        changed_records: int,
        changed_bytes: int,
        record_xxh3: str,
        finished_at: float,
    ) -> None:
        self._run(
            "UPDATE generations SET status='committed', finished_at=?, changed_records=?,"
            " changed_bytes=?, record_xxh3=? WHERE dataset=? AND generation=?",
            (finished_at, changed_records, changed_bytes, record_xxh3, dataset, generation),
        )

    def shard_progress(self, dataset: str, generation: int) -> list[ShardProgress]:
        """Every shard with a status, in shard order. A complete shard's totals were kept when
        it completed; only shards still open are summed from their chunks (an index seek
        each), so this stays fast at millions of chunks."""
        rows = self._run(
            "SELECT shard, status, chunks_n, records_n, plain_n, stored_n, manifest_key"
            " FROM shards WHERE dataset=? AND generation=? ORDER BY shard",
            (dataset, generation),
        ).fetchall()
        out = []
        for shard, status, n, r, p, st, mkey in rows:
            if status != ShardStatus.COMPLETE:
                n, r, p, st = self._run(
                    "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(plain_size), 0),"
                    " COALESCE(SUM(stored_size), 0) FROM chunks"
                    " WHERE dataset=? AND generation=? AND shard=?",
                    (dataset, generation, shard),
                ).fetchone()
            out.append(
                ShardProgress(dataset, generation, shard, ShardStatus(status), n, r, p, st, mkey)
            )
        return out

    # --- chunks ------------------------------------------------------------------------

    def commit_chunks(self, chunks: Iterable[CommittedChunk]) -> None:
        """One transaction for a batch: batching keeps commits cheap at millions of chunks."""
        now = time.time()
        rows = [
            (
                c.dataset,
                c.generation,
                c.object_key,
                c.shard,
                c.sequence,
                c.name,
                c.records,
                c.plain_size,
                c.stored_size,
                c.plain_xxh3,
                c.stored_xxh3,
                c.source_end,
                c.source_version,
                now,
            )
            for c in chunks
        ]
        if not rows:
            return
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO chunks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
                )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot commit chunks ({exc})") from None

    def has_chunks(self, dataset: str, generation: int) -> bool:
        row = self._run(
            "SELECT 1 FROM chunks WHERE dataset=? AND generation=? LIMIT 1", (dataset, generation)
        ).fetchone()
        return row is not None

    def chunk_count(self, dataset: str, generation: int, shard: int) -> int:
        row = self._run(
            "SELECT COUNT(*) FROM chunks WHERE dataset=? AND generation=? AND shard=?",
            (dataset, generation, shard),
        ).fetchone()
        return int(row[0])

    def committed_chunk(
        self, dataset: str, generation: int, object_key: str
    ) -> CommittedChunk | None:
        row = self._run(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks"
            " WHERE dataset=? AND generation=? AND object_key=?",
            (dataset, generation, object_key),
        ).fetchone()
        return None if row is None else CommittedChunk(*row)

    def shard_chunks(self, dataset: str, generation: int, shard: int) -> Iterator[CommittedChunk]:
        """In (name, sequence) order: records by sequence, object parts grouped by object."""
        cur = self._run(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE dataset=? AND generation=? AND shard=?"
            " ORDER BY COALESCE(name, ''), sequence",
            (dataset, generation, shard),
        )
        for row in cur:
            yield CommittedChunk(*row)

    # --- multipart upload journal ------------------------------------------------------

    def journaled_upload(self, object_key: str) -> UploadEntry | None:
        with self._lock:
            row = self._run(
                "SELECT object_key, upload_id, salt, plain_xxh3, stored_xxh3, stored_size"
                " FROM uploads WHERE object_key=?",
                (object_key,),
            ).fetchone()
        return None if row is None else UploadEntry(*row)

    def journal_upload(self, entry: UploadEntry) -> None:
        self._run(
            "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.object_key,
                entry.upload_id,
                entry.salt,
                entry.plain_xxh3,
                entry.stored_xxh3,
                entry.stored_size,
                time.time(),
            ),
        )

    def forget_upload(self, object_key: str) -> None:
        self._run("DELETE FROM uploads WHERE object_key=?", (object_key,))

    def journaled_uploads(self) -> list[UploadEntry]:
        with self._lock:
            rows = self._run(
                "SELECT object_key, upload_id, salt, plain_xxh3, stored_xxh3, stored_size"
                " FROM uploads ORDER BY object_key"
            ).fetchall()
        return [UploadEntry(*r) for r in rows]
