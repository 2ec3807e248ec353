"""Landing targets are checked like the destination, before any byte moves: a landing bucket's
region, endpoint, account and SSE-KMS key, and the host of a landing table's database, read
from its variable without ever showing the password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.errors import UsageError
from migrator.plan.model import Plan, load_plan
from migrator.residency import ResidencyCheck, ResidencyError, check_residency, enforce_residency
from migrator.stores.local import LocalStore
from migrator.wiring import landing_table_url, open_landing_store

GOV_KEY = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
COM_KEY = "arn:aws:kms:us-east-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
EAST_KEY = GOV_KEY.replace("us-gov-west-1", "us-gov-east-1")
GOV = {"aws_partitions": ["aws-us-gov"], "azure_clouds": ["AzureUSGovernment"]}
DB_HOST = "platform-db.cluster-c0example.us-gov-west-1.rds.amazonaws.com"
PASSWORD = "n0t-in-any-message"
VIDEOS = "datasets[videos].landing.bucket"
TABLE = "datasets[user_profiles].landing.table.url_env"
VARIABLE = "LANDING_DATABASE_URL"
ENVIRONMENT = (
    VARIABLE, "PGHOST", "PGHOSTADDR", "PGSERVICE", "MIGRATOR_STATE_URL",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KMS",
)  # fmt: skip


def bucket(**more: Any) -> dict[str, Any]:
    return {
        "kind": "s3",
        "bucket": "platform-videos",
        "region": "us-gov-west-1",
        "sse_kms_key_id": GOV_KEY,
        **more,
    }


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def plan(
    tmp_path: Path,
    videos: dict[str, Any] | None = None,
    *,
    residency: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
    **top: Any,
) -> Plan:
    """A GovCloud plan landing videos into `videos` and profiles into a table."""
    policy = {**GOV, "landing_hosts": [DB_HOST]} if residency is None else residency
    document = {
        "version": 1,
        "name": "landing",
        "state_dir": "state",
        **({"residency": policy} if policy else {}),
        **top,
        "keys": {"provider": "local", "kek_file": "kek.key"},
        "destination": destination
        or {"kind": "s3", "bucket": "archive", "prefix": "v1/", "region": "us-gov-west-1"},
        "datasets": [
            {
                "name": "user_profiles",
                "kind": "records",
                "format": "jsonl",
                "key": "user_id",
                "shards": 2,
                "source": {"kind": "local", "path": "profiles"},
                "landing": {"table": {"url_env": VARIABLE, "name": "app.user_profiles"}},
            },
            {
                "name": "videos",
                "kind": "objects",
                "shards": 2,
                "source": {"kind": "local", "path": "videos"},
                "landing": {"bucket": bucket() if videos is None else videos},
            },
        ],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_plan(path, check_sources=False)


def refused(checks: list[ResidencyCheck]) -> dict[str, str]:
    """Each refused field's reasons (a key may be refused for its partition and its region)."""
    reasons: dict[str, str] = {}
    for check in checks:
        if not check.allowed:
            reasons[check.field] = "; ".join(filter(None, [reasons.get(check.field), check.reason]))
    return reasons


def by_field(checks: list[ResidencyCheck]) -> dict[str, ResidencyCheck]:
    return {check.field: check for check in checks}


def database_url(host: str, port: str = "5432") -> str:
    return f"postgresql+psycopg2://lander:{PASSWORD}@{host}:{port}/platform"


# --- landing buckets ----------------------------------------------------------------------


def test_a_govcloud_landing_passes_with_every_field_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, database_url(DB_HOST))
    endpoint = "https://s3-fips.us-gov-west-1.amazonaws.com"
    checks = enforce_residency(plan(tmp_path, bucket(endpoint_url=endpoint)))
    seen = by_field(checks)
    assert seen[f"{VIDEOS}.region"].place == "aws-us-gov"
    assert seen[f"{VIDEOS}.endpoint_url"].place == "aws-us-gov"
    assert seen[f"{VIDEOS}.sse_kms_key_id"].value == GOV_KEY
    assert (seen[TABLE].value, seen[TABLE].allowed) == (DB_HOST, True)
    assert all(PASSWORD not in f"{c.value} {c.reason}" for c in checks)


