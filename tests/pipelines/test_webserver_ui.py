"""End to end through the UI: `dagster dev -m pipelines` on 127.0.0.1, a shard partition launched
through the GraphQL API the UI itself uses, then the asset's page rendered in headless Chromium.

Chromium comes from scripts/ensure-chromium.sh (Debian's `chromium` package). A missing browser
or a webserver that cannot start fails the test with the reason: it is never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migrator.repository.names import manifest_key
from tests.pipelines import write_demo_shaped_plan

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 120.0
RUN_SECONDS = 180.0
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""
RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      stats { ... on RunStatsSnapshot { stepsSucceeded stepsFailed materializations } }
    }
  }
}"""
CHECK_VERDICTS = """
{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks {
    name executionForLatestMaterialization { status evaluation { partition } }
} } } } }"""
LOCATION_STATUS = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }"""


@dataclass
class DagsterDev:
    url: str
    log: Path
    site: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with NO_PROXY.open(request, timeout=30) as response:
            answer: dict[str, Any] = json.load(response)
        assert "errors" not in answer, answer["errors"]
        return answer["data"]  # type: ignore[no-any-return]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_loaded(dev: DagsterDev, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    state = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{dev.log_tail()}")
        try:
            entries = dev.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
        except (OSError, urllib.error.URLError) as exc:
            state = f"no answer ({exc})"
        else:
            (entry,) = entries
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                pytest.fail(f"code location {entry['name']} failed: {loaded['message']}")
            if entry["loadStatus"] == "LOADED" and loaded:
                return
            state = entry["loadStatus"]
        time.sleep(0.5)
    pytest.fail(f"dagster dev not ready after {START_SECONDS:.0f}s ({state}):\n{dev.log_tail()}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """dagster dev and its webserver, daemon and code servers share one process group."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_dagster_dev(
    tmp_path: Path, plan: Path, *, instance_yaml: str = "", env: dict[str, str] | None = None
) -> Iterator[DagsterDev]:
    """`dagster dev -m pipelines` on 127.0.0.1 for `plan` (its folder is the site), in the
    default deployment (dry run: stand-ins only), its log in tmp_path; stopped on exit."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + instance_yaml)
    environ = {**os.environ, "DAGSTER_HOME": str(home), "MIGRATOR_PLAN": str(plan), **(env or {})}
    environ["NO_PROXY"] = environ["no_proxy"] = "127.0.0.1,localhost"
    environ.pop("MIGRATOR_DEPLOYMENT", None)
    port = _free_port()
    dev = DagsterDev(f"http://127.0.0.1:{port}", tmp_path / "dagster-dev.log", plan.parent)
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-m", "pipelines", "-h", "127.0.0.1", "-p", str(port)]
    with dev.log.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_loaded(dev, process)
        yield dev
    finally:
        _stop_group(process)


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[DagsterDev]:
    with running_dagster_dev(tmp_path, write_demo_shaped_plan(tmp_path / "site")) as dev:
        yield dev


def _launch_partition(dev: DagsterDev, job: str, partition: str) -> str:
    params = {
        "selector": {
            "repositoryLocationName": "pipelines",
            "repositoryName": "__repository__",
            "jobName": job,
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
    }
    launched = dev.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id: str = launched["run"]["runId"]
    return run_id


def _wait_for_run(dev: DagsterDev, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        run: dict[str, Any] = dev.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]
        if run.get("status") in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        time.sleep(1.0)
    pytest.fail(f"run {run_id} not finished after {RUN_SECONDS:.0f}s:\n{dev.log_tail()}")


def chromium(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess[bytes]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
        "--virtual-time-budget=15000",
        *mode,
        url,
    ]
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium failed: {done.stderr.decode(errors='replace')[-2000:]}"
    return done


def png_colours(path: Path, *, every: int = 4) -> int:
    """Distinct colours in every `every`-th row and column of an 8-bit RGB(A) PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    pos, idat = 8, bytearray()
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6), f"unexpected PNG type {colour_type}"
            bpp = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    prior = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), prior, bpp)
        if y % every == 0:
            step = bpp * every
            colours.update(bytes(line[x : x + 3]) for x in range(0, stride, step))
        prior = line
    return len(colours)


def _unfilter(kind: int, line: bytearray, prior: bytearray, bpp: int) -> bytearray:
    if kind == 0:
        return line
    if kind == 2:
        return bytearray((a + b) & 0xFF for a, b in zip(line, prior, strict=True))
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prior[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        else:
            corner = prior[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            near = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + near) & 0xFF
    return line


def test_a_partition_launched_like_the_ui_does_shows_on_the_asset_page(
    dagster_dev: DagsterDev, tmp_path: Path
) -> None:
    dev = dagster_dev
    run_id = _launch_partition(dev, "full_migration_videos", "1")
    run = _wait_for_run(dev, run_id)

    assert run["status"] == "SUCCESS", f"run {run_id}: {run}\n{dev.log_tail()}"
    # The shard asset and its blocking checks, each a step; a failed check fails the run.
    assert run["stats"] == {"stepsSucceeded": 2, "stepsFailed": 0, "materializations": 1}
    stand_in = dev.site / "state" / "dagster-dry-run" / "dest"
    assert (stand_in / manifest_key("videos", 1, 1)).is_file()
    assert not (dev.site / "dest").exists()  # a dry-run deployment never writes the real one

    nodes = dev.graphql(CHECK_VERDICTS)["assetNodes"]
    (videos,) = [n for n in nodes if n["assetKey"]["path"] == ["test", "videos"]]
    verdicts = {
        check["name"]: check["executionForLatestMaterialization"]
        for check in videos["assetChecksOrError"]["checks"]
    }
    assert verdicts == {
        name: {"status": "SUCCEEDED", "evaluation": {"partition": "1"}}
        for name in ("manifests_authentic_and_complete", "sampled_readback_decrypts")
    }

    dev.graphql("mutation { setNuxSeen }")  # the first-visit newsletter dialog would cover all
    page = f"{dev.url}/assets/test/videos?view=partitions&partition=1"
    dom = chromium(page, tmp_path / "chromium", "--dump-dom").stdout.decode(errors="replace")
    for shown in ("chunks_written", "mb_per_s", "manifest.mgc", "full_migration_videos"):
        assert shown in dom, f"{shown} is not on the asset page"

    for name, url in (("asset", page), ("graph", f"{dev.url}/asset-groups")):
        shot = tmp_path / f"{name}.png"
        chromium(url, tmp_path / "chromium", f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000, f"{name} screenshot is too small to hold a page"
        assert png_colours(shot) > 16, f"{name} screenshot is blank"
