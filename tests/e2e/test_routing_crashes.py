"""kill -9 a `migrator run --worker` while it routes: between two files of a task, inside a
file (one shard's records of it on disk, no index), or with the file's output whole but its
index not written. Other workers take the task over (at once from a dead process of this
host, after the lease lapses from another machine's): every file is routed exactly once to
completion, the killed file again from its start, restore equals the source with no record
lost or doubled, and the generation commits. In a bulk and in a sync.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from migrator.plan.model import load_plan
from migrator.repository.names import routed_dir, routed_file_path
from migrator.wiring import open_key_provider, open_state, open_store
from migrator.write.run import MigrationRun
from tests.e2e.changing_source import DATASETS, TASK_FILES, Files, assert_whole
from tests.planfiles import write_plan

# `migrator run --worker` as a deployment runs it, with small routing tasks and a log of every
# file routed (START before its first byte is read, DONE once its index is written). With
# KILL_AT = N it kills itself (SIGKILL) at the N-th file it routes, at KILL_WHEN:
#   mid-file      one shard's records of the file written, the others not, no index
#   before-index  the file's records and digests complete and durable, its index not written
#   after-index   the file routed (its index written), its task not released
WORKER = """
import functools, os, signal, sys
import migrator.write.routed as routed
import migrator.write.routing as routing
from migrator.write.listing import build_table

routing.build_table = functools.partial(build_table, task_files=int(os.environ["TASK_FILES"]))
name = os.environ["WORKER_NAME"]
kill_at, when = int(os.environ.get("KILL_AT", "0")), os.environ.get("KILL_WHEN", "")
log = open("routing.log", "a", buffering=1)
routed_files = [0]

def die(what):
    log.write(f"{name} KILLED {what}\\n")
    os.kill(os.getpid(), signal.SIGKILL)

real_route_one = routing.Routing.route_one
def route_one(self, src, slot, runner, folder=None):
    routed_files[0] += 1
    log.write(f"{name} START {self.ds.name} g{self.gen} {slot} {src.name} {src.size}\\n")
    index = real_route_one(self, src, slot, runner, folder)
    log.write(f"{name} DONE {self.ds.name} g{self.gen} {slot} {src.name} {src.size}\\n")
    if routed_files[0] == kill_at and when == "after-index":
        die(src.name)
    return index
routing.Routing.route_one = route_one

real_flush = routed.RoutedFileWriter._flush
def flush(self, shard):
    real_flush(self, shard)
    if routed_files[0] == kill_at and when == "mid-file" and self.segments:
        self._rec.flush()  # what the first shard wrote reached the disk; the rest never will
        die(f"slot {self.position}")
routed.RoutedFileWriter._flush = flush

real_write = routed.write_private
def write_private(path, data):
    if routed_files[0] == kill_at and when == "before-index" and path.name.endswith(".index.tmp"):
        die(path.name)
    return real_write(path, data)
routed.write_private = write_private