@pytest.mark.parametrize(
    ("videos", "field", "why"),
    [
        (bucket(region="us-east-1", sse_kms_key_id=COM_KEY), "region", "partition aws is not"),
        (bucket(region="cn-north-1"), "region", "partition aws-cn is not"),
        (bucket(sse_kms_key_id=COM_KEY), "sse_kms_key_id", "partition aws is not"),
        (bucket(sse_kms_key_id=EAST_KEY), "sse_kms_key_id", "key is in us-gov-east-1"),
        (bucket(endpoint_url="https://s3.us-east-1.amazonaws.com"), "endpoint_url", "is not"),
        (bucket(endpoint_url="http://127.0.0.1:5000"), "endpoint_url", "--allow-loopback"),
        (
            {"kind": "azure", "bucket": "videos",
             "account_url": "https://platformmedia.blob.core.windows.net"},
            "account_url", "cloud AzureCloud is not",
        ),
        ({"kind": "local", "path": "landed"}, "path", "allowed only with --allow-loopback"),
    ],
    ids=["commercial", "china", "commercial key", "key elsewhere", "endpoint", "loopback",
         "azure public", "folder"],
)  # fmt: skip
def test_a_landing_bucket_outside_the_policy_is_refused(
    tmp_path: Path, videos: dict[str, Any], field: str, why: str
) -> None:
    p = plan(tmp_path, videos)
    assert why in refused(check_residency(p))[f"{VIDEOS}.{field}"]
    with pytest.raises(ResidencyError) as caught:
        enforce_residency(p)
    assert caught.value.field is not None and caught.value.field.startswith(VIDEOS)


def test_an_azure_government_container_passes(tmp_path: Path) -> None:
    container = {
        "kind": "azure",
        "bucket": "videos",
        "account_url": "https://platformmedia.blob.core.usgovcloudapi.net",
        "encryption_scope": "owner-cmk",
    }
    checks = by_field(check_residency(plan(tmp_path, container)))
    assert checks[f"{VIDEOS}.account_url"].place == "AzureUSGovernment"
    assert checks[f"{VIDEOS}.account_url"].allowed


def test_a_landing_connection_string_is_checked_like_the_destinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIA_CONNECTION", "AccountName=media;AccountKey=eA==")
    container = {
        "kind": "azure",
        "bucket": "videos",
        "account_url": "https://platformmedia.blob.core.usgovcloudapi.net",
        "connection_string_env": "MEDIA_CONNECTION",
    }
    reasons = refused(check_residency(plan(tmp_path, container)))
    field = f"{VIDEOS}.connection_string_env (MEDIA_CONNECTION: blob endpoint)"
    assert "cloud AzureCloud is not" in reasons[field]


def test_fips_required_reaches_landing_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("migrator.residency.fips.fips_gaps", lambda: [])
    checks = check_residency(plan(tmp_path, bucket(use_fips=False), fips="required"))
    assert "leave use_fips out" in refused(checks)[f"{VIDEOS}.use_fips"]


def test_a_cloud_landing_needs_a_policy_even_in_a_local_plan(tmp_path: Path) -> None:
    local = {"kind": "local", "path": "archive"}
    reasons = refused(check_residency(plan(tmp_path, residency={}, destination=local)))
    assert "an s3 landing bucket (datasets[videos].landing.bucket)" in reasons["residency"]


def test_a_local_plan_landing_locally_needs_no_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, database_url("127.0.0.1"))
    local = {"kind": "local", "path": "archive"}
    p = plan(tmp_path, {"kind": "local", "path": "landed"}, residency={}, destination=local)
    assert check_residency(p) == []


def test_allow_any_places_no_landing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, database_url("db.elsewhere.example"))
    p = plan(tmp_path, bucket(region="us-east-1", sse_kms_key_id=COM_KEY),
             residency={"allow_any": True})  # fmt: skip
    assert [(c.field, c.allowed) for c in check_residency(p)] == [("residency.allow_any", True)]


# --- landing tables -----------------------------------------------------------------------


def test_a_table_at_a_host_not_listed_is_refused_without_showing_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, database_url("db.commercial.example"))
    p = plan(tmp_path)
    checks = check_residency(p)
    assert "not in residency.landing_hosts" in refused(checks)[TABLE]
    assert by_field(checks)[TABLE].value == "db.commercial.example"
    with pytest.raises(ResidencyError) as caught:
        enforce_residency(p)
    assert caught.value.field == TABLE
    assert PASSWORD not in str(caught.value)
    assert all(PASSWORD not in f"{c.value} {c.reason}" for c in checks)


def test_a_remote_table_without_a_policy_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, database_url(DB_HOST))
    local = {"kind": "local", "path": "archive"}
    p = plan(tmp_path, {"kind": "local", "path": "landed"}, residency={}, destination=local)
    reasons = refused(check_residency(p))
    assert "a landing table (datasets[user_profiles].landing.table)" in reasons["residency"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_a_loopback_table_only_when_the_plan_allows_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv(VARIABLE, database_url(host))
    assert "--allow-loopback" in refused(check_residency(plan(tmp_path)))[TABLE]
    assert TABLE not in refused(check_residency(plan(tmp_path), allow_loopback=True))
    policy = {**GOV, "allow_loopback": True}
    assert TABLE not in refused(check_residency(plan(tmp_path, residency=policy)))


def test_a_local_socket_is_localhost_and_pghost_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VARIABLE, "postgresql:///platform")
    socket = by_field(check_residency(plan(tmp_path)))[f"{TABLE} ({VARIABLE} (a local socket))"]
    assert (socket.value, socket.place, socket.allowed) == ("localhost", "loopback", False)
    monkeypatch.setenv("PGHOST", "db.commercial.example")
    pghost = by_field(check_residency(plan(tmp_path)))[f"{TABLE} (PGHOST)"]
    assert (pghost.value, pghost.allowed) == ("db.commercial.example", False)


