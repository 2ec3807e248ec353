"""Many workers on one plan over a shared PostgreSQL state store: they race for shards and each
shard is done exactly once; a worker killed mid-shard loses its lease, and another finishes the
shard from its last committed chunk once the lease lapses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.planfiles import (
    restored_records,
    run_cli,
    write_metadata_csv,
    write_objects,
    write_plan,
    write_profiles,
)

pytestmark = pytest.mark.integration

LEASE_SECONDS = 3
DATASETS = """\
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 8}
  - {name: metadata, kind: records, format: csv, source: {kind: local, path: data/metadata},
     key: video_id, shards: 5}
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 6,
     part_size: 64KiB}
"""

# A worker as a deployment runs it (MigrationRun.run(worker=True)), with its store's writes
# logged: time, worker, key. With argv[3] = N it kills itself (SIGKILL) as soon as N chunks of
# one records shard are committed: a deterministic crash in the middle of a shard (its other
# chunks stored or not, its manifest not written).
WORKER = """
import collections, os, signal, sys, time
import migrator.write.run as run_module
from migrator.write.run import MigrationRun
from migrator.plan.model import load_plan
from migrator.state.db import StateDB
from migrator.stores.local import LocalStore
from migrator.wiring import open_key_provider, open_state

plan = load_plan(sys.argv[1])
log = open(sys.argv[2], "a", buffering=1)
crash_after = int(sys.argv[3])
name = os.environ["MIGRATOR_WORKER_ID"]
run_module.COMMIT_BATCH = 1  # every confirmed chunk is committed at once
per_shard = collections.Counter()
commit_chunks = StateDB.commit_chunks

def counting_commit(self, chunks, fence=None, **more):
    chunks = list(chunks)
    commit_chunks(self, chunks, fence=fence, **more)
    for c in chunks:
        prefix = c.object_key.rsplit("/r/", 1)[0]
        per_shard[prefix] += "/r/" in c.object_key
        if crash_after and per_shard[prefix] >= crash_after:
            log.write(f"{time.time()} {name} KILLED {prefix}/\\n")
            os.kill(os.getpid(), signal.SIGKILL)

StateDB.commit_chunks = counting_commit

class LoggedStore(LocalStore):
    def put(self, key, data, metadata=None):
        if crash_after:
            time.sleep(0.02)  # the victim stores slowly: its commits come one by one
        super().put(key, data, metadata)
        log.write(f"{time.time()} {name} PUT {key}\\n")

store = LoggedStore(plan.destination.path / "t")
with open_state(plan) as state:
    report = MigrationRun(plan, store, open_key_provider(plan), state).run(worker=True, claim=1)
for d in report.datasets:
    log.write(f"{time.time()} {name} DONE {d.name} committed={d.committed}\\n")
