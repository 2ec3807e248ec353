"""The whole CLI against S3 served by moto on 127.0.0.1: run, verify, restore, detect damage."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from migrator.demo.motoserver import s3_client
from tests.planfiles import (
    METADATA,
    PROFILES,
    VIDEOS,
    files_below,
    restored_records,
    run_cli,
    write_metadata_csv,
    write_objects,
    write_plan,
    write_profiles,
)

pytestmark = pytest.mark.integration

# Dummy credentials, and no credential files: nothing but moto ever sees these requests.
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "no-such-aws-config",  # relative to the test's own folder
    "AWS_SHARED_CREDENTIALS_FILE": "no-such-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def verify(root: Path) -> tuple[int, dict[str, Any]]:
    done = run_cli("verify", "plan.yaml", "--json", cwd=root, env=ENV)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_run_verify_restore_and_detect_a_flipped_bit(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    records = write_profiles(tmp_path / "data/profiles", 1200)
    rows = write_metadata_csv(tmp_path / "data/metadata", 300)
    videos = write_objects(tmp_path / "data/videos", [0, 1, 70_000, 140_000, 5000])
    destination = (
        f"{{kind: s3, bucket: {bucket}, prefix: t/, region: us-east-1, endpoint_url: {endpoint}}}"
    )
    write_plan(tmp_path, datasets=PROFILES + METADATA + VIDEOS, destination=destination)

    done = run_cli("run", "plan.yaml", cwd=tmp_path, env=ENV)
    assert done.returncode == 0, done.stderr
    client = s3_client(endpoint)
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    assert keys and all(k.startswith("t/") for k in keys)
    assert "t/profiles/g000001/s00003/manifest.mgc" in keys
    assert "t/videos/_keys/datakey.json" in keys

    code, doc = verify(tmp_path)
    assert code == 0, doc
    assert doc["problems"] == [] and doc["chunks_checked"] == doc["chunks_listed"] > 0

    out = tmp_path / "restored"
    for name in ("profiles", "metadata", "videos"):
        got = run_cli(
            "restore", "plan.yaml", "--dataset", name, "--out", out / name, cwd=tmp_path, env=ENV
        )
        assert got.returncode == 0, got.stderr
    assert restored_records(out / "profiles") == Counter(records)
    assert restored_records(out / "metadata", csv_header=b"video_id,title,duration_s") == Counter(
        rows
    )
    assert files_below(out / "videos") == videos

    again = run_cli("run", "plan.yaml", cwd=tmp_path, env=ENV)
    assert again.returncode == 0, again.stderr
    assert " 0 chunks written, " in again.stdout

    # One bit flipped in one stored chunk, through the S3 API.
    victim = next(k for k in sorted(keys) if k.startswith("t/metadata/") and "/r/" in k)
    body = bytearray(client.get_object(Bucket=bucket, Key=victim)["Body"].read())
    body[len(body) // 2] ^= 0x10
    client.put_object(Bucket=bucket, Key=victim, Body=bytes(body))

    code, doc = verify(tmp_path)
    assert code == 1
    relative = victim.removeprefix("t/")
    assert [(p["object_key"], p["error"]) for p in doc["problems"]] == [(relative, "TamperedError")]
    assert doc["chunks_checked"] == doc["chunks_listed"]

    failed = run_cli(
        "restore", "plan.yaml", "--dataset", "metadata", "--out", "bad", cwd=tmp_path, env=ENV
    )
    assert failed.returncode == 4
    (line,) = failed.stderr.splitlines()
    assert line.startswith(f"migrator: error: {relative}: ")

    # A deleted chunk is missing, not an S3 error.
    gone = next(k for k in sorted(keys) if k.startswith("t/videos/") and "/o/" in k)
    client.delete_object(Bucket=bucket, Key=gone)
    code, doc = verify(tmp_path)
    assert code == 1
    assert (gone.removeprefix("t/"), "MissingObjectError") in [
        (p["object_key"], p["error"]) for p in doc["problems"]
    ]


def test_quick_verify_checks_with_head_only(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    write_profiles(tmp_path / "data/profiles", 400)
    write_objects(tmp_path / "data/videos", [70_000, 5000])
    destination = (
        f"{{kind: s3, bucket: {bucket}, prefix: t/, region: us-east-1, endpoint_url: {endpoint}}}"
    )
    write_plan(tmp_path, datasets=PROFILES + VIDEOS, destination=destination)
    assert run_cli("run", "plan.yaml", cwd=tmp_path, env=ENV).returncode == 0

    quick = run_cli("verify", "plan.yaml", "--quick", "--json", cwd=tmp_path, env=ENV)
    assert quick.returncode == 0, quick.stdout + quick.stderr
    report = json.loads(quick.stdout)
    assert report["chunks_checked"] == report["chunks_listed"] > 0

    client = s3_client(endpoint)
    chunks = sorted(
        o["Key"]
        for o in client.list_objects_v2(Bucket=bucket, Prefix="t/videos/")["Contents"]
        if "/o/" in o["Key"]
    )
    # Rewritten by something else: same size, but without the metadata it was stored with.
    body = client.get_object(Bucket=bucket, Key=chunks[0])["Body"].read()
    client.put_object(Bucket=bucket, Key=chunks[0], Body=bytes(len(body)))
    client.delete_object(Bucket=bucket, Key=chunks[1])
    quick = run_cli("verify", "plan.yaml", "--quick", "--json", cwd=tmp_path, env=ENV)
    assert quick.returncode == 1
    problems = {p["object_key"]: p["error"] for p in json.loads(quick.stdout)["problems"]}
    assert problems == {
        chunks[0].removeprefix("t/"): "TamperedError",
        chunks[1].removeprefix("t/"): "MissingObjectError",
    }
