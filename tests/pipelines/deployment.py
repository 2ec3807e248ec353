"""Dagster as a deployment runs it, for the tests that need the daemon: a code server for the
plan (`dagster code-server`), a workspace pointing at it, and `dagster-daemon run`, which
dequeues runs and launches each in a process of its own, and ticks the sensors."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dagster import DagsterInstance, DagsterRun

BIN = Path(sys.executable).parent
DAGSTER = str(BIN / "dagster")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_runs(
    instance: DagsterInstance,
    count: int,
    *,
    timeout: float = 240,
    also: Callable[[], bool] = lambda: True,
) -> list[DagsterRun]:
    """Once `count` runs exist and all are finished (and `also` holds): the runs."""
    deadline = time.monotonic() + timeout
    while True:
        runs = list(instance.get_runs())
        if len(runs) == count and all(r.is_finished for r in runs) and also():
            return runs
        assert time.monotonic() < deadline, [(r.job_name, r.status) for r in runs]
        time.sleep(1)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@contextlib.contextmanager
def code_server(root: Path) -> Iterator[int]:
    """`dagster code-server` for `-m pipelines` in root (MIGRATOR_* from the environment),
    and root/workspace.yaml naming it; yields its port."""
    port = free_port()
    server = subprocess.Popen(
        [DAGSTER, "code-server", "start", "-h", "127.0.0.1", "-p", str(port), "-m", "pipelines"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the code server did not start"
            time.sleep(0.3)
        location = f"{{host: localhost, port: {port}, location_name: 'grpc:localhost:{port}'}}"
        (root / "workspace.yaml").write_text(f"load_from:\n  - grpc_server: {location}\n")
        yield port
    finally:
        _stop(server)


@contextlib.contextmanager
def daemon(root: Path) -> Iterator[subprocess.Popen[str]]:
    """`dagster-daemon run` on root/workspace.yaml, stopped on leaving."""
    process = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        _stop(process)


def dagster_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`dagster ARGS` in root; never raises on failure."""
    return subprocess.run(
        [DAGSTER, *args], cwd=root, capture_output=True, text=True, timeout=180, check=False
    )