from migrator.cli import main
main(["run", "plan.yaml", "--worker", "--claim", "1"])
"""


def start_worker(
    root: Path, name: str, *, kill_at: int = 0, when: str = "", named: bool = False
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TASK_FILES": str(TASK_FILES),
        "WORKER_NAME": name,
        "KILL_AT": str(kill_at),
        "KILL_WHEN": when,
    }
    env.pop("MIGRATOR_WORKER_ID", None)
    if named:  # a worker on another machine: its leases must lapse before another takes over
        env["MIGRATOR_WORKER_ID"] = name
    return subprocess.Popen(
        [sys.executable, "-c", WORKER],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def log_lines(root: Path) -> list[list[str]]:
    return [line.split(" ", 6) for line in (root / "routing.log").read_text().splitlines()]


CRASHES = {
    # (where it dies, the file it dies at, named workers: takeover after the lease lapses)
    "between-files": ("after-index", 3, False),
    "mid-file": ("mid-file", 4, False),
    "before-index": ("before-index", 4, False),
    "before-index-on-another-machine": ("before-index", 3, True),
}


@pytest.mark.parametrize("case", sorted(CRASHES))
@pytest.mark.parametrize("generation", [1, 2], ids=["bulk", "sync"])
def test_a_worker_killed_while_routing_loses_and_doubles_nothing(
    tmp_path: Path, case: str, generation: int
) -> None:
    when, kill_at, named = CRASHES[case]
    files = Files(tmp_path, seed=generation)
    files.seed(profile_files=10, row_files=4, per_file=40)
    files.write()
    # Short leases: a named worker's lapse comes soon, and waiting workers look again often.
    plan = load_plan(write_plan(tmp_path, datasets=DATASETS, extra="lease_seconds: 2"))
    if generation == 2:  # the bulk first, then a sync of several changed files is killed
        opened = time.time()
        with open_state(plan) as state:
            MigrationRun(plan, open_store(plan), open_key_provider(plan), state).run()
        # A worker knows when its process started to about a second (the kernel's boot time
        # comes in whole seconds): one started sooner after the bulk opened would take the
        # committed bulk for its own cohort's generation, and sync nothing.
        time.sleep(max(0.0, opened + 1.1 - time.time()))
        for appended in ("p001.jsonl", "p004.jsonl", "p005.jsonl", "p008.jsonl"):
            files.files["profiles"][appended].append(files.profile(f"u-{appended}"))
        files.files["profiles"]["p009.jsonl"][0] = files.profile("u009-0000")
        files.files["profiles"]["p200.jsonl"] = [files.profile(f"u-p200-{i}") for i in range(40)]
        del files.files["profiles"]["p002.jsonl"]
        files.files["metadata"]["m001.csv"].pop(3)
        files.write()

    victim = start_worker(tmp_path, "victim", kill_at=kill_at, when=when, named=named)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == -signal.SIGKILL, err
    log = log_lines(tmp_path)
    killed = [line for line in log if line[1] == "KILLED"]
    assert len(killed) == 1, log
    started = [line for line in log if line[1] == "START"]
    _, _, dataset, gen, slot, name, _ = started[-1]  # the file it was routing when it died
    assert gen == f"g{generation}"
    folder = routed_dir(plan.state_dir, dataset, generation)
    index = routed_file_path(folder, int(slot), "index")
    assert index.exists() is (when == "after-index")
    if when != "after-index":  # its output lies there, partial or whole, but is no checkpoint
        assert routed_file_path(folder, int(slot), "records").stat().st_size > 0

    survivors = [start_worker(tmp_path, f"s{i}", named=named) for i in range(2)]
    for w in survivors:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err

    log = log_lines(tmp_path)
    done = Counter((line[2], line[5]) for line in log if line[1] == "DONE")
    changed = {ds: set(names) for ds, names in files.files.items()}  # the bulk: every file
    if generation == 2:
        profiles = ("p001", "p004", "p005", "p008", "p009", "p200")
        changed = {"profiles": {f"{p}.jsonl" for p in profiles}, "metadata": {"m001.csv"}}
    expected = Counter((ds, n) for ds, names in changed.items() for n in names)
    assert done == expected, "a file routed twice, or not at all"  # once, by one worker
    (finisher,) = [line[0] for line in log if line[1] == "DONE" and line[5] == name]
    if when != "after-index":  # the file it died in was routed again, whole, by a survivor
        assert finisher in ("s0", "s1")
    takers = {line[0] for line in log if line[1] == "START" and line[0] != "victim"}
    assert takers, "no survivor routed"
    assert_whole(plan, files, tmp_path / "out")
    with open_state(plan) as state:
        for dataset in ("profiles", "metadata"):
            latest = state.latest_generation(dataset)
            assert latest is not None
            assert (latest.generation, latest.committed) == (generation, True)
