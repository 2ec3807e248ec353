"""A fork server for the crash matrix: runs `python -m migrator ARGS` in a forked child of a
process that has already imported migrator and its SDKs, and can make that child SIGKILL itself
at the N-th hit of a crash point.

No production hook: the child wraps the real functions (ChunkEncoder.encode, the stores' put,
delete and multipart calls, StateDB's commits) and calls os.kill(os.getpid(), SIGKILL) just
after writing a marker line. Forking from a warm process keeps each command well under a second,
so every boundary can get its own kill, resume, verify and restore.

Protocol: one JSON request a line on stdin, one JSON answer a line on stdout.
  request: {"argv": [...], "cwd": DIR, "env": {...}, "out": FILE, "marker": FILE,
            "crash": null | {"point": P, "hit": N, "dataset": D | null} | {"random": K}
                     | {"count": true}, "small_parts": bool, "timeout": SECONDS}
  answer:  {"pid": PID, "returncode": RC}  (RC < 0: killed by that signal; null: timed out)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import runpy
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

# What the commands import lazily: done once here, so that every forked child starts warm.
import migrator.cli
import migrator.cli.render.progress
import migrator.cli.render.run
import migrator.maintain.compact
import migrator.read.restore
import migrator.read.verify
import migrator.residency
import migrator.stores.s3
import migrator.wiring
import migrator.write.run
from migrator.codec.chunk import ChunkEncoder
from migrator.codec.identity import ChunkKind
from migrator.state.db import StateDB
from migrator.stores.local import LocalStore
from migrator.stores.s3 import S3Store

SMALL_PART_FLOOR = 1024  # what the tests' moto accepts (conftest.small_s3_parts)
_DATA_KINDS = (ChunkKind.RECORDS, ChunkKind.OBJECT_PART)


_GENERATION_FOLDER = re.compile(r"^[^/]+/g\d{6,}/s\d{5,}/")


def key_kind(key: str) -> str:
    """What a stored object is, from its key (docs/FORMAT.md §4)."""
    if _GENERATION_FOLDER.match(key):
        return "manifest" if key.endswith("/manifest.mgc") else "chunk"
    for folder, kind in (
        ("/_generations/", "generation"),
        ("/_keys/", "key"),
        ("/_deadletters/", "deadletter"),
    ):
        if folder in key:
            return kind
    return "other"


class Trigger:
    """Counts the hits of crash points and kills the process at the chosen one."""

    def __init__(self, spec: dict[str, Any], marker: str) -> None:
        self.point: str | None = spec.get("point")
        self.dataset: str | None = spec.get("dataset")
        self.kill_at: int = int(spec.get("hit") or spec.get("random") or 0)
        self.counting = bool(spec.get("count"))
        self.marker = marker
        self.hits = 0
        self.tally: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, point: str, detail: str) -> None:
        dataset = detail.split("/", 1)[0]
        if self.point is not None and point != self.point:
            return
        if self.dataset is not None and dataset != self.dataset:
            return
        with self.lock:
            self.hits += 1
            if self.counting:
                self.tally[f"{point} {dataset}"] += 1
                return
            if self.hits != self.kill_at:
                return
            with open(self.marker, "a") as fh:
                fh.write(f"KILL {point} {self.hits} {detail}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # never reached: SIGKILL cannot be caught

    def finish(self) -> None:
        if self.counting:
            with open(self.marker, "w") as fh:
                json.dump(dict(self.tally), fh)


def _wrap(owner: type, name: str, point: Callable[..., tuple[str, str] | None]) -> None:
    """owner.name fires `{p}:before` and `{p}:after` around the real call, where
    (p, detail) = point(*args) (None: this call is no crash point)."""
    real = getattr(owner, name)

    @functools.wraps(real)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        where = point(*args, **kwargs)
        if where is None:
            return real(*args, **kwargs)
        what, detail = where
        TRIGGER(f"{what}:before", detail)
        result = real(*args, **kwargs)
        TRIGGER(f"{what}:after", detail)
        return result

    setattr(owner, name, wrapper)


def _encode(_self: Any, _plain: Any, identity: Any, *_a: Any, **_k: Any) -> tuple[str, str] | None:
    if identity.kind not in _DATA_KINDS:
        return None  # manifests and generation records are sealed too: their puts are points
    where = f"{identity.dataset}/g{identity.generation:06d}/s{identity.shard:05d}"
    return "chunk-encode", f"{where} #{identity.sequence}"


def _on_key(verb: str) -> Callable[..., tuple[str, str]]:
    def point(_self: Any, key: str, *_a: Any, **_k: Any) -> tuple[str, str]:
        return f"{key_kind(key)}-{verb}", key

    return point


def _publish(self: LocalStore, _temp: Any, path: Any) -> tuple[str, str]:
    """The rename that makes a local write visible: before it, the data lies in a temporary."""
    rel = path.relative_to(self.root).as_posix()
    if rel.startswith(".meta/"):
        return "local-publish-meta", rel.removeprefix(".meta/").removesuffix(".json")
    return "local-publish", rel


def _upload(verb: str) -> Callable[..., tuple[str, str]]:
    def point(_self: Any, key: str, *args: Any, **_k: Any) -> tuple[str, str]:
        part = f" part {args[1]}" if verb == "part" else ""
        return f"upload-{verb}", key + part

    return point


def _commit_chunks(real: Callable[..., None]) -> Callable[..., None]:
    """commit_chunks is a point only for a batch that holds chunks (it is often called empty)."""

    @functools.wraps(real)
    def wrapper(self: StateDB, chunks: Any, *args: Any, **kwargs: Any) -> None:
        batch = list(chunks)
        if not batch:
            return real(self, batch, *args, **kwargs)
        first = batch[0]
        detail = f"{first.dataset}/g{first.generation:06d} {len(batch)} chunks"
        TRIGGER("commit-chunks:before", detail)
        real(self, batch, *args, **kwargs)
        TRIGGER("commit-chunks:after", detail)

    return wrapper


def _forget_chunks(
    _self: Any, dataset: str, generation: int, keys: Any, *_a: Any, **_k: Any
) -> tuple[str, str] | None:
    keys = list(keys)
    return ("forget-chunks", f"{dataset}/g{generation:06d} {keys[0]}") if keys else None


def _state(what: str) -> Callable[..., tuple[str, str]]:
    def point(_self: Any, dataset: str, generation: int, *args: Any, **_k: Any) -> tuple[str, str]:
        shard = f"/s{args[0]:05d}" if args and isinstance(args[0], int) else ""
        return what, f"{dataset}/g{generation:06d}{shard}"

    return point


def _forget_generations(
    _self: Any, dataset: str, shard: int, *_a: Any, **_k: Any
) -> tuple[str, str]:
    return "forget-generation", f"{dataset}/s{shard:05d}"


def _route(
    _self: Any, dataset: str, generation: int, cp: Any, *_a: Any, **_k: Any
) -> tuple[str, str]:
    return "route-checkpoint", f"{dataset}/g{generation:06d} complete={cp.complete}"


def _journal(_self: Any, entry: Any, *_a: Any, **_k: Any) -> tuple[str, str]:
    return "journal-upload", entry.object_key


def install_crash_points() -> None:
    _wrap(ChunkEncoder, "encode", _encode)
    for store in (LocalStore, S3Store):
        _wrap(store, "put", _on_key("put"))
        _wrap(store, "delete", _on_key("delete"))
    _wrap(LocalStore, "publish", _publish)
    for verb, method in (
        ("begin", "begin_upload"),
        ("part", "upload_part"),
        ("complete", "complete_upload"),
    ):
        _wrap(S3Store, method, _upload(verb))
    StateDB.commit_chunks = _commit_chunks(StateDB.commit_chunks)  # type: ignore[method-assign]
    _wrap(StateDB, "forget_chunks", _forget_chunks)
    _wrap(StateDB, "journal_upload", _journal)
    _wrap(StateDB, "save_route_checkpoint", _route)
    _wrap(StateDB, "open_generation", lambda _s, ds, *_a, **_k: ("open-generation", f"{ds}/g"))
    for method, what in (
        ("complete_shard", "complete-shard"),
        ("commit_generation", "commit-generation"),
    ):
        _wrap(StateDB, method, _state(what))
    # A compaction's sweep forgets the generations it deleted, shard by shard.
    _wrap(StateDB, "forget_shard_generations", _forget_generations)


TRIGGER: Trigger = Trigger({}, os.devnull)


def _child(request: dict[str, Any]) -> None:
    """The forked child: becomes `python -m migrator ARGV`, armed with crash points if asked."""
    global TRIGGER
    code = 98
    try:
        os.chdir(request["cwd"])
        os.environ.update(request.get("env") or {})
        fd = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if request.get("small_parts"):
            migrator.stores.s3.MIN_PART_SIZE = SMALL_PART_FLOOR
        crash = request.get("crash")
        if crash:
            TRIGGER = Trigger(crash, request["marker"])
            install_crash_points()
        sys.argv = ["migrator", *request["argv"]]
        try:
            runpy.run_module("migrator", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        TRIGGER.finish()
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _wait(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


def serve() -> None:
    while line := sys.stdin.readline():
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        rc = _wait(pid, float(request.get("timeout", 120)))
        sys.stdout.write(json.dumps({"pid": pid, "returncode": rc}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
