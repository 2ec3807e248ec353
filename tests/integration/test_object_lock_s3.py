"""S3 Object Lock on the commit points (`destination.retention`), on moto's server (127.0.0.1).

Generation records and ledger segments are stored under retention: deleting a version of them
is refused; a plain DELETE only hides them behind a delete marker, which verify, audit and
restore then name as a rollback, and removing the marker undoes. Chunks and manifests are not
locked, so compaction still folds and deletes; the records it deletes stay as locked versions.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from migrator.demo.motoserver import MotoServer, s3_client
from tests.planfiles import (
    AWS_TEST_ENV,
    PROFILES,
    VIDEOS,
    run_cli,
    s3_destination,
    write_objects,
    write_plan,
    write_profiles,
)

pytestmark = pytest.mark.integration

RETENTION = "retention: {mode: governance, days: 1}"
RESIDENCY = "residency: {aws_partitions: [aws], allow_loopback: true}"  # moto on 127.0.0.1


@pytest.fixture
def locked_bucket(moto_server: MotoServer) -> tuple[str, str]:
    """A fresh bucket created with Object Lock enabled (hence versioned)."""
    bucket = f"lock-{uuid.uuid4().hex}"
    s3_client(moto_server.endpoint_url).create_bucket(
        Bucket=bucket, ObjectLockEnabledForBucket=True
    )
    return moto_server.endpoint_url, bucket


def make_site(root: Path, endpoint: str, bucket: str) -> Path:
    write_profiles(root / "data/profiles", 600)
    write_objects(root / "data/videos", [0, 1000, 70_000])
    write_plan(
        root,
        datasets=PROFILES + VIDEOS,
        destination=s3_destination(endpoint, bucket, sizes=RETENTION),
        extra=RESIDENCY,
    )
    return root


def cli(root: Path, *args: str) -> Any:
    return run_cli(*args, cwd=root, env=AWS_TEST_ENV)


def sync(root: Path, n: int) -> None:
    write_profiles(root / "data/profiles", 600 + 30 * n, seed=n + 7)
    (root / f"data/videos/new{n}.mp4").write_bytes(bytes([n]) * 9000)
    done = cli(root, "run", "plan.yaml")
    assert done.returncode == 0, done.stderr


def keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="t/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_commit_points_are_locked_and_deleting_them_is_refused(
    tmp_path: Path, locked_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = locked_bucket
    raw = s3_client(endpoint)
    root = make_site(tmp_path, endpoint, bucket)
    assert cli(root, "run", "plan.yaml").returncode == 0
    sync(root, 1)

    now = datetime.now(UTC)
    locked, unlocked = [], []
    for key in keys(raw, bucket):
        head = raw.head_object(Bucket=bucket, Key=key)
        if "/_generations/" in key or "/_ledger/" in key:
            assert head["ObjectLockMode"] == "GOVERNANCE", key
            until = head["ObjectLockRetainUntilDate"]
            assert now + timedelta(hours=23) < until < now + timedelta(days=1, hours=1), key
            locked.append(key)
        else:  # chunks, manifests, keys: compaction and rotation delete them
            assert "ObjectLockMode" not in head, key
            unlocked.append(key)
    assert any(k.endswith("profiles/_generations/g000002.mgc") for k in locked)
    assert any("/_ledger/" in k for k in locked) and any("/g000002/" in k for k in unlocked)

    record = "t/profiles/_generations/g000002.mgc"
    segment = max(k for k in locked if k.startswith("t/profiles/_ledger/s00000/"))
    for key in (record, segment):
        version = raw.head_object(Bucket=bucket, Key=key)["VersionId"]
        with pytest.raises(ClientError) as refused:
            raw.delete_object(Bucket=bucket, Key=key, VersionId=version)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        batch = raw.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": key, "VersionId": version}]}
        )
        assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"]
    assert cli(root, "verify", "plan.yaml").returncode == 0  # nothing was removed
    exported = cli(root, "audit", "plan.yaml", "--export-head", "head.json")
    assert exported.returncode == 0, exported.stdout + exported.stderr

    # A plain DELETE succeeds, as a delete marker: the locked version stays readable by id.
    version = raw.head_object(Bucket=bucket, Key=record)["VersionId"]
    marker = raw.delete_object(Bucket=bucket, Key=record)
    assert marker["DeleteMarker"] is True
    assert raw.get_object(Bucket=bucket, Key=record, VersionId=version)["Body"].read()
    message = (
        "rollback: dataset profiles: generation 2 is committed in the state store but the"
        " destination's newest generation record is 1"
    )
    checked = cli(root, "verify", "plan.yaml", "--json")
    assert checked.returncode == 1
    problems = json.loads(checked.stdout)["problems"]
    assert [(p["error"], p["object_key"]) for p in problems] == [
        ("RollbackError", "profiles/_generations/g000002.mgc")
    ]
    assert message in problems[0]["message"]
    against_head = cli(root, "verify", "plan.yaml", "--json", "--expect-head", "head.json")
    assert against_head.returncode == 1
    knowers = [
        p["message"].split(" is committed in ")[1].split(" but ")[0]
        for p in json.loads(against_head.stdout)["problems"]
    ]
    assert sorted(knowers) == ["the exported head head.json", "the state store"]
    audited = cli(root, "audit", "plan.yaml", "--json")
    assert audited.returncode == 1
    findings = [f for d in json.loads(audited.stdout)["datasets"] for f in d["findings"]]
    assert [f["kind"] for f in findings] == ["rollback"] and message in findings[0]["message"]
    refused_restore = cli(root, "restore", "plan.yaml", "--dataset", "profiles", "--out", "o")
    assert refused_restore.returncode == 4 and message in refused_restore.stderr

    # Removing the marker (markers are not locked) makes the retained version current again.
    raw.delete_object(Bucket=bucket, Key=record, VersionId=marker["VersionId"])
    assert cli(root, "verify", "plan.yaml").returncode == 0
    assert cli(root, "audit", "plan.yaml").returncode == 0
    restored = cli(root, "restore", "plan.yaml", "--dataset", "profiles", "--out", "o")
    assert restored.returncode == 0 and "(generation 2)" in restored.stdout, restored.stderr


def test_compaction_on_a_locked_bucket_folds_and_leaves_locked_records(
    tmp_path: Path, locked_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = locked_bucket
    raw = s3_client(endpoint)
    root = make_site(tmp_path, endpoint, bucket)
    assert cli(root, "run", "plan.yaml").returncode == 0
    sync(root, 1)
    sync(root, 2)
    compacted = cli(root, "compact", "plan.yaml")
    assert compacted.returncode == 0, compacted.stderr
    assert "locked noncurrent versions" in compacted.stdout
    left = keys(raw, bucket)
    assert [k for k in left if "profiles/_generations/" in k] == [
        "t/profiles/_generations/g000004.mgc"
    ]
    assert not any("/profiles/g000001/" in k for k in left)  # folded chunks are gone
    versions = raw.list_object_versions(Bucket=bucket, Prefix="t/profiles/_generations/g000001")
    (kept,) = versions["Versions"]
    assert kept["IsLatest"] is False and len(versions["DeleteMarkers"]) == 1
    assert (
        raw.head_object(Bucket=bucket, Key=kept["Key"], VersionId=kept["VersionId"])[
            "ObjectLockMode"
        ]
        == "GOVERNANCE"
    )
    assert cli(root, "verify", "plan.yaml").returncode == 0
    assert cli(root, "audit", "plan.yaml").returncode == 0
    assert cli(root, "restore", "plan.yaml", "--dataset", "videos", "--out", "o").returncode == 0


def test_retention_on_a_bucket_without_object_lock_is_refused_before_any_byte(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    root = make_site(tmp_path, endpoint, bucket)
    done = cli(root, "run", "plan.yaml")
    assert done.returncode == 2, done.stderr
    assert "destination.retention" in done.stderr and bucket in done.stderr
    assert "no Object Lock" in done.stderr
    assert keys(s3_client(endpoint), bucket) == []
