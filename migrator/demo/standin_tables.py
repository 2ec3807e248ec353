"""What stands in for a plan's landing tables in a dry run: a PostgreSQL on this machine (a
private one, started when first needed, or one given), or else per-shard files in a folder.
Never the database a table's `url_env` names."""

from __future__ import annotations

import contextlib
from pathlib import Path

from migrator.errors import UsageError
from migrator.plan.landing import LandingTablePlan
from migrator.plan.model import DatasetPlan, LocalDestinationPlan, Plan, StoreKind
from migrator.repository.names import dry_run_landing
from migrator.residency.environment import is_loopback_host, postgres_hosts

PRIVATE_DATABASE = "dry_run"  # the database made in the private PostgreSQL
TABLES_AS_FILES = "--tables-as-files"  # `migrator land --dry-run`'s way around PostgreSQL


def loopback_database(url: str) -> str:
    """A PostgreSQL given to stand in for landing tables: only one on this machine."""
    try:
        hosts = postgres_hosts(url, "the stand-ins' PostgreSQL URL")
    except ValueError as exc:
        raise UsageError(f"the stand-ins' PostgreSQL URL {exc}") from None
    far = sorted({h.host for h in hosts if not is_loopback_host(h.host)})
    if far:
        raise UsageError(
            f"the stand-ins' PostgreSQL must run on this machine (127.0.0.1), not at {far[0]}"
        )
    return url


def database_place(url: str) -> str:
    """Where a stand-in database is, without its user or password."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"PostgreSQL at {parsed.host or 'localhost'}{port}, database {parsed.database}"


def real_table(table: LandingTablePlan, dataset: str) -> str:
    """A landing table, as a dry run names what stood in for it."""
    return f"landing table {table.name} of {dataset} (the database in {table.url_env})"


def check_private_postgres() -> None:
    """UsageError, in one line, unless a private PostgreSQL can be started here."""
    from migrator.demo.postgres import PostgresUnavailable, check_available

    try:
        check_available()
    except PostgresUnavailable as exc:
        raise UsageError(_no_postgres(exc)) from None


def start_private_postgres(started: contextlib.ExitStack) -> str:
    """A private PostgreSQL on 127.0.0.1, stopped with `started`; its fresh database's URL."""
    from migrator.demo.postgres import PostgresUnavailable, start_postgres

    try:
        server = started.enter_context(start_postgres())
        return server.create_database(PRIVATE_DATABASE)
    except PostgresUnavailable as exc:
        raise UsageError(_no_postgres(exc)) from None


def tables_as_files(plan: Plan, workdir: Path, substitutions: list[str]) -> Plan:
    """The plan with no landing table: each one's records land as per-shard files instead, in
    the dataset's landing bucket, or a folder of the dry run's where it has none."""

    def as_files(ds: DatasetPlan) -> DatasetPlan:
        landing = ds.landing
        if landing is None or landing.table is None:
            return ds
        real = real_table(landing.table, ds.name)
        bucket = landing.bucket
        if bucket is None:
            folder = dry_run_landing(workdir, ds.name)
            bucket = LocalDestinationPlan(kind=StoreKind.LOCAL, path=folder)
            substitutions.append(f"{real} → its records as per-shard files in {folder}")
        else:
            substitutions.append(f"{real} → not landed: its records land as files only")
        update = {"landing": landing.model_copy(update={"table": None, "bucket": bucket})}
        return ds.model_copy(update=update)

    return plan.model_copy(update={"datasets": [as_files(ds) for ds in plan.datasets]})


def _no_postgres(exc: Exception) -> str:
    """One line: why no private PostgreSQL, and the two ways on."""
    why = " ".join(str(exc).split())
    return (
        "a dry run lands tables into a private PostgreSQL on 127.0.0.1, and none can start"
        f" here: {why} (or pass {TABLES_AS_FILES} to land their records as files)"
    )
