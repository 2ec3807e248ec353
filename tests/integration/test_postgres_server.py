"""The session's private PostgreSQL (tests/pgserver.py) answers through SQLAlchemy and psycopg2,
gives each test its own database, and carries a Dagster instance whose runs execute their
steps in separate processes (multiprocess_executor), all of them writing to PostgreSQL."""

from __future__ import annotations

import os

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from tests.pgserver import PostgresServer

pytestmark = pytest.mark.integration

OPS = {"left", "right", "total"}


@dg.op
def left() -> int:
    return 20


@dg.op
def right() -> int:
    return 22


@dg.op
def total(a: int, b: int) -> int:
    return a + b


# At module level: the step processes import it again (dg.reconstructable) to run their op.
@dg.job(executor_def=dg.multiprocess_executor)
def sum_in_processes() -> None:
    total(left(), right())


def test_fresh_database_answers_through_sqlalchemy(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    assert postgres_url.startswith(f"{postgres_server.base_url}/")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert engine.dialect.driver == "psycopg2"
            assert conn.execute(sa.text("SELECT version()")).scalar_one().startswith("PostgreSQL")
            assert (
                conn.execute(sa.text("SELECT current_database()")).scalar_one()
                == (postgres_url.rsplit("/", 1)[1])
            )
            settings = dict(
                conn.execute(
                    sa.text(
                        "SELECT name, setting FROM pg_settings WHERE name IN "
                        "('fsync', 'listen_addresses', 'max_connections')"
                    )
                ).all()
            )
            tables = conn.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["fsync"] == "off"
    assert int(settings["max_connections"]) >= 300
    assert tables == 0


def test_each_postgres_url_is_its_own_database(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    other = postgres_server.create_database()
    try:
        assert other != postgres_url
        engine = sa.create_engine(postgres_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE only_here (id int)"))
        finally:
            engine.dispose()
        engine = sa.create_engine(other)
        try:
            with engine.connect() as conn:
                assert not sa.inspect(conn).has_table("only_here")
        finally:
            engine.dispose()
    finally:
        postgres_server.drop_database(other.rsplit("/", 1)[1])


@pytest.mark.slow
def test_multiprocess_job_runs_on_postgres_backed_dagster(
    dagster_postgres_instance: dg.DagsterInstance, postgres_url: str
) -> None:
    instance = dagster_postgres_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

    with dg.execute_job(dg.reconstructable(sum_in_processes), instance=instance) as result:
        assert result.success
        assert result.output_for_node("total") == 42
        run_id = result.run_id

    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    records = instance.get_records_for_run(run_id, limit=10_000).records
    events = [r.event_log_entry for r in records if r.event_log_entry.dagster_event]
    succeeded = {
        e.step_key for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS
    }
    assert succeeded == OPS
    started = [e for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_START]
    assert {e.step_key for e in started} == OPS
    step_pids = {e.dagster_event.pid for e in started if e.dagster_event}
    assert len(step_pids) == len(OPS) and os.getpid() not in step_pids  # one process per step
    assert any(e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS for e in events)

    # The rows are in this test's PostgreSQL database, not in a file under DAGSTER_HOME.
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(
                sa.text("SELECT count(*) FROM runs WHERE run_id = :id"), {"id": run_id}
            ).scalar_one()
            logged = conn.execute(
                sa.text("SELECT count(*) FROM event_logs WHERE run_id = :id"), {"id": run_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert runs == 1
    assert logged == len(records)
