"""A dataset's `landing` section: the shapes a plan may give it, and each refusal named at its
field, through the same YAML and loader users run."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.errors import PlanError
from migrator.plan.landing import LandingTablePlan
from migrator.plan.model import (
    AzureDestinationPlan,
    LocalDestinationPlan,
    S3DestinationPlan,
    load_plan,
)
from migrator.plan.schema import plan_json_schema

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
GOV_KEY = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
BLOB = "https://platformmedia.blob.core.usgovcloudapi.net"
Change = Callable[[dict[str, Any]], object]


def landing_bucket(**more: Any) -> dict[str, Any]:
    return {
        "kind": "s3",
        "bucket": "platform-videos",
        "prefix": "videos/",
        "region": "us-gov-west-1",
        "sse_kms_key_id": GOV_KEY,
        **more,
    }


def valid_plan() -> dict[str, Any]:
    return {
        "version": 1,
        "name": "landing",
        "state_dir": "state",
        "keys": {"provider": "local", "kek_file": "state/kek.key"},
        "destination": {
            "kind": "s3",
            "bucket": "archive",
            "prefix": "migration/v1/",
            "region": "us-gov-west-1",
        },
        "datasets": [
            {
                "name": "user_profiles",
                "kind": "records",
                "format": "jsonl",
                "key": "user_id",
                "shards": 4,
                "source": {"kind": "local", "path": "data/profiles"},
                "landing": {
                    "table": {"url_env": "LANDING_DATABASE_URL", "name": "app.user_profiles"},
                    "bucket": {"kind": "local", "path": "landed/profiles"},
                },
            },
            {
                "name": "videos",
                "kind": "objects",
                "shards": 2,
                "source": {"kind": "local", "path": "data/videos"},
                "landing": {"bucket": landing_bucket()},
            },
            {
                "name": "video_metadata",
                "kind": "records",
                "format": "csv",
                "key": "video_id",
                "shards": 2,
                "source": {"kind": "local", "path": "data/metadata"},
            },
        ],
    }


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(folder: Path, plan: dict[str, Any]) -> Any:
    (folder / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
    return load_plan("plan.yaml", check_sources=False)


def changed(change: Change) -> dict[str, Any]:
    plan = valid_plan()
    change(plan)
    return plan


def profiles(plan: dict[str, Any]) -> dict[str, Any]:
    landing: dict[str, Any] = plan["datasets"][0]["landing"]
    return landing


def videos(plan: dict[str, Any]) -> dict[str, Any]:
    landing: dict[str, Any] = plan["datasets"][1]["landing"]
    return landing


# --- the shapes a plan may give it --------------------------------------------------------


def test_the_landing_shapes_load(folder: Path) -> None:
    plan = load(folder, valid_plan())
    table_and_files = plan.dataset("user_profiles").landing
    assert table_and_files.table == LandingTablePlan.model_validate(
        {"url_env": "LANDING_DATABASE_URL", "name": "app.user_profiles", "json": "jsonb"}
    )
    assert table_and_files.table.json_as == "jsonb"  # the default for jsonl
    assert isinstance(table_and_files.bucket, LocalDestinationPlan)
    assert table_and_files.bucket.path == folder / "landed" / "profiles"
    bucket = plan.dataset("videos").landing.bucket
    assert isinstance(bucket, S3DestinationPlan)
    assert (bucket.bucket, bucket.prefix, bucket.sse_kms_key_id) == (
        "platform-videos",
        "videos/",
        GOV_KEY,
    )
    assert plan.dataset("video_metadata").landing is None


def test_json_text_a_csv_table_and_an_azure_container_with_a_scope(folder: Path) -> None:
    plan = valid_plan()
    profiles(plan)["table"]["json"] = "text"
    plan["datasets"][2]["landing"] = {"table": {"url_env": "DB", "name": "video_metadata"}}
    azure = {"kind": "azure", "bucket": "videos", "account_url": BLOB, "encryption_scope": "cmk-1"}
    videos(plan)["bucket"] = azure
    loaded = load(folder, plan)
    assert loaded.dataset("user_profiles").landing.table.json_as == "text"
    assert loaded.dataset("video_metadata").landing.table.name == "video_metadata"
    container = loaded.dataset("videos").landing.bucket
    assert isinstance(container, AzureDestinationPlan)
    assert container.encryption_scope == "cmk-1"


def test_the_destination_takes_an_encryption_scope_too(folder: Path) -> None:
    plan = valid_plan()
    plan["destination"] = {
        "kind": "azure",
        "bucket": "archive",
        "account_url": "https://platformarchive.blob.core.usgovcloudapi.net",
        "encryption_scope": "archive-scope",
    }
    destination = load(folder, plan).destination
    assert isinstance(destination, AzureDestinationPlan)
    assert destination.encryption_scope == "archive-scope"


def test_apart_from_the_archive_in_the_same_bucket_is_fine(folder: Path) -> None:
    plan = valid_plan()
    videos(plan)["bucket"].update(bucket="archive", prefix="landed/videos/")
    assert load(folder, plan).dataset("videos").landing.bucket.bucket == "archive"


def test_the_same_bucket_name_in_another_partition_is_another_bucket(folder: Path) -> None:
    plan = valid_plan()
    # Bucket names are unique within a partition: the old platform's commercial "videos"
    # bucket is not the GovCloud one of the same name.
    plan["datasets"][1]["source"] = {
        "kind": "s3",
        "bucket": "platform-videos",
        "region": "us-east-1",
    }
    assert load(folder, plan).dataset("videos").landing is not None


# --- refusals, each at its field ----------------------------------------------------------

REFUSED: list[tuple[str, Change, str, str]] = [
    ("neither bucket nor table", lambda p: profiles(p).clear(),
     "datasets[0].landing", "name a bucket, a table, or both"),
    ("s3 without sse_kms_key_id", lambda p: videos(p)["bucket"].pop("sse_kms_key_id"),
     "datasets[1].landing.bucket.sse_kms_key_id", "SSE-KMS with the owner's key"),
    ("retention in a landing bucket",
     lambda p: videos(p)["bucket"].update(retention={"mode": "compliance", "days": 30}),
     "datasets[1].landing.bucket.retention", "only the archive's commit points take retention"),
    ("a table for objects",
     lambda p: videos(p).update(table={"url_env": "DB", "name": "videos"}),
     "datasets[1].landing.table", "objects land only in a bucket"),
    ("json on a csv dataset",
     lambda p: p["datasets"][2].update(
         landing={"table": {"url_env": "DB", "name": "m", "json": "text"}}),
     "datasets[2].landing.table.json", "only used when format is 'jsonl'"),
    ("json neither jsonb nor text", lambda p: profiles(p)["table"].update(json="yes"),
     "datasets[0].landing.table.json", "must be 'jsonb' or 'text'"),
    ("url_env not a variable name", lambda p: profiles(p)["table"].update(url_env="postgresql://x"),
     "datasets[0].landing.table.url_env", "got 'postgresql://x'"),
    ("url_env missing", lambda p: profiles(p)["table"].pop("url_env"),
     "datasets[0].landing.table.url_env", "required"),
    ("table name not an identifier",
     lambda p: profiles(p)["table"].update(name="profiles; DROP TABLE x"),
     "datasets[0].landing.table.name", "must be a table name"),
    ("table name upper case", lambda p: profiles(p)["table"].update(name="App.Profiles"),
     "datasets[0].landing.table.name", "must be a table name"),
    ("table name three parts", lambda p: profiles(p)["table"].update(name="db.app.profiles"),
     "datasets[0].landing.table.name", "must be a table name"),
    ("table name too long", lambda p: profiles(p)["table"].update(name="t" * 41),
     "datasets[0].landing.table.name", "up to 40"),
    ("the checkpoint table", lambda p: profiles(p)["table"].update(name="app.migrator_landed"),
     "datasets[0].landing.table.name", "a name landing keeps for itself"),
    ("a duplicates table", lambda p: profiles(p)["table"].update(name="users_duplicates"),
     "datasets[0].landing.table.name", "a name landing keeps for itself"),
    ("unknown field near json", lambda p: profiles(p)["table"].update(jsn="text"),
     "datasets[0].landing.table.jsn", "did you mean 'json'?"),
    ("unknown landing field", lambda p: videos(p).update(buckets={}),
     "datasets[1].landing.buckets", "did you mean 'bucket'?"),
    ("bad encryption scope",
     lambda p: videos(p).update(bucket={"kind": "azure", "bucket": "videos", "account_url": BLOB,
                                        "encryption_scope": "Owner--Key"}),
     "datasets[1].landing.bucket.encryption_scope", "must be an encryption scope name"),
    ("encryption scope too short",
     lambda p: videos(p).update(bucket={"kind": "azure", "bucket": "videos", "account_url": BLOB,
                                        "encryption_scope": "ab"}),
     "datasets[1].landing.bucket.encryption_scope", "3-63"),
    ("encryption scope on s3", lambda p: videos(p)["bucket"].update(encryption_scope="cmk"),
     "datasets[1].landing.bucket.encryption_scope", "not used when kind is 's3'"),
    ("the archive's own prefix",
     lambda p: videos(p)["bucket"].update(bucket="archive", prefix="migration/v1/"),
     "datasets[1].landing.bucket.prefix", "plain data among the archive's encrypted chunks"),
    ("inside the archive's prefix",
     lambda p: videos(p)["bucket"].update(bucket="archive", prefix="migration/v1/landed"),
     "datasets[1].landing.bucket.prefix", "overlaps destination (s3 archive/migration/v1/)"),
    ("around the archive's prefix",
     lambda p: videos(p)["bucket"].update(bucket="archive", prefix=""),
     "datasets[1].landing.bucket.prefix", "overlaps destination"),
    ("the archive's folder",
     lambda p: (p.update(destination={"kind": "local", "path": "bucket", "prefix": "a/"}),
                videos(p).update(bucket={"kind": "local", "path": "bucket/a/landed"})),
     "datasets[1].landing.bucket.path", "overlaps destination"),
    ("the archive's container",
     lambda p: (p.update(destination={"kind": "azure", "bucket": "videos", "account_url": BLOB}),
                videos(p).update(bucket={"kind": "azure", "bucket": "videos",
                                         "account_url": BLOB + "/"})),
     "datasets[1].landing.bucket.prefix", "overlaps destination (azure videos/)"),
    ("a source folder", lambda p: profiles(p)["bucket"].update(path="data/profiles/landed"),
     "datasets[0].landing.bucket.path", "overlaps datasets[0].source"),
    ("a source bucket",
     lambda p: p["datasets"][2].update(source={"kind": "s3", "bucket": "platform-videos"}),
     "datasets[1].landing.bucket.prefix", "read landed data back as the source's"),
    ("another dataset's landing bucket",
     lambda p: p["datasets"][2].update(landing={"bucket": landing_bucket(prefix="videos/meta")}),
     "datasets[2].landing.bucket.prefix", "overlaps datasets[1].landing.bucket"),
    ("another dataset's table",
     lambda p: p["datasets"][2].update(landing={"table": profiles(p)["table"]}),
     "datasets[2].landing.table.name", "landed into by datasets[0].landing.table already"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused_at_its_field(folder: Path, change: Change, field: str, fragment: str) -> None:
    with pytest.raises(PlanError) as caught:
        load(folder, changed(change))
    message = str(caught.value)
    assert caught.value.field == field, message
    assert message.startswith(f"plan.yaml: {field}: "), message
    assert fragment in message


def test_every_landing_problem_is_listed(folder: Path) -> None:
    plan = valid_plan()
    videos(plan)["bucket"].pop("sse_kms_key_id")
    videos(plan)["bucket"]["retention"] = {"mode": "governance", "days": 1}
    profiles(plan)["table"]["name"] = "Bad"
    with pytest.raises(PlanError) as caught:
        load(folder, plan)
    fields = [line.split(": ")[1] for line in str(caught.value).splitlines()]
    assert fields == [
        "datasets[0].landing.table.name",
        "datasets[1].landing.bucket.retention",
        "datasets[1].landing.bucket.sse_kms_key_id",
    ]


# --- the JSON schema ----------------------------------------------------------------------


def test_the_schema_accepts_landing_and_flags_an_empty_one() -> None:
    import jsonschema  # in requirements.lock: a missing one fails, never skips

    schema = plan_json_schema()
    jsonschema.validate(valid_plan(), schema)
    bad: list[Change] = [
        lambda p: profiles(p).clear(),
        lambda p: profiles(p)["table"].update(name="Bad Name"),
        lambda p: profiles(p)["table"].update(json="xml"),
        lambda p: videos(p)["bucket"].update(kind="gcs"),
        lambda p: videos(p).update(bucket={"kind": "azure", "bucket": "videos",
                                           "account_url": BLOB, "encryption_scope": "-x-"}),
    ]  # fmt: skip
    for change in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(changed(change), schema)


@pytest.mark.parametrize("name", ["govcloud.yaml", "azure-government.yaml"])
def test_the_shipped_plans_land_every_dataset(name: str) -> None:
    import jsonschema

    document = yaml.safe_load((MANIFESTS / name).read_text(encoding="utf-8"))
    jsonschema.validate(document, plan_json_schema())
    plan = load_plan(MANIFESTS / name, check_sources=False)
    assert all(dataset.landing is not None for dataset in plan.datasets)
    assert plan.residency is not None and plan.residency.landing_hosts
    for dataset in plan.datasets:
        bucket = dataset.landing.bucket if dataset.landing else None
        if isinstance(bucket, S3DestinationPlan):
            assert bucket.sse_kms_key_id and bucket.sse_kms_key_id.startswith("arn:aws-us-gov:")
        if isinstance(bucket, AzureDestinationPlan):
            assert bucket.encryption_scope


def test_a_section_built_in_code_keeps_the_plans_word_for_json() -> None:
    table = LandingTablePlan.model_validate({"url_env": "DB", "name": "t", "json": "text"})
    assert table.json_as == "text"
    assert table.model_dump(by_alias=True)["json"] == "text"
    assert copy.deepcopy(table) == table
