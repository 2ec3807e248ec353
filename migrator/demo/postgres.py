"""A private PostgreSQL server on 127.0.0.1 for dry runs and tests: nothing leaves the machine.

The server binaries come from Debian's `postgresql` package (scripts/ensure-postgres.sh installs
it); the cluster is made by initdb in a private temporary folder, with durability off (throwaway
data only), and removed when the server stops. PostgreSQL refuses to run as root, so under root
initdb and the postmaster run as the unprivileged `postgres` user the package creates. The
driver is psycopg2 (migrator's `postgres` extra).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator.demo.stopping import StopsOnExit

if TYPE_CHECKING:
    import psycopg2.extensions

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
START_ATTEMPTS = 3  # the free port can be taken between probing it and the postmaster binding it
SUPERUSER = "postgres"
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the project's driver is psycopg2.
SQLALCHEMY_SCHEME = "postgresql+psycopg2"
MAX_CONNECTIONS = 400  # Dagster and every worker process of the tests connect at once
# Accounts to run as when this process is root, best first.
UNPRIVILEGED_USERS = ("postgres", "nobody")
INSTALL_HINT = "run `bash scripts/ensure-postgres.sh`"
# What PostgreSQL's SQL identifiers may hold without quoting tricks: our own names only.
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PR_SET_PDEATHSIG = 1


class PostgresUnavailable(RuntimeError):
    """The server could not be found or started; the message says why and what to run."""


class PostgresServer(StopsOnExit):
    """A running private server; stop it with `stop()` or use it as a context manager."""

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path, port: int) -> None:
        self._process = process
        self.workdir = workdir  # data directory, socket and log; removed by stop()
        self.host = "127.0.0.1"
        self.port = port
        self.user = SUPERUSER
        self.base_url = f"{SQLALCHEMY_SCHEME}://{self.user}@{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    def url(self, db_name: str = "postgres") -> str:
        """The database's SQLAlchemy URL, naming the psycopg2 driver."""
        return f"{self.base_url}/{db_name}"

    def dsn(self, db_name: str = "postgres") -> str:
        """The database's libpq URI, for psycopg2.connect or psql."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{db_name}"

    def connect(self, db_name: str = "postgres") -> psycopg2.extensions.connection:
        return _driver().connect(
            host=self.host, port=self.port, user=self.user, dbname=db_name, connect_timeout=5
        )

    def create_database(self, name: str | None = None) -> str:
        """Creates an empty database (a unique name unless given); returns its URL."""
        name = name or f"test_{uuid.uuid4().hex}"
        _check_db_name(name)
        self._execute_autocommit(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops a database, ending whatever sessions are still connected to it."""
        _check_db_name(name)
        self._execute_autocommit(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _execute_autocommit(self, statement: str) -> None:
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            conn.close()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), else SIGKILL to the postmaster and its children; removes
        the folder."""
        clean = False
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                clean = self._process.wait(STOP_TIMEOUT_SECONDS) == 0
        if not clean:
            # Backends of a postmaster that died or hung: end them with it.
            _stop_process(self._process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def check_available() -> None:
    """Raises PostgresUnavailable, saying what to install, unless a server can be started
    here: the binaries, an account to run them as, the driver. Starts nothing."""
    server_bindir()
    _run_as()
    _driver()


def start_postgres(*, timeout: float = START_TIMEOUT_SECONDS) -> PostgresServer:
    """initdb into a temporary folder, then a postmaster on a free port of 127.0.0.1.

    Returns once the server accepts connections. Raises PostgresUnavailable with the reason
    (binaries or driver missing, initdb failed, early exit with its log, timeout).
    """
    bindir = server_bindir()
    account = _run_as()
    _driver()
    workdir = Path(tempfile.mkdtemp(prefix="pgserver-", dir=_temp_parent(account)))
    try:
        if account is not None:
            os.chown(workdir, account.pw_uid, account.pw_gid)
        _initdb(bindir, workdir, account)
        last_error: PostgresUnavailable | None = None
        for _ in range(START_ATTEMPTS):
            try:
                return _start_postmaster(bindir, workdir, account, timeout=timeout)
            except _PortTaken as exc:
                last_error = PostgresUnavailable(str(exc))
        assert last_error is not None
        raise last_error
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def server_bindir() -> Path:
    """The folder holding initdb and postgres: pg_config's, else the newest Debian version's."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0), reverse=True)
    candidates += [Path(p) for p in versions]
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "postgres")):
            return folder
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found via pg_config or in "
        f"/usr/lib/postgresql/*/bin: {INSTALL_HINT}"
    )


class _PortTaken(Exception):
    pass


def _driver() -> Any:
    try:
        import psycopg2
    except ImportError:
        raise PostgresUnavailable(
            "the PostgreSQL driver psycopg2 is not installed: install migrator with its"
            " `postgres` extra"
        ) from None
    return psycopg2


