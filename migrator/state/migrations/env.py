"""Alembic's entry point: migrations run on the connection `migrate.upgrade` hands over."""

from __future__ import annotations

from alembic import context

from migrator.state.migrate import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite alters tables by copying them: batch mode does that
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