def test_every_host_of_the_url_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, database_url(DB_HOST) + "?host=db.commercial.example")
    reasons = refused(check_residency(plan(tmp_path)))
    assert list(reasons) == [f"{TABLE} ({VARIABLE} ?host=)"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sqlite:///landing.db", "is not a postgresql://"),
        (f"mysql://lander:{PASSWORD}@{DB_HOST}/platform", "is not a postgresql://"),
        (f"postgresql://lander:{PASSWORD}@{DB_HOST}:port/platform", "cannot be read"),
        (f"postgresql://lander:{PASSWORD}@/platform?service=landing", "pg_service"),
    ],
)
def test_a_url_that_cannot_be_placed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, why: str
) -> None:
    monkeypatch.setenv(VARIABLE, url)
    check = by_field(check_residency(plan(tmp_path)))[TABLE]
    assert not check.allowed and why in check.reason
    assert check.value == VARIABLE and PASSWORD not in check.reason


def test_an_unset_variable_waits_for_land_to_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = plan(tmp_path)
    check = by_field(enforce_residency(p))[TABLE]
    assert check.allowed and "is not set here" in check.reason
    table = p.dataset("user_profiles").landing
    assert table is not None and table.table is not None
    with pytest.raises(UsageError) as caught:
        landing_table_url(p, table.table)
    message = str(caught.value)
    assert "datasets[0].landing.table.url_env" in message
    assert VARIABLE in message and "'user_profiles'" in message
    monkeypatch.setenv(VARIABLE, database_url("db.commercial.example"))
    with pytest.raises(ResidencyError) as refusal:
        landing_table_url(p, table.table)
    assert refusal.value.field == TABLE and PASSWORD not in str(refusal.value)
    monkeypatch.setenv(VARIABLE, database_url(DB_HOST))
    assert landing_table_url(p, table.table) == database_url(DB_HOST)
    monkeypatch.setenv(VARIABLE, "mysql://db/platform")
    with pytest.raises(UsageError, match="must start with postgresql://"):
        landing_table_url(p, table.table)


# --- opening a landing bucket -------------------------------------------------------------


def test_a_landing_store_opens_only_once_the_checks_pass(tmp_path: Path) -> None:
    p = plan(tmp_path, bucket(region="us-east-1", sse_kms_key_id=COM_KEY))
    landing = p.dataset("videos").landing
    assert landing is not None and landing.bucket is not None
    with pytest.raises(ResidencyError):
        open_landing_store(p, landing.bucket)


def test_a_landing_store_keeps_the_owners_key(tmp_path: Path) -> None:
    from migrator.stores.s3 import S3Store

    p = plan(tmp_path, bucket(prefix="videos/"))
    landing = p.dataset("videos").landing
    assert landing is not None and landing.bucket is not None
    store = open_landing_store(p, landing.bucket)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.sse_kms_key_id) == (
        "platform-videos",
        "videos/",
        GOV_KEY,
    )


def test_an_azure_landing_store_writes_under_the_encryption_scope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import migrator.stores.azure

    opened: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> object:
        # The SDK's client asks `uname` for its user agent: a subprocess, not in this tier.
        opened.append((args, kwargs))
        return object()

    monkeypatch.setattr(migrator.stores.azure, "AzureBlobStore", record)
    monkeypatch.setenv("MEDIA_KEY", "a2V5")
    container = {
        "kind": "azure",
        "bucket": "videos",
        "account_url": "https://platformmedia.blob.core.usgovcloudapi.net",
        "account_key_env": "MEDIA_KEY",
        "encryption_scope": "owner-cmk",
    }
    p = plan(tmp_path, container)
    landing = p.dataset("videos").landing
    assert landing is not None and landing.bucket is not None
    open_landing_store(p, landing.bucket)
    [(args, kwargs)] = opened
    assert args == ("videos", "")
    assert (kwargs["encryption_scope"], kwargs["credential"]) == ("owner-cmk", "a2V5")


def test_a_local_landing_folder_is_its_path_and_prefix(tmp_path: Path) -> None:
    folder = {"kind": "local", "path": "landed", "prefix": "videos/"}
    p = plan(tmp_path, folder, residency={**GOV, "allow_loopback": True})
    landing = p.dataset("videos").landing
    assert landing is not None and landing.bucket is not None
    store = open_landing_store(p, landing.bucket)
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "landed" / "videos"


def test_botocore_endpoint_variables_are_checked_once_for_every_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.us-east-1.amazonaws.com")
    fields = [check.field for check in check_residency(plan(tmp_path))]
    assert fields.count("env AWS_ENDPOINT_URL_S3") == 1
    local = {"kind": "local", "path": "archive"}
    reasons = refused(check_residency(plan(tmp_path, destination=local)))
    assert "partition aws is not" in reasons["env AWS_ENDPOINT_URL_S3"]
