"""The cutover gate: true only when every shard's source digest equals the destination's."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from migrator.plan.model import load_plan
from migrator.read.cutover import CutoverGate, CutoverReport
from migrator.wiring import open_key_provider, open_state, open_store
from tests.e2e.test_sync_generations import DATASETS, LiveSource
from tests.planfiles import run_cli, write_plan


def site(tmp_path: Path) -> LiveSource:
    live = LiveSource(tmp_path, random.Random(17))
    live.seed(profiles=300, rows=200, videos=9)
    live.write()
    write_plan(tmp_path, datasets=DATASETS, destination="{kind: local, path: dest, prefix: t/}")
    return live


def run(tmp_path: Path) -> None:
    """A run, then the integrity checks the gate requires of every head it compares."""
    done = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    checked = run_cli("verify", "plan.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout


def gate(tmp_path: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli("cutover", "plan.yaml", "--json", cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    doc: dict[str, Any] = orjson.loads(result.stdout)
    assert doc["ready"] is (result.returncode == 0)
    return result.returncode, doc


def mismatched(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        d["name"]: [s for s in d["shards"] if not s["match"]]
        for d in doc["datasets"]
        if not d["ready"]
    }


def test_the_gate_opens_when_every_shard_matches_and_closes_on_any_one_change(
    tmp_path: Path,
) -> None:
    live = site(tmp_path)
    code, doc = gate(tmp_path)  # nothing migrated yet
    assert code == 1
    assert all("no committed generation" in d["problem"] for d in doc["datasets"])

    run(tmp_path)
    code, doc = gate(tmp_path)
    assert code == 0, mismatched(doc)
    for d in doc["datasets"]:
        assert d["generation"] == 1 and d["last_sync"]
        assert (d["pending_upserts"], d["pending_deletes"], d["pending_bytes"]) == (0, 0, 0)
        for s in d["shards"]:
            assert s["source_digest"] == s["destination_digest"]
            assert s["source_entries"] == s["destination_entries"]
    assert doc["freeze_estimate"]["seconds"] is None  # no sync timed yet

    # One record of one shard changes: that shard, and only it, differs.
    uid = sorted(live.profiles)[3]
    live.profiles[uid] = live.profile(uid)
    live.write()
    code, doc = gate(tmp_path)
    assert code == 1
    (bad,) = mismatched(doc)["profiles"]
    assert list(mismatched(doc)) == ["profiles"]
    assert (bad["pending_upserts"], bad["pending_deletes"]) == (1, 0)
    assert bad["pending_bytes"] == len(live.profiles[uid]) + 1

    # A sync brings it back; a timed sync makes the freeze estimable.
    run(tmp_path)
    code, doc = gate(tmp_path)
    assert code == 0, mismatched(doc)
    assert doc["freeze_estimate"]["seconds"] > 0
    assert all(d["generation"] == 2 for d in doc["datasets"])


def test_a_removed_object_and_a_deleted_csv_row_each_close_the_gate(tmp_path: Path) -> None:
    live = site(tmp_path)
    run(tmp_path)
    live.videos.pop(sorted(live.videos)[0])
    live.write()
    code, doc = gate(tmp_path)
    assert code == 1
    (bad,) = mismatched(doc)["videos"]
    assert (bad["pending_upserts"], bad["pending_deletes"]) == (0, 1)
    assert bad["source_entries"] == bad["destination_entries"] - 1
    run(tmp_path)
    assert gate(tmp_path)[0] == 0

    live.metadata.pop(sorted(live.metadata)[7])
    live.write()
    code, doc = gate(tmp_path)
    assert code == 1 and list(mismatched(doc)) == ["metadata"]
    run(tmp_path)
    assert gate(tmp_path)[0] == 0


def test_the_destination_side_comes_from_manifests_and_a_replaced_head_is_caught(
    tmp_path: Path,
) -> None:
    site(tmp_path)
    run(tmp_path)
    plan = load_plan(tmp_path / "plan.yaml")
    # The gate downloads no chunk: every chunk deleted, it still sees the same digests.
    dest = tmp_path / "dest" / "t"
    for chunk in [p for p in dest.rglob("*.mgc") if "/r/" in str(p) or "/o/" in str(p)]:
        chunk.unlink()
    with open_state(plan) as state:
        report: CutoverReport = CutoverGate(
            plan, open_store(plan), open_key_provider(plan), state
        ).check()
    assert report.ready

    # A manifest swapped for the one of another shard: that shard cannot be compared.
    a = dest / "profiles/g000001/s00000/manifest.mgc"
    b = dest / "profiles/g000001/s00001/manifest.mgc"
    a.write_bytes(b.read_bytes())
    code, doc = gate(tmp_path)
    assert code == 1
    (bad,) = mismatched(doc)["profiles"]
    assert bad["shard"] == 0 and "MisplacedChunkError" in bad["problem"]
    assert bad["destination_digest"] is None


def test_the_human_output_names_the_verdict(tmp_path: Path) -> None:
    live = site(tmp_path)
    run(tmp_path)
    shown = run_cli("cutover", "plan.yaml", cwd=tmp_path)
    assert shown.returncode == 0 and "CUTOVER READY" in shown.stdout
    live.profiles.pop(sorted(live.profiles)[0])
    live.write()
    shown = run_cli("cutover", "plan.yaml", "--dataset", "profiles", cwd=tmp_path)
    assert shown.returncode == 1
    assert "NOT READY" in shown.stdout and "1 shards not ready" in shown.stdout
    assert "metadata" not in shown.stdout
