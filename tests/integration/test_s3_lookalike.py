"""An S3 look-alike: moto behind a proxy on 127.0.0.1 that answers 501 NotImplemented to what
many S3-compatible servers lack (ListMultipartUploads, ListParts, the flexible checksum
headers). The store learns each lack once; a run completes, survives `kill -9` mid-multipart,
verifies and restores exactly; each lack is said once per process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from migrator.demo.motoserver import s3_client
from migrator.errors import StoreError, UnsupportedOperationError
from migrator.stores.s3 import S3Store
from tests.faultproxy import FaultProxy, Match, SeenRequest, matching, s3_error_xml
from tests.planfiles import AWS_TEST_ENV, files_below, s3_destination, write_objects, write_plan

pytestmark = [pytest.mark.integration]

HARNESS = Path(__file__).with_name("crash_harness.py")
NOT_IMPLEMENTED = s3_error_xml(
    "NotImplemented", "A header you provided implies functionality that is not implemented"
)
SIZES = "multipart_threshold: 40KiB, upload_part_size: 24KiB"
DATASETS = """\
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 2,
     part_size: 64KiB}
  - {name: clips, kind: objects, source: {kind: local, path: data/clips}, shards: 1,
     part_size: 64KiB}
"""
COMMAND_SECONDS = 60.0
# What each lack is said as, once per process.
NO_UPLOAD_LISTING = "cannot list unfinished multipart uploads"
NO_PART_LISTING = "cannot list the parts of a multipart upload"
NO_CHECKSUMS = "the server refused S3 checksum headers"

LIST_UPLOADS = matching("GET", query_param="uploads")
LIST_PARTS = matching("GET", query_param="uploadId")
UPLOAD_PART = matching("PUT", query_param="partNumber")
BEGIN_UPLOAD = matching("POST", query_param="uploads")
ABORT_UPLOAD = matching("DELETE", query_param="uploadId")


def carries_checksum(request: SeenRequest) -> bool:
    """Flexible checksum headers, in the request or announced for its trailer."""
    return any(
        name.startswith(("x-amz-checksum-", "x-amz-sdk-checksum-")) or name == "x-amz-trailer"
        for name in request.headers
    )


def lacking(proxy: FaultProxy, lacks: tuple[str, ...]) -> None:
    """Makes the proxy answer what the look-alike lacks with 501 NotImplemented."""
    rules: dict[str, list[Match]] = {
        "listings": [LIST_UPLOADS, LIST_PARTS],
        "checksums": [carries_checksum],
    }
    for lack in lacks:
        for match in rules[lack]:
            proxy.fail_every(status=501, body=NOT_IMPLEMENTED, match=match)


def refused(proxy: FaultProxy, match: Match) -> int:
    return sum(1 for kind, request in proxy.injected if kind == "fail" and match(request))


def seen(proxy: FaultProxy, match: Match) -> list[SeenRequest]:
    return [request for request in proxy.requests if match(request)]


def upload_id(request: SeenRequest) -> str:
    return parse_qs(request.query)["uploadId"][0]


# --- the store alone --------------------------------------------------------------------


@pytest.fixture
def store(s3_bucket: tuple[str, str], s3_proxy: FaultProxy, small_s3_parts: int) -> S3Store:
    _, bucket = s3_bucket
    return S3Store(
        bucket,
        "t",
        region="us-east-1",
        endpoint_url=s3_proxy.url,
        multipart_threshold=40 * 1024,
        part_size=small_s3_parts * 24,
        allow_small_parts=True,
    )


@pytest.mark.parametrize("status", [501, 405])
def test_listings_are_asked_once_then_refused_from_memory(
    store: S3Store, s3_proxy: FaultProxy, status: int
) -> None:
    code = "NotImplemented" if status == 501 else "MethodNotAllowed"
    for match in (LIST_UPLOADS, LIST_PARTS):
        s3_proxy.fail_every(status=status, body=s3_error_xml(code, "not here"), match=match)
    upload = store.begin_upload("obj", {})
    for attempt in range(3):
        with pytest.raises(UnsupportedOperationError) as listing:
            list(store.list_uploads("o"))
        with pytest.raises(UnsupportedOperationError) as parts:
            store.uploaded_parts("obj", upload)
        assert listing.value.newly_found is parts.value.newly_found is (attempt == 0)
        assert (listing.value.operation, parts.value.operation) == (
            "ListMultipartUploads",
            "ListParts",
        )
        assert store.describe() in str(listing.value) and listing.value.store == store.describe()
    assert len(seen(s3_proxy, LIST_UPLOADS)) == len(seen(s3_proxy, LIST_PARTS)) == 1
    store.abort_upload("obj", upload)  # what the store has is unaffected


def test_a_refused_abort_is_unsupported(store: S3Store, s3_proxy: FaultProxy) -> None:
    s3_proxy.fail_every(status=501, body=NOT_IMPLEMENTED, match=ABORT_UPLOAD)
    upload = store.begin_upload("obj", {})
    with pytest.raises(UnsupportedOperationError, match="AbortMultipartUpload") as first:
        store.abort_upload("obj", upload)
    with pytest.raises(UnsupportedOperationError) as second:
        store.abort_upload("obj", upload)
    assert first.value.newly_found and not second.value.newly_found
    assert len(seen(s3_proxy, ABORT_UPLOAD)) == 1


def test_a_get_answered_405_is_a_failure_not_a_lack(store: S3Store, s3_proxy: FaultProxy) -> None:
    store.put("obj", b"data")
    s3_proxy.fail_next(
        status=405, body=s3_error_xml("MethodNotAllowed", "delete marker"), match=matching("GET")
    )
    with pytest.raises(StoreError) as failed:
        store.get("obj")
    assert not isinstance(failed.value, UnsupportedOperationError)
    assert store.get("obj") == b"data"
    gets = seen(s3_proxy, matching("GET"))
    assert all("x-amz-checksum-mode" in request.headers for request in gets)  # still on


def test_refused_checksums_fall_back_once_to_content_md5(
    store: S3Store, s3_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "migrator.stores.s3")
    lacking(s3_proxy, ("checksums",))
    small, large = os.urandom(1000), os.urandom(100 * 1024)
    store.put("small", small)
    store.put("small-2", small)
    upload = store.begin_upload("large", {"k": "v"})
    size = store.part_size
    parts = [
        store.upload_part("large", upload, n, large[offset : offset + size])
        for n, offset in enumerate(range(0, len(large), size), start=1)
    ]
    store.complete_upload("large", upload, parts, {"k": "v"})
    assert (store.get("small"), store.get("small-2"), store.get("large")) == (small, small, large)

    assert refused(s3_proxy, carries_checksum) == 1  # the first put; then never again
    (warning,) = [r.getMessage() for r in caplog.records if NO_CHECKSUMS in r.getMessage()]
    assert store.describe() in warning and "put_object" in warning
    bodies = [r for r in s3_proxy.requests if r.method == "PUT" and r.body_size]
    assert len(bodies) == 2 + 1 + len(parts)  # the refused put and its retry, then the rest
    assert all("content-md5" in r.headers for r in bodies if not carries_checksum(r))
    assert all(p.checksum is None for p in parts)


def test_a_server_refusing_the_request_itself_keeps_checksums(
    store: S3Store, s3_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "migrator.stores.s3")
    s3_proxy.fail_next(2, status=501, body=NOT_IMPLEMENTED, match=matching("PUT"))
    with pytest.raises(StoreError, match="NotImplemented"):
        store.put("obj", b"data")  # refused with and without the checksum: a real failure
    store.put("obj", b"data")
    assert carries_checksum(s3_proxy.requests[-1])
    assert not [r for r in caplog.records if NO_CHECKSUMS in r.getMessage()]


# --- whole runs, killed and resumed -----------------------------------------------------


@dataclass
class Outcome:
    returncode: int | None
    output: str  # stdout and stderr

    def says(self, text: str) -> int:
        """How many warning lines say text."""
        return sum(
            1
            for line in self.output.splitlines()
            if line.startswith("migrator: warning:") and text in line
        )


class ForkServer:
    """`python -m migrator ARGS` in children of crash_harness.py (multipart parts of 24 KiB
    allowed), optionally SIGKILLed at a crash point."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.count = 0
        env = {**os.environ, **AWS_TEST_ENV, "NO_PROXY": "127.0.0.1,localhost", "COLUMNS": "160"}
        env.pop("MIGRATOR_WORKER_ID", None)
        env.pop("MIGRATOR_STATE_URL", None)
        self.stderr = (logs / "harness.err").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )

    def __call__(self, root: Path, *argv: str, crash: dict[str, Any] | None = None) -> Outcome:
        self.count += 1
        out = self.logs / f"{self.count:04d}.out"
        request = {
            "argv": list(argv),
            "cwd": str(root),
            "out": str(out),
            "marker": str(self.logs / f"{self.count:04d}.marker"),
            "crash": crash,
            "small_parts": True,
            "timeout": COMMAND_SECONDS,
        }
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the fork server died: {(self.logs / 'harness.err').read_text()[-2000:]}"
        answer = json.loads(line)
        return Outcome(answer["returncode"], out.read_text(errors="replace"))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.stderr.close()


