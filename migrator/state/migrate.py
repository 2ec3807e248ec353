"""Bring a state store to this release's schema: Alembic migrations, applied on open.

Many workers may open one PostgreSQL store at once: the first migrates under the store's lock
between processes (an advisory lock there), the others wait and find it done. A SQLite store
of the first releases (no version table, its `meta.schema` 2) is taken as the baseline and
moved on from there.

Alembic is imported only when the version table does not already read HEAD: a store at this
release's schema, as every open after the first finds it, opens without it (~60 ms of imports)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from sqlalchemy import Connection, Engine, column, inspect, select, table, text

from migrator.errors import StateError

VERSION_TABLE = "state_schema"
HEAD = "0005"
_BASELINE = "0001"
_LEGACY_SCHEMA = "2"  # what the first releases wrote into meta before migrations existed


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext  # only where a revision is unsure

    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def _at_head(conn: Connection) -> bool:
    """The version table holds HEAD and nothing else, read as Alembic reads it (anything else
    is left to `current_revision`, errors included)."""
    if not conn.dialect.has_table(conn, VERSION_TABLE, None):
        return False
    version = table(VERSION_TABLE, column("version_num"))
    return [row[0] for row in conn.execute(select(version.c.version_num))] == [HEAD]


def upgrade(
    engine: Engine, where: str, lock: Callable[[], contextlib.AbstractContextManager[None]]
) -> None:
    """Migrate the store at `where` (its file or URL, for messages) to HEAD, holding `lock`
    (the store's lock between processes) while migrating."""
    with engine.connect() as conn:
        if _at_head(conn):
            return
    from alembic import command  # a schema to create or upgrade: only now
    from alembic.config import Config
    from alembic.util.exc import CommandError

    with lock(), engine.connect() as conn:
        # Each migration is one transaction (on SQLite, too: BEGIN IMMEDIATE rather than
        # autocommit), so a kill halfway leaves the previous revision, never half of one.
        conn.execution_options(immediate=True)
        revision = current_revision(conn)
        conn.commit()
        if revision == HEAD:
            return
        config = Config()
        config.set_main_option("script_location", "migrator.state:migrations")
        config.attributes["connection"] = conn
        try:
            if revision is None and _is_legacy(conn, where):
                command.stamp(config, _BASELINE)
            command.upgrade(config, "head")
        except CommandError as exc:
            raise StateError(
                f"{where}: state schema {revision} is unknown to this release ({exc}); it was"
                " written by a newer release: run that release, or move the state aside and"
                " rebuild it with `migrator state rebuild`"
            ) from None
        conn.commit()


def _is_legacy(conn: Connection, where: str) -> bool:
    """A store of the first releases: tables and meta.schema, no version table."""
    if "meta" not in inspect(conn).get_table_names():
        return False
    row = conn.execute(text("SELECT value FROM meta WHERE key='schema'")).fetchone()
    conn.commit()
    if row is not None and str(row[0]) != _LEGACY_SCHEMA:
        raise StateError(
            f"{where}: state schema {row[0]} is older than this release can migrate; move it"
            " aside and rebuild it from the destination with `migrator state rebuild`"
        )
    return row is not None
