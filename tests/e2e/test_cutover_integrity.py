"""The gate answers from integrity checks that ran, not from manifests alone: a head never
checked keeps it closed, a damaged chunk found by `verify` closes it naming the shard and the
object (and `status` lists it) until `repair` restores the chunk, and a sync left open closes it
too. Through the CLI, as an operator types it."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from migrator.codec.generation import GenerationKind
from migrator.plan.model import load_plan
from migrator.wiring import open_state
from tests.e2e.test_sync_generations import DATASETS, LiveSource
from tests.planfiles import flip_bit, run_cli, write_plan

DEST = Path("dest/t")


def migrated(tmp_path: Path) -> LiveSource:
    live = LiveSource(tmp_path, random.Random(23))
    live.seed(profiles=300, rows=200, videos=6)
    live.write()
    write_plan(tmp_path, datasets=DATASETS, destination="{kind: local, path: dest, prefix: t/}")
    done = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return live


def gate(tmp_path: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli("cutover", "plan.yaml", "--json", cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, doc


def reasons(doc: dict[str, Any]) -> dict[tuple[str, int], str]:
    return {
        (d["name"], s["shard"]): s["integrity_problem"]
        for d in doc["datasets"]
        for s in d["shards"]
        if s["integrity_problem"]
    }


def test_a_head_never_checked_keeps_the_gate_closed_until_verify(tmp_path: Path) -> None:
    migrated(tmp_path)
    code, doc = gate(tmp_path)
    assert code == 1
    found = reasons(doc)
    assert len(found) == 4 + 3 + 3  # every shard of every dataset
    assert all("never checked" in why and "migrator verify" in why for why in found.values())
    assert all(
        s["source_digest"] == s["destination_digest"] for d in doc["datasets"] for s in d["shards"]
    )

    assert run_cli("verify", "plan.yaml", "--sample", "0.3", cwd=tmp_path).returncode == 0
    code, doc = gate(tmp_path)
    assert code == 0, reasons(doc)


def test_a_damaged_chunk_closes_the_gate_naming_it_until_repaired(tmp_path: Path) -> None:
    migrated(tmp_path)
    assert run_cli("verify", "plan.yaml", cwd=tmp_path).returncode == 0
    chunk = tmp_path / DEST / "metadata/g000001/s00001/r/00000000.mgc"
    flip_bit(chunk, -20)
    key = chunk.relative_to(tmp_path / DEST).as_posix()
    assert gate(tmp_path)[0] == 0  # the gate reads no chunk: only a check can see the damage

    checked = run_cli("verify", "plan.yaml", cwd=tmp_path)
    assert checked.returncode == 1 and key in checked.stdout
    code, doc = gate(tmp_path)
    assert code == 1
    (where, why), *others = reasons(doc).items()
    assert where == ("metadata", 1) and others == [], reasons(doc)
    assert "integrity check failed" in why and key in why and "migrator repair" in why
    shown = run_cli("cutover", "plan.yaml", cwd=tmp_path)
    assert "integrity check failed" in shown.stdout and "NOT READY" in shown.stdout
    status = run_cli("status", "plan.yaml", cwd=tmp_path)
    assert "metadata shard 1:" in status.stdout and key in status.stdout, status.stdout
    listed = json.loads(run_cli("status", "plan.yaml", "--json", cwd=tmp_path).stdout)
    assert [(f["dataset"], f["shard"]) for f in listed["integrity_failed"]] == [("metadata", 1)]
    # A sampled check that passes does not clear it (it may have missed the damaged chunk):
    # only a full read-back that passes does, as the repair's own.
    plan = load_plan(tmp_path / "plan.yaml")
    with open_state(plan) as state:
        (failed, *_) = state.verdicts("metadata")[1]
        state.record_verdicts(
            "metadata",
            [replace(failed, passed=True, problems=0, sample=0.02, checked_at=time.time())],
        )
    assert gate(tmp_path)[0] == 1
    repaired = run_cli(
        "repair", "plan.yaml", "--dataset", "metadata", "--shards", "1", cwd=tmp_path
    )
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    code, doc = gate(tmp_path)
    assert code == 0, reasons(doc)
    assert (
        json.loads(run_cli("status", "plan.yaml", "--json", cwd=tmp_path).stdout)[
            "integrity_failed"
        ]
        == []
    )


def test_a_sync_left_open_keeps_the_gate_closed(tmp_path: Path) -> None:
    migrated(tmp_path)
    assert run_cli("verify", "plan.yaml", cwd=tmp_path).returncode == 0
    plan = load_plan(tmp_path / "plan.yaml")
    with open_state(plan) as state:  # as a sync that failed after opening its generation
        state.open_generation("videos", 2, GenerationKind.SYNC)
    code, doc = gate(tmp_path)
    assert code == 1
    (videos,) = [d for d in doc["datasets"] if d["name"] == "videos"]
    assert "generation 2 (sync)" in videos["problem"] and "not committed" in videos["problem"]
    assert all(d["ready"] for d in doc["datasets"] if d["name"] != "videos")
    shown = run_cli("cutover", "plan.yaml", cwd=tmp_path)
    assert "videos: NOT READY" in shown.stdout and "shard" in shown.stdout  # shards still listed


def test_what_repair_cannot_mend_fails_the_repair_and_keeps_the_gate_closed(
    tmp_path: Path,
) -> None:
    """An object the manifest does not list is no damaged chunk: repair re-sends nothing, and
    its closing read-back says so instead of passing the shard unseen."""
    migrated(tmp_path)
    stray = tmp_path / DEST / "videos/g000001/s00002/o/stray.mgc"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not listed by any manifest")
    checked = run_cli("verify", "plan.yaml", cwd=tmp_path)
    assert checked.returncode == 1 and "UnexpectedObjectError" in checked.stdout

    repaired = run_cli("repair", "plan.yaml", "--dataset", "videos", "--shards", "2", cwd=tmp_path)

    assert repaired.returncode == 1, repaired.stdout
    assert "stray.mgc" in repaired.stdout + repaired.stderr
    code, doc = gate(tmp_path)
    assert code == 1 and ("videos", 2) in reasons(doc)
