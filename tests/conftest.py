from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from migrator.demo.azurite import Azurite, start_azurite
from migrator.demo.motoserver import MotoServer, s3_client, start_moto_server
from tests.faultproxy import FaultProxy

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from tests.pgserver import PostgresServer

# Tiers by what a test costs: `unit` needs no server and no subprocess (the whole tier runs in
# under two minutes on two cores); `e2e` runs the engine or the CLI end to end on local stores;
# `integration` starts real servers on 127.0.0.1; `pipelines` drives Dagster; `fuzz` searches.
_TIERS = ("unit", "e2e", "integration", "pipelines", "fuzz")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in _TIERS:
            item.add_marker(getattr(pytest.mark, tier))


# Dummy values so boto3 clients built without explicit credentials never look for real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with start_moto_server() as server:
        yield server


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> tuple[str, str]:
    """A fresh, empty bucket on the session's moto server: (endpoint_url, bucket_name)."""
    bucket = f"test-{uuid.uuid4().hex}"
    s3_client(moto_server.endpoint_url).create_bucket(Bucket=bucket)
    return moto_server.endpoint_url, bucket


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with start_azurite() as server:
        yield server


@pytest.fixture
def azure_container(azurite: Azurite) -> tuple[str, str, str]:
    """A fresh, empty container on the session's Azurite: (connection_string, name, blob_url)."""
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import ContainerClient

    name = f"test-{uuid.uuid4().hex}"
    # use_env_settings=False: a proxy from the environment must never see local test traffic.
    transport = RequestsTransport(use_env_settings=False)
    with ContainerClient.from_connection_string(
        azurite.connection_string, name, transport=transport
    ) as client:
        client.create_container()
    return azurite.connection_string, name, azurite.blob_url


@pytest.fixture
def s3_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injection proxy in front of the session's moto server: use `proxy.url`."""
    with FaultProxy.for_url(moto_server.endpoint_url) as proxy:
        yield proxy
    assert proxy.errors == [], "the fault proxy itself failed"


@pytest.fixture
def small_s3_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    """Lets moto complete uploads whose parts are under S3's 5 MiB floor; returns the new floor.

    moto reads S3_UPLOAD_PART_MIN_SIZE from the environment once, at import; its server runs in
    this process, so the value it checks is patched instead.
    """
    import moto.s3.models

    floor = 1024
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", floor)
    return floor


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`generate_demo_data` at 12 MiB, made once: its largest video is over 6 MiB."""
    from migrator.demo.synth import generate_demo_data

    data = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_data(data, 12 * 1024 * 1024)
    return data


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server on 127.0.0.1 for the session (tests/pgserver.py).

    Fails, never skips, when the server cannot be had: in CI its absence is a failure.
    """
    try:
        from tests.pgserver import start_postgres

        server = start_postgres()
    except Exception as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:  # failed outside the except block: the message alone, no chained traceback
        hint = "" if "ensure-postgres.sh" in reason else " (`bash scripts/ensure-postgres.sh`)"
        pytest.fail(f"PostgreSQL for the tests: {reason}{hint}", pytrace=False)
    with server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database, dropped afterwards; its SQLAlchemy URL:
    postgresql+psycopg2://USER@127.0.0.1:PORT/DBNAME."""
    name = f"test_{uuid.uuid4().hex}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)  # WITH (FORCE): connections left open do not block it


@pytest.fixture
def dagster_postgres_instance(
    postgres_server: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[DagsterInstance]:
    """A Dagster instance whose run, event-log and schedule storage are dagster_postgres on a
    fresh database, with its own DAGSTER_HOME (so run and step processes load the same one)."""
    from dagster import DagsterInstance

    from tests.pgserver import SQLALCHEMY_SCHEME

    home = tmp_path / "dagster_home"
    home.mkdir()
    postgres_db = {
        "hostname": postgres_server.host,
        "port": postgres_server.port,
        "username": postgres_server.user,
        "db_name": postgres_url.rsplit("/", 1)[1],
        "scheme": SQLALCHEMY_SCHEME,  # dagster_postgres builds its SQLAlchemy URL from it
    }
    storage = {"config": {"postgres_db": postgres_db}}
    config = {
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            **storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            **storage,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            **storage,
        },
        "telemetry": {"enabled": False},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()
