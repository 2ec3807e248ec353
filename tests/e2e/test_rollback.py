"""Rollback: the destination put back to an older, fully consistent state.

A bulk run and two syncs make three generations. Removing the newest generation record (alone,
with the chunks and manifests it names, or with those and the ledger segments that explain
them) leaves a destination every object of which still checks out. `verify`, `audit` and
`restore` must name the rollback against the state store, and, without it, against a head an
auditor exported earlier (`audit --export-head`).

One pristine site is made per module; each test damages its own copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.planfiles import PROFILES, VIDEOS, run_cli, write_objects, write_plan, write_profiles

DEST = Path("dest/t")
RECORD = "profiles/_generations/g000003.mgc"
STATE_MESSAGE = (
    "rollback: dataset profiles: generation 3 is committed in the state store but the"
    " destination's newest generation record is 2"
)


def _sync(root: Path, n: int) -> None:
    write_profiles(root / "data/profiles", 600 + 40 * n, seed=n + 3)
    (root / f"data/videos/new{n}.mp4").write_bytes(bytes([n]) * 70_000)
    done = run_cli("run", "plan.yaml", cwd=root)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    write_profiles(root / "data/profiles", 600)
    write_objects(root / "data/videos", [0, 1000, 70_000, 150_000])
    write_plan(root, datasets=PROFILES + VIDEOS)
    assert run_cli("run", "plan.yaml", cwd=root).returncode == 0
    _sync(root, 1)
    _sync(root, 2)
    exported = run_cli("audit", "plan.yaml", "--export-head", "head.json", cwd=root)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    return root


@pytest.fixture
def site(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "site"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


# --- ways to roll a dataset back ------------------------------------------------------------


def drop_record(site: Path) -> None:
    (site / DEST / RECORD).unlink()


def drop_record_and_data(site: Path) -> None:
    """The record and every chunk and manifest of its generation: the ledger still names them."""
    drop_record(site)
    shutil.rmtree(site / DEST / "profiles/g000003")


def drop_whole_tail(site: Path) -> None:
    """Record, chunks, manifests and the ledger segments that explain them: what is left is a
    consistent older destination, every segment, chunk and manifest of which checks out."""
    drop_record_and_data(site)
    for segment in sorted((site / DEST / "profiles/_ledger").rglob("*.mgl")):
        entries = [orjson.loads(row) for row in segment.read_bytes().splitlines()[1:]]
        if entries and all(e["generation"] == 3 for e in entries):
            segment.unlink()


DAMAGES: dict[str, Callable[[Path], None]] = {
    "record": drop_record,
    "record-and-data": drop_record_and_data,
    "whole-tail": drop_whole_tail,
}


def verify(site: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("verify", "plan.yaml", "--json", *args, cwd=site)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def audit(site: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("audit", "plan.yaml", "--json", *args, cwd=site)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def rollback_problems(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["problems"] if p["error"] == "RollbackError"]


def rollback_findings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for d in doc["datasets"] for f in d["findings"] if f["kind"] == "rollback"]


def shard_findings(doc: dict[str, Any], dataset: str) -> list[tuple[str, str]]:
    ds = next(d for d in doc["datasets"] if d["dataset"] == dataset)
    return [(f["kind"], f["object_key"]) for s in ds["shards"] for f in s["findings"]]


# --- the pristine site ----------------------------------------------------------------------


def test_the_pristine_site_is_fresh_and_its_head_is_exported(site: Path) -> None:
    head = json.loads((site / "head.json").read_text())
    assert head["format"] == "migrator/head" and head["version"] == 1 and head["plan"] == "test"
    profiles = head["datasets"]["profiles"]
    assert profiles["generation"] == 3 and profiles["record"] == RECORD
    assert (
        profiles["record_sha256"] == hashlib.sha256((site / DEST / RECORD).read_bytes()).hexdigest()
    )
    _, report = audit(site)
    for ds in report["datasets"]:
        ledger = head["datasets"][ds["dataset"]]["ledger"]
        assert {int(s): v for s, v in ledger.items()} == {
            s["shard"]: s["head"] for s in ds["shards"] if s["head"] is not None
        }
    assert verify(site, "--expect-head", "head.json")[0] == 0
    assert audit(site, "--expect-head", "head.json")[0] == 0
    done = run_cli(
        "restore", "plan.yaml", "--dataset", "profiles", "--out", "out",
        "--expect-head", "head.json", cwd=site,
    )  # fmt: skip
    assert done.returncode == 0 and "(generation 3)" in done.stdout, done.stderr


# --- against the state store ------------------------------------------------------------------


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_verify_names_the_rollback_against_the_state_store(site: Path, damage: str) -> None:
    DAMAGES[damage](site)
    code, doc = verify(site)
    assert code == 1
    (problem,) = rollback_problems(doc)
    assert problem["dataset"] == "profiles" and problem["object_key"] == RECORD
    assert STATE_MESSAGE in problem["message"]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_audit_names_the_rollback_against_the_state_store(site: Path, damage: str) -> None:
    DAMAGES[damage](site)
    code, doc = audit(site)
    assert code == 1
    (finding,) = rollback_findings(doc)
    assert finding["object_key"] == RECORD and STATE_MESSAGE in finding["message"]
    assert "rollback" in doc["kinds"]
    text = run_cli("audit", "plan.yaml", cwd=site)
    assert text.returncode == 1 and "rollback" in text.stdout


@pytest.mark.parametrize("damage", ["record", "whole-tail"])  # refused before any data is read
def test_restore_refuses_a_rollback_unless_asked_for(site: Path, damage: str) -> None:
    DAMAGES[damage](site)

    def restore(out: str, *args: str) -> Any:
        return run_cli(
            "restore", "plan.yaml", "--dataset", "profiles", "--out", out, *args, cwd=site
        )

    refused = restore("out")
    assert refused.returncode == 4, refused.stderr
    assert STATE_MESSAGE in refused.stderr and "--allow-rollback" in refused.stderr
    assert not (site / "out").exists() or not any((site / "out").iterdir())
    # generation 3 was committed: asking for it cannot quietly give generation 2
    assert restore("out", "--generation", "3").returncode == 4
    older = restore("older", "--generation", "2")
    assert older.returncode == 0 and "(generation 2)" in older.stdout, older.stderr
    assert "rollback" not in older.stderr
    allowed = restore("allowed", "--allow-rollback")
    assert allowed.returncode == 0 and "(generation 2)" in allowed.stdout, allowed.stderr
    assert STATE_MESSAGE in allowed.stderr  # said, not hidden
    # the videos dataset was not rolled back
    assert restore("videos", "--dataset", "videos").returncode == 0


@pytest.mark.parametrize("damage", ["record", "whole-tail"])
def test_a_sync_never_builds_on_a_rolled_back_destination(site: Path, damage: str) -> None:
    """A new generation on top of generation 2 would hide that 3 ever existed."""
    DAMAGES[damage](site)
    before = sorted(p.relative_to(site / DEST) for p in (site / DEST).rglob("*"))
    _touch = site / "data/videos/after-rollback.mp4"
    _touch.write_bytes(b"x" * 5000)
    refused = run_cli("run", "plan.yaml", cwd=site)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert STATE_MESSAGE in refused.stderr
    assert sorted(p.relative_to(site / DEST) for p in (site / DEST).rglob("*")) == before


# --- without the state store: the exported head -----------------------------------------------


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_without_the_state_store_the_exported_head_names_it(site: Path, damage: str) -> None:
    DAMAGES[damage](site)
    shutil.rmtree(site / "state")
    head_message = (
        "rollback: dataset profiles: generation 3 is committed in the exported head head.json"
        " but the destination's newest generation record is 2"
    )
    code, doc = verify(site, "--expect-head", "head.json")
    assert code == 1
    (problem,) = rollback_problems(doc)
    assert problem["object_key"] == RECORD and head_message in problem["message"]
    # an auditor: the audit key, the head it kept, read access; no KEK, no state store
    assert run_cli("keys", "audit-key", "plan.yaml", "--out", "ak.json", cwd=site).returncode == 0
    (site / "kek.key").unlink()
    code, doc = audit(site, "--audit-key-file", "ak.json", "--expect-head", "head.json")
    assert code == 1
    (finding,) = rollback_findings(doc)
    assert head_message in finding["message"]
    if damage == "whole-tail":
        # every shard the sync touched: its ledger ends before the head the auditor kept
        truncated = [k for k, _ in shard_findings(doc, "profiles") if k == "truncated"]
        assert len(truncated) == 4
    assert shard_findings(doc, "videos") == []


def test_without_a_state_store_or_a_head_a_whole_tail_rollback_is_consistent(site: Path) -> None:
    """The limit the head file exists for: nothing at the destination tells the older state."""
    drop_whole_tail(site)
    shutil.rmtree(site / "state")
    assert verify(site)[0] == 0
    assert audit(site)[0] == 0


def test_restore_refuses_against_the_exported_head(site: Path) -> None:
    drop_record(site)
    shutil.rmtree(site / "state")
    done = run_cli(
        "restore", "plan.yaml", "--dataset", "profiles", "--out", "out",
        "--expect-head", "head.json", cwd=site,
    )  # fmt: skip
    assert done.returncode == 4 and "exported head head.json" in done.stderr, done.stderr


def test_a_generation_rewritten_after_a_rollback_differs_from_the_head(site: Path) -> None:
    """Rolled back, the state store rebuilt from the destination, a sync writes a new
    generation 3: the state store agrees with it, the exported head does not."""
    drop_whole_tail(site)
    shutil.rmtree(site / "state")
    assert run_cli("state", "rebuild", "plan.yaml", cwd=site).returncode == 0
    _sync(site, 3)
    assert verify(site)[0] == 0
    code, doc = verify(site, "--expect-head", "head.json")
    assert code == 1
    (problem,) = rollback_problems(doc)
    assert "generation record 3 is not the one" in problem["message"]
    assert "exported head head.json" in problem["message"]
    code, doc = audit(site, "--expect-head", "head.json")
    assert code == 1 and len(rollback_findings(doc)) == 1


def test_a_newer_generation_than_the_head_is_fresh(site: Path) -> None:
    _sync(site, 3)
    assert verify(site, "--expect-head", "head.json")[0] == 0
    assert audit(site, "--expect-head", "head.json")[0] == 0


def test_an_older_record_removed_beneath_newer_ones_is_named(site: Path) -> None:
    """The head's generation is gone while an older record stays: no compaction does that."""
    _sync(site, 3)
    (site / DEST / RECORD).unlink()
    shutil.rmtree(site / "state")
    code, doc = verify(site, "--expect-head", "head.json")
    assert code == 1
    (problem,) = rollback_problems(doc)
    assert "generation 3 is committed in the exported head head.json" in problem["message"]
    assert "its record is gone" in problem["message"]


