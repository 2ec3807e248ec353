"""Workers over a shared PostgreSQL state store keep every shard's audit ledger one chain: a
worker killed mid-shard, its shard finished by another once its lease lapsed, leaves a ledger
that audits clean and names both writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_workers_postgres import read_log, site, start_worker
from tests.planfiles import run_cli

pytestmark = pytest.mark.integration


def test_a_shard_taken_over_after_a_kill_audits_clean(tmp_path: Path, postgres_url: str) -> None:
    site(tmp_path, profiles=20000)
    victim = start_worker(tmp_path, postgres_url, "victim", crash_at=3)
    victim.wait(timeout=120)
    assert victim.returncode == -9  # SIGKILL, in the middle of a shard
    _, _, _, prefix = next(e for e in read_log(tmp_path) if e[2] == "KILLED")
    dataset, generation, shard_folder = prefix.strip("/").split("/")
    shard = int(shard_folder.removeprefix("s"))
    survivors = [start_worker(tmp_path, postgres_url, f"s{i}") for i in range(2)]
    for w in survivors:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err

    env = {"MIGRATOR_STATE_URL": postgres_url}
    done = run_cli("audit", "plan.yaml", "--json", "--full", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] and doc["findings"] == 0
    (taken,) = [
        s for d in doc["datasets"] if d["dataset"] == dataset for s in d["shards"]
        if s["shard"] == shard
    ]  # fmt: skip
    writers = {w.split(":")[0] for w in taken["writers"]}
    assert "victim" in writers and writers & {"s0", "s1"}, writers
    assert taken["live_objects"] == taken["stored_objects"] > 2
    assert generation == "g000001"
