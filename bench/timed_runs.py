"""Timing a child process the same way for every row: wall clock, peak RSS of its process tree,
and the CPU time other processes took meanwhile; and a fresh `migrator run` timed so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import peers
import psutil
from datasets import plan_yaml, tree_bytes

RSS_POLL_S = 0.02
OTHER_LOAD_WARN_CPUS = 0.25  # more CPUs busy with other processes makes a figure unreliable


@dataclass
class Run:
    ok: bool
    exit_code: int
    wall_s: float
    source_bytes: int
    dest_bytes: int
    peak_rss_bytes: int
    other_load_cpus: float  # CPUs busy with processes other than the run and this benchmark
    log: str  # file name of the log, in the workdir's runs folder

    @property
    def mb_s(self) -> float:
        return self.source_bytes / self.wall_s / 1e6 if self.wall_s else 0.0

    @property
    def compression(self) -> float:
        return self.source_bytes / self.dest_bytes if self.dest_bytes else 0.0


def run_migration(workdir: Path, kind: str, level: int) -> Run:
    """A fresh `migrator run` of a one-dataset plan: wall-clock time and peak RSS of its tree."""
    run_dir = workdir / "runs" / kind
    shutil.rmtree(run_dir, ignore_errors=True)  # old state would make the run a no-op resume
    run_dir.mkdir(parents=True)
    migrator = [sys.executable, "-m", "migrator"]
    (run_dir / "plan.yaml").write_text(plan_yaml(kind, level), encoding="utf-8")
    log_name = f"{kind}.log"
    with (run_dir.parent / log_name).open("wb") as log:
        keys = subprocess.run(
            [*migrator, "keys", "init", "kek.key"], cwd=run_dir, stdout=log, stderr=log
        )
        exit_code, peak, wall, other = keys.returncode, 0, 0.0, 0.0
        if exit_code == 0:
            timed = timed_child([*migrator, "run", "plan.yaml"], cwd=run_dir, log=log)
            exit_code, peak = timed.exit_code, timed.peak_rss_bytes
            wall, other = timed.wall_s, timed.other_load_cpus
    return Run(
        ok=exit_code == 0,
        exit_code=exit_code,
        wall_s=wall,
        source_bytes=tree_bytes(workdir / "data" / kind),
        dest_bytes=tree_bytes(run_dir / "dest") if (run_dir / "dest").exists() else 0,
        peak_rss_bytes=peak,
        other_load_cpus=other,
        log=log_name,
    )


def log_tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def own_cpu_seconds(*, with_children: bool = False) -> float:
    """CPU seconds of this process (and, if asked, of its children that have been waited for)."""
    times = os.times()
    children = times.children_user + times.children_system if with_children else 0.0
    return times.user + times.system + children


def busy_cpu_seconds() -> float:
    """Non-idle CPU seconds of the whole machine, all processes together."""
    times = psutil.cpu_times()._asdict()
    # idle and iowait are not work; Linux already counts guest time inside user time.
    not_busy = ("idle", "iowait", "guest", "guest_nice")
    return float(sum(value for name, value in times.items() if name not in not_busy))


def timed_child(
    argv: Sequence[str],
    *,
    cwd: Path,
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> peers.Timed:
    """Run argv (output to log): wall-clock time, peak RSS of its tree, and the other load.

    The other load is the machine's busy CPU time that is neither this process's nor its
    waited-for children's (the child and whatever it waited for), per wall second.
    """
    log.flush()
    ours_before = own_cpu_seconds(with_children=True)
    busy_before = busy_cpu_seconds()
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    own_before = own_cpu_seconds()
    exit_code, peak, tree_cpu = _wait_with_peak_rss(child, timeout)
    wall = time.perf_counter() - started
    # A run's worker processes may be reaped by none of its processes this one waits for
    # (multiprocessing's forkserver): their CPU time, as last seen, is the run's too.
    ours = max(
        own_cpu_seconds(with_children=True) - ours_before,
        own_cpu_seconds() - own_before + tree_cpu,
    )
    other = max(0.0, busy_cpu_seconds() - busy_before - ours) / wall
    return peers.Timed(exit_code, wall, peak, other)


def _wait_with_peak_rss(
    child: subprocess.Popen[bytes], timeout: float | None = None
) -> tuple[int, int, float]:
    """Poll the child's process tree (summed RSS) until it exits: the run's own peak, and the
    CPU seconds of every process of the tree as last seen.

    Not ru_maxrss: on Linux a child's maxrss starts from the parent's RSS at fork/exec time, so
    it would report this benchmark's memory (the in-memory chunks) instead of the run's.
    After `timeout` seconds the child and its descendants are killed.
    """
    parent = psutil.Process(child.pid)
    deadline = time.monotonic() + timeout if timeout is not None else None
    peak = 0
    cpu: dict[int, float] = {}
    while child.poll() is None:
        peak = max(peak, _tree_rss(parent, cpu))
        if deadline is not None and time.monotonic() > deadline:
            _kill_tree(parent)
            child.wait()
            break
        time.sleep(RSS_POLL_S)
    return child.returncode, peak, sum(cpu.values())


def _kill_tree(parent: psutil.Process) -> None:
    try:
        processes = [*parent.children(recursive=True), parent]
    except psutil.Error:
        processes = [parent]
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue


def _tree_rss(parent: psutil.Process, cpu: dict[int, float] | None = None) -> int:
    total = 0
    try:
        processes = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
            if cpu is not None:
                times = process.cpu_times()
                cpu[process.pid] = times.user + times.system
        except psutil.Error:
            continue  # exited between listing and sampling
    return total