@pytest.fixture(scope="module")
def migrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("commands"))
    try:
        yield server
    finally:
        server.close()


@dataclass
class Site:
    root: Path
    objects: dict[str, dict[str, bytes]]  # dataset → name → bytes

    def check_verified_and_restored(self, migrator: ForkServer) -> None:
        checked = migrator(self.root, "verify", "plan.yaml")
        assert checked.returncode == 0, checked.output[-3000:]
        for dataset, objects in self.objects.items():
            out = self.root / "restored" / dataset
            done = migrator(
                self.root, "restore", "plan.yaml", "--dataset", dataset, "--out", str(out)
            )
            assert done.returncode == 0, done.output[-3000:]
            assert files_below(out) == objects


def make_site(root: Path, proxy: FaultProxy, bucket: str, videos: list[int]) -> Site:
    """Two datasets (so each lack is met more than once per run); `videos` sizes decide which
    chunks go up in parts (a 64 KiB chunk is 3 parts of 24 KiB) and which in one put."""
    objects = {
        "videos": write_objects(root / "data" / "videos", videos),
        "clips": write_objects(root / "data" / "clips", [1, 2_000, 30_000], seed=5),
    }
    write_plan(
        root,
        datasets=DATASETS,
        destination=s3_destination(proxy.url, bucket, sizes=SIZES),
        extra="workers: 1\nupload_concurrency: 1",
    )
    return Site(root, objects)