def test_export_head_refuses_a_damaged_destination(site: Path) -> None:
    drop_record(site)
    done = run_cli("audit", "plan.yaml", "--export-head", "again.json", cwd=site)
    assert done.returncode == 1 and not (site / "again.json").exists()
    assert "again.json" in done.stderr and "not written" in done.stderr


HEAD_FILE_ERRORS = {
    "not-json": (b"{", "not a head file (not JSON)"),
    "format": (b'{"format": "other"}', "not a head file"),
    "plan": (None, "plan 'other'"),
    "dataset": (None, "dataset 'nope', which the plan does not have"),
    "digest": (None, "datasets.profiles.record_sha256"),
}


@pytest.mark.parametrize("case", sorted(HEAD_FILE_ERRORS))
def test_a_bad_head_file_is_a_usage_error(site: Path, case: str) -> None:
    data, expected = HEAD_FILE_ERRORS[case]
    if data is None:
        doc = json.loads((site / "head.json").read_text())
        if case == "plan":
            doc["plan"] = "other"
        elif case == "dataset":
            doc["datasets"]["nope"] = doc["datasets"]["profiles"]
        else:
            doc["datasets"]["profiles"]["record_sha256"] = "xyz"
        data = json.dumps(doc).encode()
    (site / "bad.json").write_bytes(data)
    for command in ("verify", "audit"):
        done = run_cli(command, "plan.yaml", "--expect-head", "bad.json", cwd=site)
        assert done.returncode == 2, done.stderr
        assert "bad.json" in done.stderr and expected in done.stderr
