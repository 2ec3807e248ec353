"""Azurite's Blob service on 127.0.0.1 for the tests and the dry run: nothing leaves the machine.

Azurite is the npm package pinned in the repository's package.json; `npm ci` (run by
`make setup`) installs it under node_modules/.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from migrator.demo.stopping import StopsOnExit
from migrator.errors import MigratorError

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0

# The emulator's fixed development account: the name and key are published in Azurite's docs.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_LISTENING = re.compile(r"successfully listens on (https?://\S+?):(\d+)")


class Azurite(StopsOnExit):
    """A running Azurite Blob service; stop it with `stop()` or use it as a context manager."""

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path, host: str, port: int):
        self._process = process
        self.workdir = workdir  # Azurite's data and logs; removed by stop()
        self.host = host
        self.port = port
        url_host = f"[{host}]" if ":" in host else host
        # Path-style URL: the emulator takes the account name from the first path segment.
        self.blob_url = f"http://{url_host}:{port}/{ACCOUNT_NAME}"
        self.connection_string = (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};BlobEndpoint={self.blob_url};"
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def stop(self) -> None:
        """Ends Azurite's whole process group, then removes its data folder."""
        if self._process.poll() is None:
            _signal_group(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(self._process.pid, signal.SIGKILL)
                self._process.wait(STOP_TIMEOUT_SECONDS)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_azurite(host: str = "127.0.0.1", *, timeout: float = START_TIMEOUT_SECONDS) -> Azurite:
    """Starts `azurite-blob` on a free port of `host`; returns once it accepts connections.

    Raises AzuriteUnavailable (a RuntimeError) with the reason: binary missing, early exit with
    its output, timeout.
    """
    binary = azurite_binary()
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    stdout_path, stderr_path = workdir / "stdout.log", workdir / "stderr.log"
    data_dir = workdir / "data"
    data_dir.mkdir()
    command = [
        str(binary),
        *("--blobHost", host),
        *("--blobPort", "0"),  # the OS picks the port; Azurite prints it, so no race for one
        *("--location", str(data_dir)),
        "--silent",  # no access log
        "--skipApiVersionCheck",  # the SDK may be newer than the emulator
        "--loose",  # ignore headers the emulator does not implement
        "--disableTelemetry",  # Azurite otherwise reports usage over the network
    ]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        # A session of its own: node may start children, and stop() ends the whole group.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=workdir,
            start_new_session=True,
        )
    azurite: Azurite | None = None
    try:
        deadline = time.monotonic() + timeout
        port = _wait_for_port(process, stdout_path, stderr_path, timeout=timeout)
        azurite = Azurite(process, workdir, host, port)
        _wait_until_accepting(host, port, deadline=deadline)
    except BaseException:
        if azurite is None:
            azurite = Azurite(process, workdir, host, 0)
        azurite.stop()
        raise
    return azurite


AZURITE_ENV = "MIGRATOR_AZURITE"  # the azurite-blob to run, wherever it is installed
_INSTALL = (
    "`npm install -g azurite` puts azurite-blob on PATH, or set MIGRATOR_AZURITE to the"
    " azurite-blob to run"
)


class AzuriteUnavailable(MigratorError, RuntimeError):
    """Azurite cannot be found or started: one line that says why and how to install it."""


def azurite_binary() -> Path:
    """The azurite-blob to run: MIGRATOR_AZURITE, else the source checkout's node_modules
    (`npm ci`), else one on PATH (a global npm install), else the working folder's
    node_modules: a pip-installed migrator finds Azurite wherever npm put it."""
    named = os.environ.get(AZURITE_ENV)
    if named:
        if not Path(named).is_file():
            raise AzuriteUnavailable(f"{AZURITE_ENV} names no file ({named}); {_INSTALL}")
        return Path(named)
    root = project_root()
    local = root / "node_modules" / ".bin" / "azurite-blob" if root is not None else None
    if local is not None and local.exists():
        return local
    on_path = shutil.which("azurite-blob")
    if on_path is not None:
        return Path(on_path)
    here = Path.cwd() / "node_modules" / ".bin" / "azurite-blob"
    if root is None and here.exists():  # `npm install azurite` where the plans are
        return here
    if local is not None and root is not None:
        raise AzuriteUnavailable(
            f"Azurite not installed ({local.relative_to(root)} is missing): run `npm ci` in"
            f" the project root (make setup does it); or {_INSTALL}"
        )
    raise AzuriteUnavailable(f"Azurite, the Azure Blob emulator, is not installed: {_INSTALL}")


def project_root() -> Path | None:
    """The source checkout holding this package: the nearest folder above with a package.json,
    where `npm ci` installs Azurite; None for an installed package."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "package.json").is_file():
            return folder
    return None


def _wait_for_port(
    process: subprocess.Popen[bytes], stdout_path: Path, stderr_path: Path, *, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _LISTENING.search(stdout_path.read_text(errors="replace"))
        if match:
            return int(match.group(2))
        if process.poll() is not None:
            output = (
                stderr_path.read_text(errors="replace").strip()
                or stdout_path.read_text(errors="replace").strip()
            )
            raise AzuriteUnavailable(
                f"Azurite exited early with code {process.returncode}: {output or '(no output)'}"
            )
        time.sleep(0.05)
    raise AzuriteUnavailable(f"Azurite did not report a listening port within {timeout:.0f}s")


def _wait_until_accepting(host: str, port: int, *, deadline: float) -> None:
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as exc:
            last_error = exc
            time.sleep(0.05)
    raise AzuriteUnavailable(f"Azurite on {host}:{port} did not accept connections: {last_error}")


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)  # the group id is Azurite's pid: it leads its own session