def _run_as() -> pwd.struct_passwd | None:
    """The account to run the server as when this process is root; None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable(
        "running as root and no unprivileged account to run PostgreSQL as "
        f"({', '.join(UNPRIVILEGED_USERS)}): {INSTALL_HINT}"
    )


def _temp_parent(account: pwd.struct_passwd | None) -> str | None:
    """Where to make the server's folder: the usual temp dir, unless `account` cannot reach it."""
    parent = Path(tempfile.gettempdir()).resolve()
    if account is None or all(p.stat().st_mode & 0o001 for p in [parent, *parent.parents]):
        return None
    return "/tmp"  # noqa: S108 - world-traversable; the folder made in it is 0700


def _initdb(bindir: Path, workdir: Path, account: pwd.struct_passwd | None) -> None:
    command = [
        str(bindir / "initdb"),
        *("-D", str(workdir / "data")),
        *("-U", SUPERUSER),
        "--auth=trust",  # only 127.0.0.1 and the private socket can reach it
        *("--encoding", "UTF8"),
        "--locale=C",
        "--no-sync",  # a throwaway cluster: skip flushing it to disk
    ]
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=120,
        check=False,
        **_as_account(account),
    )
    if result.returncode != 0:
        raise PostgresUnavailable(
            f"initdb failed with code {result.returncode}: {result.stderr.strip() or result.stdout}"
        )


def _start_postmaster(
    bindir: Path, workdir: Path, account: pwd.struct_passwd | None, *, timeout: float
) -> PostgresServer:
    port = _free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(workdir),
        "max_connections": str(MAX_CONNECTIONS),
        # Durability off: a crash loses throwaway data only, and commits stop waiting for disk.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "logging_collector": "off",
        "timezone": "UTC",
    }
    command = [str(bindir / "postgres"), "-D", str(workdir / "data")]
    for name, value in settings.items():
        command += ["-c", f"{name}={value}"]
    log_path = workdir / "postgres.log"
    with log_path.open("wb") as log:  # this attempt's output only
        # A session of its own: a Ctrl-C meant for the caller does not reach the server directly.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
            **_as_account(account),
        )
    server = PostgresServer(process, workdir, port)
    try:
        _wait_until_accepting(server, process, log_path, timeout=timeout)
    except BaseException:
        _stop_process(process)
        raise
    return server


def _wait_until_accepting(
    server: PostgresServer, process: subprocess.Popen[bytes], log_path: Path, *, timeout: float
) -> None:
    refused = _driver().OperationalError
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace").strip()
            if "could not bind" in log or "Address already in use" in log:
                raise _PortTaken(f"port {server.port} was taken: {log[-500:]}")
            raise PostgresUnavailable(
                f"postgres exited early with code {process.returncode}: {log or '(no output)'}"
            )
        try:
            server.connect().close()
            return
        except refused as exc:
            last_error = exc
            time.sleep(0.05)
    raise PostgresUnavailable(
        f"postgres on 127.0.0.1:{server.port} did not accept connections within "
        f"{timeout:.0f}s: {last_error}"
    )


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the postmaster and every process under it (each backend leads its own
    process group, so signalling the postmaster's group would miss them)."""
    children = _descendants(process.pid)
    for pid in [process.pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT_SECONDS)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from the kernel's process table (Linux's /proc)."""
    below: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat_fields(int(entry.name))):
            below.setdefault(int(stat[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in below.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stat_fields(pid: int) -> list[str]:
    """A process's state, parent and the rest (the fields after its command name, which may
    hold spaces and parentheses); [] once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rpartition(")")[2].split()


def _alive(pid: int) -> bool:
    """Still running: neither gone nor a zombie waiting for a parent that may never reap it."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def _as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess arguments running initdb or the postmaster as `account` (None: as ourselves)
    in its environment: under root, setgroups([]), setgid, setuid in the child, before exec."""
    if account is None:
        return {"env": _server_env(None)}
    ids = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    return {"env": _server_env(account), **ids}


def _server_env(account: pwd.struct_passwd | None) -> dict[str, str]:
    """A small environment: no PG* variables of ours leak in, a HOME the account can read."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    if account is not None:
        env["HOME"] = account.pw_dir
        env["USER"] = env["LOGNAME"] = account.pw_name
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGQUIT (immediate shutdown) the postmaster if we die.

    It runs after Popen's setuid (which would reset the setting); a hard-killed parent then
    leaves no server behind. None where prctl is not available.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    quit_signal = int(signal.SIGQUIT)

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, quit_signal, 0, 0, 0)

    return set_parent_death_signal


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check_db_name(name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"not a plain lower-case database name: {name!r}")
