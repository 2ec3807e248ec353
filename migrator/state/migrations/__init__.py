"""Alembic migrations of the state store; applied by `migrator.state.migrate.upgrade`."""