"""


def site(tmp_path: Path, profiles: int = 6000) -> dict[str, list[bytes]]:
    written = {
        "profiles": write_profiles(tmp_path / "data/profiles", profiles),
        "metadata": write_metadata_csv(tmp_path / "data/metadata", 2000),
    }
    write_objects(tmp_path / "data/videos", [200_000, 0, 70_000, 5_000, 130_000, 90_000, 10])
    write_plan(tmp_path, datasets=DATASETS, extra=f"lease_seconds: {LEASE_SECONDS}")
    return written


def start_worker(tmp_path: Path, url: str, name: str, crash_at: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "MIGRATOR_STATE_URL": url, "MIGRATOR_WORKER_ID": name}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, "plan.yaml", "puts.log", str(crash_at)],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_log(tmp_path: Path) -> list[tuple[float, str, str, str]]:
    lines = (tmp_path / "puts.log").read_text().splitlines()
    return [
        (float(t), who, what, rest) for t, who, what, rest in (ln.split(" ", 3) for ln in lines)
    ]


def assert_destination_whole(tmp_path: Path, url: str, written: dict[str, list[bytes]]) -> None:
    env = {"MIGRATOR_STATE_URL": url}
    verify = run_cli("verify", "plan.yaml", cwd=tmp_path, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    status = run_cli("status", "plan.yaml", "--json", cwd=tmp_path, env=env)
    assert status.returncode == 0 and status.stdout.count('"status": "committed"') == 3
    for name, records in written.items():
        out = tmp_path / "out" / name
        done = run_cli("restore", "plan.yaml", "--dataset", name, "--out", out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        header = b"video_id,title,duration_s" if name == "metadata" else None
        assert restored_records(out, csv_header=header) == Counter(records), name
    videos = run_cli("restore", "plan.yaml", "--dataset", "videos", "--out", "out/v", cwd=tmp_path)
    assert videos.returncode == 0, videos.stderr
    for path in (tmp_path / "data/videos").rglob("*"):
        if path.is_file():
            copy = tmp_path / "out/v" / path.relative_to(tmp_path / "data/videos")
            assert copy.read_bytes() == path.read_bytes(), path.name


def test_racing_workers_do_every_shard_exactly_once(tmp_path: Path, postgres_url: str) -> None:
    written = site(tmp_path)
    workers = [start_worker(tmp_path, postgres_url, f"w{i}") for i in range(4)]
    for w in workers:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    log = read_log(tmp_path)
    puts = Counter(rest for _, _, what, rest in log if what == "PUT")
    twice = [key for key, n in puts.items() if n > 1]
    assert twice == [], f"stored more than once: {twice[:5]}"
    manifests = {k for k in puts if k.endswith("manifest.mgm") or "/manifest" in k}
    by_shard = Counter(re.sub(r"/[^/]*$", "", k) for k in manifests)
    assert len(by_shard) == 8 + 5 + 6 and set(by_shard.values()) == {1}
    generations = [k for k in puts if "/_generations/" in k]
    assert sorted(generations) == sorted(
        f"{ds}/_generations/g000001.mgc" for ds in ("profiles", "metadata", "videos")
    )
    # Every worker ends knowing the generation is committed, whoever committed it.
    done = [rest for _, _, what, rest in log if what == "DONE"]
    assert len(done) == 4 * 3 and all(d.endswith("committed=True") for d in done)
    workers_that_stored = {who for _, who, what, rest in log if what == "PUT" and "/s0" in rest}
    assert len(workers_that_stored) >= 2, "the shards were not shared between workers"
    assert_destination_whole(tmp_path, postgres_url, written)


def test_a_killed_workers_shard_is_finished_by_another_after_its_lease_lapses(
    tmp_path: Path, postgres_url: str
) -> None:
    written = site(tmp_path, profiles=20000)
    victim = start_worker(tmp_path, postgres_url, "victim", crash_at=3)
    victim.wait(timeout=120)
    assert victim.returncode == -9  # SIGKILL, in the middle of a shard
    log = read_log(tmp_path)
    killed_at, _, _, shard_prefix = next(e for e in log if e[2] == "KILLED")
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        committed = {
            row[0]
            for row in conn.execute(
                text("SELECT object_key FROM chunks WHERE object_key LIKE :p"),
                {"p": shard_prefix + "%"},
            )
        }
        holder = conn.execute(text("SELECT owner FROM leases")).scalars().all()
    engine.dispose()
    assert committed, "the victim committed nothing of its shard before dying"
    assert any(h.startswith("victim:") for h in holder)  # it died holding its lease

    survivors = [start_worker(tmp_path, postgres_url, f"s{i}") for i in range(2)]
    for w in survivors:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    log = read_log(tmp_path)
    taken_over = [
        (t, who, rest)
        for t, who, what, rest in log
        if what == "PUT" and rest.startswith(shard_prefix) and who != "victim"
    ]
    assert taken_over, "no survivor finished the victim's shard"
    # Nobody touched the shard until the victim's lease could have lapsed (it was last renewed
    # at most a third of a lease before the kill) ...
    assert min(t for t, _, _ in taken_over) >= killed_at + LEASE_SECONDS * 2 / 3 - 0.2
    # ... and the survivor resumed after the victim's last committed chunk: none sent again.
    assert committed.isdisjoint(rest for _, _, rest in taken_over)
    assert_destination_whole(tmp_path, postgres_url, written)


def test_the_cli_workers_share_a_plan_through_the_state_url(
    tmp_path: Path, postgres_url: str
) -> None:
    written = site(tmp_path, profiles=2000)
    env = {**os.environ, "MIGRATOR_STATE_URL": postgres_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "migrator", "run", "plan.yaml", "--worker", "--claim", "2"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    assert not (tmp_path / "state" / "state.sqlite").exists()  # the state lives in PostgreSQL
    assert_destination_whole(tmp_path, postgres_url, written)
    # A later plain run is the next sync, over the same shared state.
    again = run_cli("run", "plan.yaml", cwd=tmp_path, env={"MIGRATOR_STATE_URL": postgres_url})
    assert again.returncode == 0, again.stderr
    assert "2 sync" in again.stdout


def test_status_shows_which_worker_holds_a_shard(tmp_path: Path, postgres_url: str) -> None:
    from migrator.state.db import StateDB

    site(tmp_path, profiles=200)
    env = {"MIGRATOR_STATE_URL": postgres_url}
    assert (
        run_cli("run", "plan.yaml", "--dataset", "profiles", cwd=tmp_path, env=env).returncode == 0
    )
    with StateDB(postgres_url) as state:
        assert state.claim_shard("profiles", 5, "pod-7:41:abcd", 600.0) is not None
    shown = run_cli("status", "plan.yaml", "--json", cwd=tmp_path, env=env)
    doc = json.loads(shown.stdout)
    profiles = next(d for d in doc["datasets"] if d["name"] == "profiles")
    held = [s for s in profiles["per_shard"] if s["worker"]]
    assert [(s["shard"], s["worker"]) for s in held] == [(5, "pod-7:41:abcd")]
    assert 590 < held[0]["lease_seconds_left"] <= 600
    table = run_cli("status", "plan.yaml", cwd=tmp_path, env=env)
    assert "pod-7:41:abcd" in table.stdout and "s left" in table.stdout
