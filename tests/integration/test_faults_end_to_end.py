"""The whole CLI through a fault proxy in front of moto (and once Azurite): throttling, resets
and cut responses are retried to a good result; an outage ends the run with one clear line, and
the next run picks up where it stopped."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrator.demo.azurite import ACCOUNT_NAME, Azurite
from migrator.demo.motoserver import s3_client
from tests.faultproxy import FaultProxy, Match, SeenRequest, matching
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

PART_SIZE = "12MiB"
SIZES = "multipart_threshold: 6MiB, upload_part_size: 5MiB"
SERVICE_UNAVAILABLE_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>Service is unable to handle request.</Message>"
    b"<RequestId>faultproxy</RequestId></Error>"
)

is_part = matching("PUT", query_has="partNumber")


class FirstAttempts:
    """Wraps rule predicates so a fault hits only a request's first attempt: a retry of the
    same request (method, path and query) passes. Shared by rules, so no request is faulted
    twice and every fault costs one short backoff, not an ever longer one."""

    def __init__(self) -> None:
        self._faulted: set[tuple[str, str, str]] = set()

    def __call__(self, match: Match) -> Match:
        def first_attempt(request: SeenRequest) -> bool:
            key = (request.method, request.path, request.query)
            if key in self._faulted or not match(request):
                return False
            self._faulted.add(key)  # the proxy applies the rule of the first True
            return True

        return first_attempt


def is_single_put(request: SeenRequest) -> bool:
    return request.method == "PUT" and "partNumber" not in request.query


def is_chunk_get(request: SeenRequest) -> bool:
    """A GET of one stored object (not a listing), as verify and restore make them."""
    return request.method == "GET" and request.path.endswith(".mgc") and request.query == ""


def after_puts(n: int) -> Match:
    """Matches every request once n PUTs have gone by (the predicate of the only rule: it
    sees every request)."""
    puts = 0

    def match(request: SeenRequest) -> bool:
        nonlocal puts
        if puts >= n:
            return True
        puts += request.method == "PUT"
        return False

    return match


def injected(proxy: FaultProxy) -> Counter[str]:
    return Counter(kind for kind, _ in proxy.injected)


def run_ok(root: Path, env: dict[str, str]) -> str:
    done = run_cli("run", "plan.yaml", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def verify(root: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = run_cli("verify", "plan.yaml", "--json", cwd=root, env=env)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def verify_ok(root: Path, env: dict[str, str]) -> None:
    code, doc = verify(root, env)
    assert code == 0 and doc["problems"] == [], doc
    assert doc["chunks_checked"] == doc["chunks_listed"] > 0


@pytest.fixture
def s3_site(
    tmp_path: Path, demo_data: Path, s3_bucket: tuple[str, str], s3_proxy: FaultProxy
) -> Path:
    _, bucket = s3_bucket
    destination = s3_destination(s3_proxy.url, bucket, sizes=SIZES)
    return write_demo_site(tmp_path / "site", demo_data, destination, part_size=PART_SIZE)


# --- S3 -----------------------------------------------------------------------------------


def test_throttled_and_reset_puts_and_parts_are_retried(
    s3_site: Path, s3_proxy: FaultProxy
) -> None:
    # First match wins: the first three PUTs are throttled, then come the resets.
    first = FirstAttempts()
    s3_proxy.fail_next(3, match=first(matching("PUT")))
    s3_proxy.reset_next(2, match=first(is_single_put))
    s3_proxy.reset_next(2, match=first(is_part))

    out = run_ok(s3_site, AWS_TEST_ENV)
    assert " 0 already done" in out
    assert injected(s3_proxy) == {"fail": 3, "reset": 4}
    reset = [seen for kind, seen in s3_proxy.injected if kind == "reset"]
    assert sum(1 for seen in reset if is_part(seen)) == 2

    verify_ok(s3_site, AWS_TEST_ENV)
    check_demo_restores(s3_site, AWS_TEST_ENV)


def test_cut_responses_while_verifying_never_change_the_verdict(
    s3_site: Path, s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    run_ok(s3_site, AWS_TEST_ENV)

    # Good objects whose first reads are cut short: read again, found good.
    first = FirstAttempts()
    s3_proxy.cut_response_next(3, match=first(is_chunk_get))
    s3_proxy.cut_response_next(1, match=first(matching("GET", query_has="list-type")))
    verify_ok(s3_site, AWS_TEST_ENV)
    assert injected(s3_proxy) == {"cut": 4}

    # A damaged object whose first read is cut short: still found bad, and only it.
    client = s3_client(endpoint)
    victim = next(
        item["Key"]
        for item in client.list_objects_v2(Bucket=bucket, Prefix="t/video_metadata/")["Contents"]
        if "/r/" in item["Key"]
    )
    body = bytearray(client.get_object(Bucket=bucket, Key=victim)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=victim, Body=bytes(body))
    s3_proxy.clear_requests()
    first = FirstAttempts()
    s3_proxy.cut_response_next(1, match=first(matching("GET", path_has=victim)))
    s3_proxy.cut_response_next(2, match=first(is_chunk_get))
    code, doc = verify(s3_site, AWS_TEST_ENV)
    assert code == 1
    relative = victim.removeprefix("t/")
    assert [(p["object_key"], p["error"]) for p in doc["problems"]] == [(relative, "TamperedError")]
    assert doc["chunks_checked"] == doc["chunks_listed"]
    assert injected(s3_proxy) == {"cut": 3}


def test_an_outage_stops_the_run_with_one_line_and_the_next_run_resumes(
    s3_site: Path, s3_proxy: FaultProxy, s3_bucket: tuple[str, str]
) -> None:
    _, bucket = s3_bucket
    # Part way through (the first dataset stored), every request fails from then on, for
    # longer than any retries.
    s3_proxy.fail_next(1_000_000, body=SERVICE_UNAVAILABLE_XML, match=after_puts(12))
    failed = run_cli("run", "plan.yaml", cwd=s3_site, env=AWS_TEST_ENV)
    code, stderr = failed.returncode, failed.stderr
    assert code == 3, stderr
    assert "Traceback" not in stderr
    # Above it, only the progress bars' last state (stderr is no terminal here).
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert [line for line in lines if "migrator" in line or "rror" in line] == lines[-1:], stderr
    assert re.fullmatch(
        rf"migrator: error: s3://{bucket}/t/\S+: [a-z ]+ failed: ServiceUnavailable: .+",
        lines[-1],
    ), lines[-1]

    s3_proxy.clear_faults()
    out_text = run_ok(s3_site, AWS_TEST_ENV)
    done = re.search(r"(\d+) chunks written, (\d+) already done", out_text)
    assert done and int(done[2]) > 0, out_text
    verify_ok(s3_site, AWS_TEST_ENV)
    check_demo_restores(s3_site, AWS_TEST_ENV)


# --- Azure Blob ---------------------------------------------------------------------------


@pytest.fixture
def azurite_proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", azurite.port) as proxy:
        yield proxy
    assert proxy.errors == [], "the fault proxy itself failed"


def test_azure_server_busy_and_resets_are_retried(
    tmp_path: Path,
    demo_data: Path,
    azure_container: tuple[str, str, str],
    azurite_proxy: FaultProxy,
) -> None:
    _, name, _ = azure_container
    blob_url = f"{azurite_proxy.url}/{ACCOUNT_NAME}"
    env = azurite_env(blob_url)
    destination = azure_destination(blob_url, name, sizes=SIZES)
    root = write_demo_site(tmp_path / "site", demo_data, destination, part_size=PART_SIZE)
    first = FirstAttempts()
    azurite_proxy.fail_next(3, match=first(matching("PUT")))
    azurite_proxy.reset_next(2, match=first(lambda r: r.method == "PUT" and "comp=" not in r.query))
    azurite_proxy.reset_next(1, match=first(matching("PUT", query_has="comp=block&")))
    azurite_proxy.fail_next(1, match=first(matching("PUT", query_has="comp=blocklist")))

    out = run_ok(root, env)
    assert " 0 already done" in out
    assert injected(azurite_proxy) == {"fail": 4, "reset": 3}
    verify_ok(root, env)
    check_demo_restores(root, env)
