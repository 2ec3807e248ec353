"""SIGKILL `migrator run` in the middle of a multipart upload, run it again: only the parts the
cloud lacks are sent, into the same upload. S3 (moto) and Azure Blob (Azurite), each reached
through a fault proxy that slows part uploads down and counts them."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient

from migrator.demo.azurite import ACCOUNT_NAME, Azurite
from migrator.demo.motoserver import s3_client
from tests.faultproxy import FaultProxy, SeenRequest, matching
from tests.planfiles import (
    AWS_TEST_ENV,
    azure_destination,
    azurite_env,
    files_below,
    run_cli,
    s3_destination,
    write_objects,
    write_plan,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MiB = 1024 * 1024
OBJECT_SIZE = 30 * MiB - 200_000  # one chunk, stored in 6 parts of up to 5 MiB
UPLOAD_PART = 5 * MiB
SIZES = "multipart_threshold: 8MiB, upload_part_size: 5MiB"
PART_DELAY_SECONDS = 1.0  # each part upload held this long: time to kill between parts
SEEN_BEFORE_KILL = 4  # parts are sent one after another: 3 answered, the 4th held
DEADLINE_SECONDS = 60.0

DATASETS = """\
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 2,
     part_size: 32MiB}
"""


def make_site(root: Path, destination: str) -> dict[str, bytes]:
    objects = write_objects(root / "data" / "videos", [OBJECT_SIZE])
    write_plan(root, datasets=DATASETS, destination=destination, memory_budget="128MiB")
    return objects


def wait_for(condition: Callable[[], bool], what: str, deadline: float = DEADLINE_SECONDS) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def run_and_kill(root: Path, env: dict[str, str], parts_seen: Callable[[], int]) -> None:
    """Start `migrator run`; SIGKILL it once SEEN_BEFORE_KILL part uploads reached the proxy."""
    full_env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", **env}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "migrator", "run", "plan.yaml"],
            cwd=root,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            end = time.monotonic() + DEADLINE_SECONDS
            while parts_seen() < SEEN_BEFORE_KILL:
                if proc.poll() is not None:
                    log.seek(0)
                    stderr = log.read().decode(errors="replace")
                    pytest.fail(f"run ended ({proc.returncode}) before the kill: {stderr}")
                assert time.monotonic() < end, "the run never got to its 4th part"
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=DEADLINE_SECONDS) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def finish_verify_restore(root: Path, env: dict[str, str], objects: dict[str, bytes]) -> None:
    done = run_cli("run", "plan.yaml", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    checked = run_cli("verify", "plan.yaml", cwd=root, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    restored = run_cli(
        "restore", "plan.yaml", "--dataset", "videos", "--out", "restored", cwd=root, env=env
    )
    assert restored.returncode == 0, restored.stderr
    assert files_below(root / "restored") == objects


def part_number(request: SeenRequest) -> int:
    return int(parse_qs(request.query)["partNumber"][0])


# --- S3 ---------------------------------------------------------------------------------


def test_s3_resumes_a_killed_multipart_upload(
    tmp_path: Path, s3_bucket: tuple[str, str], s3_proxy: FaultProxy
) -> None:
    endpoint, bucket = s3_bucket
    objects = make_site(tmp_path, s3_destination(s3_proxy.url, bucket, sizes=SIZES))
    is_part = matching("PUT", query_has="partNumber")
    s3_proxy.delay(PART_DELAY_SECONDS, match=is_part)

    def parts_seen() -> int:
        return sum(1 for seen in s3_proxy.requests if is_part(seen))

    run_and_kill(tmp_path, AWS_TEST_ENV, parts_seen)
    seen = parts_seen()
    assert s3_proxy.count("POST", query_has="uploads") == 1

    # Straight to moto: the upload is there, with every part that reached it (a part held by
    # the proxy still arrives after the kill).
    client = s3_client(endpoint)
    (upload,) = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    key, upload_id = upload["Key"], upload["UploadId"]

    def listed_parts() -> list[int]:
        response = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
        return [part["PartNumber"] for part in response.get("Parts", [])]

    wait_for(lambda: len(listed_parts()) == seen, "the held part to reach moto", 10.0)
    before = listed_parts()
    assert before == list(range(1, seen + 1))

    s3_proxy.clear_faults()
    s3_proxy.clear_requests()
    finish_verify_restore(tmp_path, AWS_TEST_ENV, objects)

    head = client.head_object(Bucket=bucket, Key=key)
    total = -(-head["ContentLength"] // UPLOAD_PART)
    assert total == 6 and head["ETag"].strip('"').endswith(f"-{total}")
    # The rerun sent only the missing parts, into the same upload, and began no other upload.
    resent = [seen for seen in s3_proxy.requests if is_part(seen)]
    assert sorted(part_number(r) for r in resent) == list(range(len(before) + 1, total + 1))
    assert {parse_qs(r.query)["uploadId"][0] for r in resent} == {upload_id}
    assert s3_proxy.count("POST", query_has="uploads") == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# --- Azure Blob ---------------------------------------------------------------------------


@pytest.fixture
def azurite_proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", azurite.port) as proxy:
        yield proxy
    assert proxy.errors == [], "the fault proxy itself failed"


def block_name_of(request: SeenRequest) -> str:
    return base64.b64decode(parse_qs(request.query)["blockid"][0]).decode()


def test_azure_resumes_a_killed_block_upload(
    tmp_path: Path, azure_container: tuple[str, str, str], azurite_proxy: FaultProxy
) -> None:
    connection_string, name, _ = azure_container
    proxy_blob_url = f"{azurite_proxy.url}/{ACCOUNT_NAME}"
    env = azurite_env(proxy_blob_url)
    objects = make_site(tmp_path, azure_destination(proxy_blob_url, name, sizes=SIZES))
    is_block = matching("PUT", query_has="comp=block&")
    azurite_proxy.delay(PART_DELAY_SECONDS, match=is_block)

    def blocks_seen() -> list[SeenRequest]:
        return [seen for seen in azurite_proxy.requests if is_block(seen)]

    run_and_kill(tmp_path, env, lambda: len(blocks_seen()))
    staged_names = [block_name_of(r) for r in blocks_seen()]
    (blob_name,) = {r.path for r in blocks_seen()}
    assert azurite_proxy.count("PUT", query_has="comp=blocklist") == 0

    transport = RequestsTransport(use_env_settings=False)
    with ContainerClient.from_connection_string(
        connection_string, name, transport=transport
    ) as client:
        blob = client.get_blob_client(blob_name.split(f"/{name}/", 1)[1])

        def uncommitted() -> list[str]:
            return [block.id for block in blob.get_block_list("uncommitted")[1]]

        wait_for(lambda: len(uncommitted()) == len(staged_names), "the held block", 10.0)
        before = uncommitted()
        assert sorted(before) == sorted(staged_names)
        (upload_id,) = {block.rsplit("-", 1)[0] for block in before}

        azurite_proxy.clear_faults()
        azurite_proxy.clear_requests()
        finish_verify_restore(tmp_path, env, objects)

        committed, still_uncommitted = blob.get_block_list("all")
        total = -(-blob.get_blob_properties().size // UPLOAD_PART)
        assert total == 6
        assert [block.id for block in committed] == [
            f"{upload_id}-{n:06d}" for n in range(1, total + 1)
        ]
        assert still_uncommitted == []

    # The rerun staged only the missing blocks, of the same upload, and committed once.
    resent = sorted(block_name_of(r) for r in blocks_seen())
    assert resent == [f"{upload_id}-{n:06d}" for n in range(len(before) + 1, total + 1)]
    assert azurite_proxy.count("PUT", query_has="comp=blocklist") == 1
