"""The tests' private PostgreSQL on 127.0.0.1: the product's (migrator/demo/postgres.py), which
dry runs land tables into too. Kept so the fixtures and tests import it from one place."""

from __future__ import annotations

from migrator.demo.postgres import (
    SQLALCHEMY_SCHEME,
    PostgresServer,
    PostgresUnavailable,
    server_bindir,
    start_postgres,
)

__all__ = [
    "SQLALCHEMY_SCHEME",
    "PostgresServer",
    "PostgresUnavailable",
    "server_bindir",
    "start_postgres",
]
