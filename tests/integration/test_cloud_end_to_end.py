"""The demo data through the CLI into S3 (moto) and Azure Blob (Azurite) on 127.0.0.1: run,
verify, restore and compare with the source, with the largest video going up in parts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient

from migrator.demo.motoserver import s3_client
from tests.planfiles import (
    AWS_TEST_ENV,
    azure_destination,
    azurite_env,
    check_demo_restores,
    run_cli,
    s3_destination,
    write_demo_site,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
# Parts of up to 12 MiB; stored chunks above 6 MiB go up in 5 MiB parts (S3's smallest).
PART_SIZE = "12MiB"
SIZES = "multipart_threshold: 6MiB, upload_part_size: 5MiB"
THRESHOLD = 6 * MiB
UPLOAD_PART = 5 * MiB


def make_site(root: Path, demo_data: Path, destination: str) -> Path:
    largest = max(p.stat().st_size for p in (demo_data / "videos").rglob("*") if p.is_file())
    assert THRESHOLD < largest <= 12 * MiB, "the demo data no longer has a multipart video"
    return write_demo_site(root, demo_data, destination, part_size=PART_SIZE)


def run_verify_restore(root: Path, env: dict[str, str]) -> None:
    done = run_cli("run", "plan.yaml", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    assert " 0 already done" in done.stdout, done.stdout
    checked = run_cli("verify", "plan.yaml", cwd=root, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verify OK" in checked.stdout
    check_demo_restores(root, env)
    again = run_cli("run", "plan.yaml", cwd=root, env=env)
    assert again.returncode == 0, again.stderr
    assert " 0 chunks written, " in again.stdout, again.stdout


def test_demo_data_into_s3(tmp_path: Path, demo_data: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    root = make_site(tmp_path / "site", demo_data, s3_destination(endpoint, bucket, sizes=SIZES))
    run_verify_restore(root, AWS_TEST_ENV)

    client = s3_client(endpoint)
    listed = [
        item
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="t/")
        for item in page.get("Contents", [])
    ]
    assert {item["Key"].split("/")[1] for item in listed} == {
        "user_profiles",
        "video_metadata",
        "videos",
    }
    big = [item for item in listed if item["Size"] > THRESHOLD]
    assert len(big) == 1 and big[0]["Key"].startswith("t/videos/")
    parts = -(-big[0]["Size"] // UPLOAD_PART)
    # A multipart upload's ETag ends in "-<number of parts>"; a single PUT's never does.
    assert big[0]["ETag"].strip('"').endswith(f"-{parts}")
    assert all("-" not in item["ETag"] for item in listed if item["Size"] <= THRESHOLD)
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []


@pytest.fixture
def container_client(azure_container: tuple[str, str, str]) -> Iterator[ContainerClient]:
    connection_string, name, _ = azure_container
    transport = RequestsTransport(use_env_settings=False)
    with ContainerClient.from_connection_string(
        connection_string, name, transport=transport
    ) as client:
        yield client


def test_demo_data_into_azure_blob(
    tmp_path: Path,
    demo_data: Path,
    azure_container: tuple[str, str, str],
    container_client: ContainerClient,
) -> None:
    _, name, blob_url = azure_container
    root = make_site(tmp_path / "site", demo_data, azure_destination(blob_url, name, sizes=SIZES))
    run_verify_restore(root, azurite_env(blob_url))

    listed = list(container_client.list_blobs(name_starts_with="t/"))
    assert {blob.name.split("/")[1] for blob in listed} == {
        "user_profiles",
        "video_metadata",
        "videos",
    }
    big = [blob for blob in listed if blob.size > THRESHOLD]
    assert len(big) == 1 and big[0].name.startswith("t/videos/")
    committed, uncommitted = container_client.get_blob_client(big[0].name).get_block_list("all")
    assert [block.size for block in committed] == [UPLOAD_PART, big[0].size - UPLOAD_PART]
    assert uncommitted == []
    small = next(blob for blob in listed if 0 < blob.size <= THRESHOLD)
    committed, _ = container_client.get_blob_client(small.name).get_block_list("committed")
    assert committed == []  # one Put Blob, no blocks
