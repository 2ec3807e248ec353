"""Peer tools for bench.py, run on the same generated data as `migrator run`.

- restic (`restic backup` into a local repository) and rclone (`rclone copy` into a local crypt
  remote), from the Debian packages of the same names: found on PATH, or installed with
  apt-get when running as root.
- The AWS CLI, in a virtual environment of its own (never the project's: awscli pins botocore
  and would move boto3), for `aws s3 cp --recursive` of migrator's already-encrypted output.
- `migrator run` into S3 and `aws s3 cp` each upload into a fresh moto server on 127.0.0.1.

Finding or installing a tool never raises: a tool that cannot be had is a `Tool` without a
path and a reason, and its rows are skipped. The timing itself is timed_runs.py's (`Timer`),
so every row is measured the same way: wall clock and peak RSS of the child's process tree.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import psutil

APT_PACKAGES = ("restic", "rclone")
APT_TIMEOUT_S = 900.0
PIP_TIMEOUT_S = 900.0
QUICK_TIMEOUT_S = 60.0  # `--version`, `--help`, `restic init`, `rclone obscure`, `keys init`
PEER_TIMEOUT_S = 3600.0  # one timed backup, copy or upload
MOTO_START_TIMEOUT_S = 60.0
RCLONE_REMOTE = "benchcrypt"
MIGRATOR_BUCKET = "bench-migrator"
AWS_BUCKET = "bench-aws"
REGION = "us-east-1"

# Dummy credentials and no credential files: nothing but the local moto server sees requests.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}

# The moto server runs in a process of its own, so that its CPU time can be told apart from
# the uploader's and the benchmark's; it prints its URL and stops when its stdin closes.
MOTO_SCRIPT = """\
import sys
from migrator.demo.motoserver import start_moto_server
server = start_moto_server("127.0.0.1")
print(server.endpoint_url, flush=True)
sys.stdin.read()
server.stop()
"""


@dataclass
class Tool:
    name: str
    path: str | None = None  # None: not available, see missing_reason
    version: str = ""
    how: str = ""  # where it came from
    missing_reason: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. an option this version lacks
    options: list[str] = field(default_factory=list)  # passed to its timed command

    def describe(self) -> str:
        if self.path is None:
            return f"{self.name}: not installed ({self.missing_reason}); its rows are skipped"
        return f"{self.name}: {self.version} ({self.how})"


@dataclass
class Timed:
    exit_code: int
    wall_s: float
    peak_rss_bytes: int
    other_load_cpus: float  # CPUs busy with processes other than the child and the benchmark


class Timer(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        log: IO[bytes],
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Timed: ...


@dataclass
class PeerRun:
    tool: str  # "restic", "rclone crypt", "migrator", "aws s3 cp"
    kind: str  # a bench kind (datasets.py): the folder data/<kind>
    target: str  # "local" or "s3"
    counted: str  # "source" or "stored": the bytes that MB/s counts
    ok: bool
    exit_code: int
    wall_s: float
    source_bytes: int
    stored_bytes: int
    peak_rss_bytes: int
    other_load_cpus: float
    log: str  # file name, in the workdir's runs/peers folder
    note: str = ""

    @property
    def label(self) -> str:
        prefix = "s3 " if self.target == "s3" else ""
        return f"{prefix}{self.tool}({self.kind})"

    @property
    def mb_s(self) -> float:
        counted = self.source_bytes if self.counted == "source" else self.stored_bytes
        return counted / self.wall_s / 1e6 if self.ok and self.wall_s else 0.0

    @property
    def compression(self) -> float:
        return self.source_bytes / self.stored_bytes if self.stored_bytes else 0.0


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without proxies or any AWS, restic or rclone settings, plus `extra`."""
    dropped = ("AWS_", "RESTIC_", "RCLONE_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.upper().startswith(dropped)
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


# --- finding and installing ---------------------------------------------------------------


def _quiet(
    argv: Sequence[str],
    log: IO[bytes],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    secret_stdout: bool = False,
) -> tuple[str, str]:
    """Runs argv, appends its output to log (not stdout if secret); returns (error, stdout).

    error is "" on success.
    """
    log.write(f"$ {' '.join(argv)}\n".encode())
    log.flush()
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{Path(argv[0]).name} timed out after {timeout:.0f} s", ""
    except OSError as exc:
        return f"{Path(argv[0]).name}: {exc}", ""
    log.write((b"" if secret_stdout else done.stdout) + done.stderr)
    log.flush()
    out = done.stdout.decode(errors="replace")
    if done.returncode == 0:
        return "", out
    lines = [ln.strip() for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
    last = lines[-1] if lines else "no message"
    return f"{Path(argv[0]).name} exited with {done.returncode}: {last}", out


def _first_line(argv: Sequence[str]) -> str:
    """The first output line of a `--version`-like command, or "" if it does not run."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=QUICK_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0].strip() if done.returncode == 0 and text else ""


def _help_mentions(argv: Sequence[str], option: str) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=QUICK_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in (done.stdout + done.stderr).decode(errors="replace")


def _apt_install(packages: Sequence[str], log: IO[bytes]) -> str:
    """Installs the packages with apt-get; returns "" on success, else why not."""
    if os.geteuid() != 0:
        return f"not on PATH, and installing it needs root: apt-get install {' '.join(packages)}"
    apt = shutil.which("apt-get")
    if apt is None:
        return "not on PATH, and there is no apt-get to install it with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-qq", "--no-install-recommends", *packages]
    error, _ = _quiet(install, log, timeout=APT_TIMEOUT_S, env=env)
    if error:
        # Stale package lists are the usual reason: refresh them once and try again.
        update_error, _ = _quiet([apt, "update", "-qq"], log, timeout=APT_TIMEOUT_S, env=env)
        if update_error:
            return f"not on PATH; apt-get install failed ({error}), and so did apt-get update"
        error, _ = _quiet(install, log, timeout=APT_TIMEOUT_S, env=env)
    return f"not on PATH; apt-get install failed: {error}" if error else ""


def find_apt_tools(log: IO[bytes]) -> dict[str, Tool]:
    """restic and rclone from PATH, installing the missing ones with apt-get if possible."""
    missing = [name for name in APT_PACKAGES if shutil.which(name) is None]
    reason = _apt_install(missing, log) if missing else ""
    tools: dict[str, Tool] = {}
    for name in APT_PACKAGES:
        path = shutil.which(name)
        version = _first_line([path, "version"]) if path else ""
        if path is None or not version:
            why = reason or (
                f"`{name} version` does not run" if path else "apt-get did not put it on PATH"
            )
            tools[name] = Tool(name, missing_reason=why)
            continue
        how = "installed now with apt-get" if name in missing else f"found at {path}"
        tools[name] = Tool(name, path, version.split(" compiled ")[0], how)
    restic = tools["restic"]
    if restic.path is not None:
        if _help_mentions([restic.path, "backup", "--help"], "--compression"):
            restic.options = ["--compression", "auto"]
        else:
            restic.notes.append(
                "this restic has no --compression (it needs 0.14 or later): it backs up"
                " without compression"
            )
    return tools


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "migrator-bench"


def find_awscli(log: IO[bytes], venv_dir: Path | None = None) -> Tool:
    """The AWS CLI from a venv of its own (created and filled with pip on first use)."""
    venv_dir = venv_dir or cache_dir() / "awscli-venv"
    aws = venv_dir / "bin" / "aws"
    if aws.exists() and (version := _first_line([str(aws), "--version"])):
        return Tool("aws", str(aws), version.split(" ")[0], f"its own venv, {venv_dir}")
    shutil.rmtree(venv_dir, ignore_errors=True)
    error, _ = _quiet([sys.executable, "-m", "venv", str(venv_dir)], log, timeout=PIP_TIMEOUT_S)
    if error:
        return Tool("aws", missing_reason=f"cannot create a venv at {venv_dir}: {error}")
    pip = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "awscli"]
    error, _ = _quiet(pip, log, timeout=PIP_TIMEOUT_S)
    if error:
        return Tool("aws", missing_reason=f"pip install awscli into {venv_dir} failed: {error}")
    version = _first_line([str(aws), "--version"])
    if not version:
        return Tool("aws", missing_reason=f"{aws} was installed but does not run")
    return Tool(
        "aws", str(aws), version.split(" ")[0], f"installed now into its own venv, {venv_dir}"
    )


# --- restic and rclone --------------------------------------------------------------------


def _setup_failed(tool: str, kind: str, target: str, source: int, log: str, error: str) -> PeerRun:
    return PeerRun(tool, kind, target, "source", False, -1, 0.0, source, 0, 0, 0.0, log, error)


def run_restic(
    restic: Tool, timer: Timer, data: Path, kind: str, work: Path, logs: Path
) -> PeerRun:
    """`restic backup` of data/<kind> into a fresh local repository (compression auto)."""
    assert restic.path is not None
    repo = work / "restic" / kind
    shutil.rmtree(repo, ignore_errors=True)
    repo.parent.mkdir(parents=True, exist_ok=True)
    source = tree_bytes(data / kind)
    log_name = f"restic-{kind}.log"
    env = child_env(
        {
            "RESTIC_REPOSITORY": str(repo),
            "RESTIC_PASSWORD": secrets.token_urlsafe(24),  # throw-away, never shown
            "RESTIC_CACHE_DIR": str(work / "restic" / "cache"),
        }
    )
    init = [restic.path, "init"]
    if _help_mentions([restic.path, "init", "--help"], "--repository-version"):
        init += ["--repository-version", "2"]  # the format that compresses
    with (logs / log_name).open("wb") as log:
        error, _ = _quiet(init, log, timeout=QUICK_TIMEOUT_S, env=env)
        if error:
            return _setup_failed("restic", kind, "local", source, log_name, error)
        timed = timer(
            [restic.path, "backup", *restic.options, "--host", "bench", kind],
            cwd=data,
            log=log,
            env=env,
            timeout=PEER_TIMEOUT_S,
        )
    return PeerRun(
        "restic",
        kind,
        "local",
        "source",
        timed.exit_code == 0,
        timed.exit_code,
        timed.wall_s,
        source,
        tree_bytes(repo) if repo.exists() else 0,
        timed.peak_rss_bytes,
        timed.other_load_cpus,
        log_name,
        "" if restic.options else "without compression",
    )


def run_rclone(
    rclone: Tool, timer: Timer, data: Path, kind: str, work: Path, logs: Path
) -> PeerRun:
    """`rclone copy` of data/<kind> into a local crypt remote set up by environment only."""
    assert rclone.path is not None
    dest = work / "rclone" / kind
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    config = work / "rclone" / "rclone.conf"  # empty: the remote lives in the environment
    config.touch()
    source = tree_bytes(data / kind)
    log_name = f"rclone-{kind}.log"
    threads = os.cpu_count() or 1
    with (logs / log_name).open("wb") as log:
        password = secrets.token_urlsafe(24).encode()  # throw-away, never shown
        env = child_env({"RCLONE_CONFIG": str(config)})
        error, obscured = _quiet(
            [rclone.path, "obscure", "-"],
            log,
            timeout=QUICK_TIMEOUT_S,
            env=env,
            stdin=password,
            secret_stdout=True,
        )
        obscured = obscured.strip()
        if error or not obscured:
            return _setup_failed("rclone crypt", kind, "local", source, log_name, error)
        remote = f"RCLONE_CONFIG_{RCLONE_REMOTE.upper()}_"
        env.update(
            {remote + "TYPE": "crypt", remote + "REMOTE": str(dest), remote + "PASSWORD": obscured}
        )
        timed = timer(
            [rclone.path, "copy", kind, f"{RCLONE_REMOTE}:", "--transfers", str(threads)],
            cwd=data,
            log=log,
            env=env,
            timeout=PEER_TIMEOUT_S,
        )
    return PeerRun(
        "rclone crypt",
        kind,
        "local",
        "source",
        timed.exit_code == 0,
        timed.exit_code,
        timed.wall_s,
        source,
        tree_bytes(dest),
        timed.peak_rss_bytes,
        timed.other_load_cpus,
        log_name,
    )


# --- S3 on moto ---------------------------------------------------------------------------


class Moto:
    """A moto S3 server on 127.0.0.1 in a child process of its own."""

    def __init__(self, log: IO[bytes], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", MOTO_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=cwd,
            env=child_env(AWS_TEST_ENV),
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], MOTO_START_TIMEOUT_S)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"moto server did not start (see {Path(str(log.name)).name})")
        self.endpoint_url = line

    def cpu_seconds(self) -> float:
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def create_bucket(self, bucket: str) -> None:
        from migrator.demo.motoserver import s3_client

        s3_client(self.endpoint_url, REGION).create_bucket(Bucket=bucket)

    def bucket_usage(self, bucket: str) -> tuple[int, int]:
        """(objects, bytes) in the bucket."""
        from migrator.demo.motoserver import s3_client

        count = total = 0
        pages = s3_client(self.endpoint_url, REGION).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                count += 1
                total += item["Size"]
        return count, total

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def moto_server(log: IO[bytes], cwd: Path) -> Iterator[Moto]:
    moto = Moto(log, cwd)
    try:
        yield moto
    finally:
        moto.stop()


def s3_env(work: Path) -> dict[str, str]:
    return child_env(
        {
            **AWS_TEST_ENV,
            "AWS_CONFIG_FILE": str(work / "no-such-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-such-aws-credentials"),
        }
    )


def _timed_upload(
    moto: Moto, timer: Timer, argv: Sequence[str], cwd: Path, log: IO[bytes], env: dict[str, str]
) -> Timed:
    """Times argv; the moto server's CPU time is not "other load": it serves the upload."""
    moto_before = moto.cpu_seconds()
    timed = timer(argv, cwd=cwd, log=log, env=env, timeout=PEER_TIMEOUT_S)
    moto_cpus = (moto.cpu_seconds() - moto_before) / timed.wall_s if timed.wall_s else 0.0
    timed.other_load_cpus = max(0.0, timed.other_load_cpus - moto_cpus)
    return timed


def run_migrator_s3(
    timer: Timer,
    migrator: Sequence[str],
    plan_for: Callable[[str], str],
    kind: str,
    work: Path,
    logs: Path,
) -> PeerRun:
    """A fresh `migrator run` of the kind's plan into S3 on a fresh moto server.

    plan_for(destination) is the plan's YAML for a flow-style destination mapping; the run's
    folder is runs/s3-<kind>, as deep as runs/<kind>, so the same relative source path works.
    """
    run_dir = work / "runs" / f"s3-{kind}"
    shutil.rmtree(run_dir, ignore_errors=True)  # old state would make the run a no-op resume
    run_dir.mkdir(parents=True)
    source = tree_bytes(work / "data" / kind)
    log_name = f"migrator-s3-{kind}.log"
    env = s3_env(work)
    with (logs / log_name).open("wb") as log, moto_server(log, run_dir) as moto:
        moto.create_bucket(MIGRATOR_BUCKET)
        destination = (
            f"{{kind: s3, bucket: {MIGRATOR_BUCKET}, prefix: bench/, region: {REGION},"
            f" endpoint_url: '{moto.endpoint_url}'}}"
        )
        (run_dir / "plan.yaml").write_text(plan_for(destination), encoding="utf-8")
        error, _ = _quiet(
            [*migrator, "keys", "init", "kek.key"],
            log,
            timeout=QUICK_TIMEOUT_S,
            env=env,
            cwd=run_dir,
        )
        if error:
            return _setup_failed("migrator", kind, "s3", source, log_name, error)
        timed = _timed_upload(moto, timer, [*migrator, "run", "plan.yaml"], run_dir, log, env)
        _, stored = moto.bucket_usage(MIGRATOR_BUCKET)
    return PeerRun(
        "migrator",
        kind,
        "s3",
        "stored",
        timed.exit_code == 0,
        timed.exit_code,
        timed.wall_s,
        source,
        stored,
        timed.peak_rss_bytes,
        timed.other_load_cpus,
        log_name,
    )


def run_aws_cp(
    aws: Tool, timer: Timer, encrypted: Path, source: int, kind: str, work: Path, logs: Path
) -> PeerRun:
    """`aws s3 cp --recursive` of migrator's local output (already encrypted) into moto."""
    assert aws.path is not None
    log_name = f"aws-s3-cp-{kind}.log"
    local = tree_bytes(encrypted)
    local_count = sum(1 for p in encrypted.rglob("*") if p.is_file())
    with (logs / log_name).open("wb") as log, moto_server(log, work) as moto:
        moto.create_bucket(AWS_BUCKET)
        argv = [
            aws.path,
            "s3",
            "cp",
            "--recursive",
            "--only-show-errors",
            "--no-progress",
            str(encrypted),
            f"s3://{AWS_BUCKET}/",
            "--endpoint-url",
            moto.endpoint_url,
        ]
        timed = _timed_upload(moto, timer, argv, work, log, s3_env(work))
        count, stored = moto.bucket_usage(AWS_BUCKET)
    ok = timed.exit_code == 0 and (count, stored) == (local_count, local)
    note = "" if ok or timed.exit_code else f"uploaded {count} objects, {stored} of {local} bytes"
    return PeerRun(
        "aws s3 cp",
        kind,
        "s3",
        "stored",
        ok,
        timed.exit_code,
        timed.wall_s,
        source,
        stored,
        timed.peak_rss_bytes,
        timed.other_load_cpus,
        log_name,
        note,
    )