def test_a_run_without_upload_listings_completes(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
    s3_proxy: FaultProxy,
    small_s3_parts: int,
    migrator: ForkServer,
) -> None:
    _, bucket = s3_bucket
    site = make_site(tmp_path, s3_proxy, bucket, [150_000, 65_536, 100])
    lacking(s3_proxy, ("listings",))
    done = migrator(tmp_path, "run", "plan.yaml")
    assert done.returncode == 0, done.output[-3000:]
    assert done.says(NO_UPLOAD_LISTING) == 1 and done.says(NO_PART_LISTING) == 0
    assert refused(s3_proxy, LIST_UPLOADS) == 1  # one per process, though asked per dataset
    assert len(seen(s3_proxy, BEGIN_UPLOAD)) == 3  # two 64 KiB chunks of one video, one other
    site.check_verified_and_restored(migrator)


@pytest.mark.parametrize("lacks", [("listings",), ("listings", "checksums")], ids="+".join)
def test_killed_mid_multipart_then_resumed(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
    s3_proxy: FaultProxy,
    small_s3_parts: int,
    migrator: ForkServer,
    lacks: tuple[str, ...],
) -> None:
    endpoint, bucket = s3_bucket
    # One chunk goes up in parts, so the kill leaves exactly one upload, journaled.
    site = make_site(tmp_path, s3_proxy, bucket, [65_536, 100, 5_000])
    lacking(s3_proxy, lacks)
    killed = migrator(tmp_path, "run", "plan.yaml", crash={"point": "upload-part:after", "hit": 2})
    assert killed.returncode == -9, killed.output[-3000:]
    moto = s3_client(endpoint)  # straight to moto, past the proxy
    (left,) = moto.list_multipart_uploads(Bucket=bucket)["Uploads"]
    key, old = left["Key"], left["UploadId"]
    held = moto.list_parts(Bucket=bucket, Key=key, UploadId=old).get("Parts", [])
    assert [part["PartNumber"] for part in held] == [1, 2]

    s3_proxy.clear_requests()
    resumed = migrator(tmp_path, "run", "plan.yaml")
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.says(NO_UPLOAD_LISTING) == 1 and resumed.says(NO_PART_LISTING) == 1
    assert resumed.says(NO_CHECKSUMS) == ("checksums" in lacks)
    assert refused(s3_proxy, LIST_UPLOADS) == refused(s3_proxy, LIST_PARTS) == 1
    # The journaled upload is aborted, never sent to again; the chunk went up anew, whole.
    assert [upload_id(r) for r in seen(s3_proxy, ABORT_UPLOAD)] == [old]
    parts = seen(s3_proxy, UPLOAD_PART)
    (new,) = {upload_id(r) for r in parts}
    assert new != old and len(parts) == 3
    assert len(seen(s3_proxy, BEGIN_UPLOAD)) == 1 + refused(s3_proxy, BEGIN_UPLOAD)
    assert moto.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert moto.head_object(Bucket=bucket, Key=key)["ContentLength"] > 40 * 1024

    site.check_verified_and_restored(migrator)
