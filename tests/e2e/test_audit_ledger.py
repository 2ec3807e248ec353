"""The audit ledger: a bulk run, a sync and a compaction audit clean; each way of damaging the
ledger or the data it explains is reported by name with a nonzero exit, through the CLI; the
exported audit key alone suffices; crashes, takeovers and a rebuilt state keep the chain whole.

One pristine site (bulk, sync, compaction) is made per module; each test damages its own copy.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

import migrator.write.run as run_module
from migrator.codec.ledger import LedgerEntry, entry_link
from migrator.errors import StoreError
from migrator.keys.local import LocalKeyProvider
from migrator.keys.local_signing import MemorySigner
from migrator.read.audit import Auditor
from migrator.read.audit_report import FINDINGS
from migrator.repository.names import segment_key
from migrator.state.leases import WORKER_ID_ENV
from migrator.stores.base import Buffer
from migrator.stores.memory import MemoryStore
from tests.e2e.test_sync_generations import DATASETS, LiveSource, Site
from tests.planfiles import PROFILES, VIDEOS, run_cli, write_objects, write_plan, write_profiles

DEST = Path("dest/t")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    write_profiles(root / "data/profiles", 4000)  # about four 64KiB chunks a shard
    videos = write_objects(root / "data/videos", [0, 1000, 150_000, 70_000, 200_000, 5])
    write_plan(root, datasets=PROFILES + VIDEOS)
    assert run_cli("run", "plan.yaml", cwd=root).returncode == 0
    # A sync: records added and removed, a video rewritten, one deleted, one added.
    write_profiles(root / "data/profiles", 4300, seed=5, files=4)
    names = sorted(videos)
    (root / "data/videos" / names[0]).unlink()
    (root / "data/videos" / names[2]).write_bytes(random.Random(4).randbytes(90_000))
    (root / "data/videos/new.mp4").write_bytes(b"n" * 70_000)
    synced = run_cli("run", "plan.yaml", cwd=root)
    assert synced.returncode == 0, synced.stderr
    compacted = run_cli("compact", "plan.yaml", cwd=root)
    assert compacted.returncode == 0, compacted.stderr
    exported = run_cli("keys", "audit-key", "plan.yaml", "--out", "audit-key.json", cwd=root)
    assert exported.returncode == 0, exported.stderr
    return root


@pytest.fixture
def site(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "site"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


def audit(site: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = run_cli("audit", "plan.yaml", "--json", *args, cwd=site)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def findings(doc: dict[str, Any]) -> list[tuple[str, str | None]]:
    out = []
    for d in doc["datasets"]:
        out += [(f["kind"], f["object_key"]) for f in d["findings"]]
        out += [(f["kind"], f["object_key"]) for s in d["shards"] for f in s["findings"]]
    return out


def kinds(doc: dict[str, Any]) -> set[str]:
    return {kind for kind, _ in findings(doc)}


def segments(site: Path, dataset: str, shard: int) -> list[Path]:
    return sorted((site / DEST / dataset / "_ledger" / f"s{shard:05d}").glob("*.mgl"))


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, rows: list[bytes]) -> None:
    path.write_bytes(b"\n".join(rows) + b"\n")


def busiest_segment(site: Path, dataset: str = "profiles") -> tuple[int, Path]:
    """(shard, segment) of the segment holding the most entries: at least three."""
    best = max(
        ((shard, seg) for shard in range(4) for seg in segments(site, dataset, shard)),
        key=lambda item: len(lines(item[1])),
    )
    assert len(lines(best[1])) >= 4
    return best


def test_bulk_sync_and_compaction_audit_clean(pristine: Path) -> None:
    code, doc = audit(pristine, "--full")
    assert code == 0 and doc["ok"] is True and findings(doc) == []
    shards = [s for d in doc["datasets"] for s in d["shards"]]
    assert len(shards) == 4 + 3
    assert all(s["head"] is not None and s["live_objects"] == s["stored_objects"] for s in shards)
    assert sum(s["deletes"] for s in shards) > 0  # the sync's stale parts, the compaction's sweep
    assert all(s["writers"] and s["first_at"] <= s["last_at"] for s in shards)
    assert any("manifests" in c for c in doc["datasets"][0]["checks"])
    text = run_cli("audit", "plan.yaml", cwd=pristine)
    assert text.returncode == 0 and "audit CLEAN" in text.stdout
    # the sweep's deletions, the sync's changed parts: every entry says why
    entries = [
        orjson.loads(row) for seg in segments(pristine, "videos", 0) for row in lines(seg)[1:]
    ]
    assert {(e["kind"], e["reason"]) for e in entries} >= {
        ("add", "stored"),
        ("delete", "compaction"),
    }


def test_the_exported_audit_key_alone_suffices(site: Path) -> None:
    doc = json.loads((site / "audit-key.json").read_text())
    assert set(doc) == {"format", "version", "plan", "signing_keys"}
    signer = LocalKeyProvider(site / "kek.key").signer.public_key()
    assert [k["key_id"] for k in doc["signing_keys"]] == [signer.key_id]
    assert doc["signing_keys"][0]["algorithm"] == "ecdsa-p256-sha256"
    # The auditor has the plan, read access and the key file: no KEK, no signing key, no state.
    (site / "kek.key").unlink()
    (site / "kek.signing.key").unlink()
    shutil.rmtree(site / "state")
    code, report = audit(site, "--audit-key-file", "audit-key.json", "--full")
    assert code == 0, findings(report)
    assert all("manifests were not opened" in " ".join(d["notes"]) for d in report["datasets"])
    assert all(d["audit_key"] == signer.key_id for d in report["datasets"])
    assert not (site / "kek.signing.key").exists()  # nothing made a signing key on the way
    _, seg = busiest_segment(site)
    rows = lines(seg)
    write_lines(seg, rows[:2] + rows[3:])
    code, report = audit(site, "--audit-key-file", "audit-key.json")
    assert code == 1 and "gap" in kinds(report)
    # A key file of someone else's signing key: no keyring and no segment verifies with it.
    doc["signing_keys"] = [MemorySigner.generate().public_key().as_dict()]
    (site / "other-key.json").write_text(json.dumps(doc))
    code, report = audit(site, "--audit-key-file", "other-key.json", "--dataset", "profiles")
    assert code == 1 and kinds(report) >= {"forged", "untrusted-keyring"}
    # A key file whose key id is not its public key's fingerprint is refused, not believed.
    doc["signing_keys"][0]["key_id"] = signer.key_id
    (site / "lying-key.json").write_text(json.dumps(doc))
    done = run_cli("audit", "plan.yaml", "--audit-key-file", "lying-key.json", cwd=site)
    assert done.returncode == 2 and "is not its public key's fingerprint" in done.stderr


def _forge_next(rows: list[bytes], object_key: str) -> bytes:
    """An entry appended by someone who knows the format but holds no key."""
    last = orjson.loads(rows[-1])
    body = {k: v for k, v in last.items() if k != "link"} | {
        "index": last["index"] + 1,
        "object_key": object_key,
    }
    entry = LedgerEntry(**body, link="")
    return orjson.dumps(
        body | {"link": entry_link(last["link"], entry)}, option=orjson.OPT_SORT_KEYS
    )


def _swap(rows: list[bytes]) -> list[bytes]:
    return [rows[0], rows[2], rows[1], *rows[3:]]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("deleted entry", "gap"),
        ("reordered pair", "out-of-order"),
        ("replayed entry", "out-of-order"),
        ("forged entry", "forged"),
        ("forged header", "forged"),
        ("altered entry", "altered-entry"),
        ("truncated tail", "truncated"),
        ("deleted last segment", "truncated"),
        ("deleted segment", "segment-missing"),
        ("segment of another shard", "misplaced"),
        ("not a segment", "unexpected-ledger-object"),
    ],
)
def test_damage_to_the_ledger_is_named(site: Path, damage: str, expected: str) -> None:
    shard, seg = busiest_segment(site)
    rows = lines(seg)
    last = segments(site, "profiles", shard)[-1]
    if damage == "deleted entry":
        write_lines(seg, rows[:2] + rows[3:])
    elif damage == "reordered pair":
        write_lines(seg, _swap(rows))
    elif damage == "replayed entry":
        write_lines(seg, [*rows[:3], rows[1], *rows[3:]])
    elif damage == "forged entry":
        extra = f"profiles/g000001/s{shard:05d}/r/00000077.mgc"
        write_lines(seg, [*rows, _forge_next(rows, extra)])
    elif damage == "forged header":
        header = orjson.loads(rows[0]) | {"count": len(rows)}
        extra = f"profiles/g000001/s{shard:05d}/r/00000077.mgc"
        forged = _forge_next(rows, extra)
        header["head_link"] = orjson.loads(forged)["link"]
        write_lines(seg, [orjson.dumps(header, option=orjson.OPT_SORT_KEYS), *rows[1:], forged])
    elif damage == "altered entry":
        entry = orjson.loads(rows[2]) | {"who": "someone-else:1:0"}
        write_lines(seg, [*rows[:2], orjson.dumps(entry, option=orjson.OPT_SORT_KEYS), *rows[3:]])
    elif damage == "truncated tail":
        last_rows = lines(last)
        assert len(last_rows) >= 2
        write_lines(last, last_rows[:-1])
    elif damage == "deleted last segment":
        last.unlink()
    elif damage == "deleted segment":
        assert len(segments(site, "profiles", shard)) >= 2
        segments(site, "profiles", shard)[0].unlink()
    elif damage == "segment of another shard":
        other = segments(site, "profiles", (shard + 1) % 4)[0]
        shutil.copyfile(other, segments(site, "profiles", shard)[0])
    elif damage == "not a segment":
        shutil.copyfile(seg, seg.with_name("notes.txt"))
    code, doc = audit(site)
    assert code == 1 and doc["ok"] is False
    assert expected in kinds(doc), findings(doc)
    assert kinds(doc) <= set(FINDINGS)
    text = run_cli("audit", "plan.yaml", cwd=site)
    assert text.returncode == 1 and expected in text.stdout and "audit FAILED" in text.stdout


def live_chunk(site: Path) -> Path:
    return next((site / DEST / "profiles").glob("g*/s00001/r/*.mgc"))


def test_an_extra_stored_object_is_named(site: Path) -> None:
    chunk = live_chunk(site)
    extra = chunk.with_name("00000099.mgc")
    shutil.copyfile(chunk, extra)
    code, doc = audit(site)
    key = extra.relative_to(site / DEST).as_posix()
    assert code == 1 and ("extra-object", key) in findings(doc)


def test_a_missing_object_is_named(site: Path) -> None:
    chunk = live_chunk(site)
    chunk.unlink()
    code, doc = audit(site)
    assert code == 1 and ("missing-object", chunk.relative_to(site / DEST).as_posix()) in findings(
        doc
    )


def test_a_tampered_chunk_is_named_when_read_back(site: Path) -> None:
    chunk = live_chunk(site)
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0x40
    chunk.write_bytes(bytes(data))
    assert audit(site)[0] == 0  # same size: only reading it back can tell
    code, doc = audit(site, "--full")
    assert code == 1 and findings(doc) == [
        ("digest-mismatch", chunk.relative_to(site / DEST).as_posix())
    ]


# --- crashes, takeovers and rebuilds keep the chain whole --------------------------------


class CrashAfterLedgerPut(MemoryStore):
    """Stores the n-th ledger segment, then fails, and stores nothing after: a process that
    dies between a segment's put and its commit."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        if self.left <= 0:
            raise StoreError(f"{key}: the process is gone")
        super().put(key, data, metadata)
        if "/_ledger/" in key:
            self.left -= 1
            if self.left == 0:
                raise StoreError(f"{key}: injected crash after the put")


class FailAfterChunks(MemoryStore):
    """Fails every data chunk put after the first n: a worker that dies mid-shard."""

    def __init__(self) -> None:
        super().__init__()
        self.left: int | None = None

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        if self.left is not None and "/r/" in key:
            if self.left == 0:
                raise StoreError(f"{key}: worker gone")
            self.left -= 1
        super().put(key, data, metadata)


def audit_site(site: Site) -> Any:
    with site.state() as state:
        return Auditor(
            site.plan, site.store, provider=site.provider, state=state, full=True
        ).audit()


def test_a_segment_stored_but_not_committed_is_overwritten_by_the_next_attempt(
    tmp_path: Path,
) -> None:
    live = LiveSource(tmp_path, random.Random(7))
    live.seed(profiles=300, rows=200, videos=6)
    live.write()
    site = Site(tmp_path, datasets=DATASETS)
    site.store = CrashAfterLedgerPut(3)
    with pytest.raises(StoreError):
        site.run()
    site.store.left = 10**9  # the next attempt's process
    report = audit_site(site)
    # Chunks stored after the last segment (if the crash left any): named, with the reason to
    # suspect an unfinished run.
    found = [f for d in report.datasets for _, f in d.all_findings()]
    assert all(f.kind == "extra-object" and "still open" in f.message for f in found)
    notes = [n for d in report.datasets for s in d.shards for n in s.notes]
    assert any("stored but not committed" in n for n in notes)
    site.run()
    report = audit_site(site)
    assert report.ok and not [n for d in report.datasets for s in d.shards for n in s.notes]


def test_a_shard_taken_over_mid_way_audits_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(tmp_path / "data/profiles", 3000, files=1)
    site = Site(tmp_path, datasets=PROFILES.replace("shards: 4", "shards: 1"))
    store = FailAfterChunks()
    site.store = store
    monkeypatch.setattr(run_module, "COMMIT_BATCH", 1)  # each chunk is committed on its own
    monkeypatch.setenv(WORKER_ID_ENV, "worker-a")
    store.left = 2
    with pytest.raises(StoreError, match="worker gone"):
        site.run()
    monkeypatch.setenv(WORKER_ID_ENV, "worker-b")
    store.left = None
    site.run()
    report = audit_site(site)
    assert report.ok, [f for d in report.datasets for f in d.all_findings()]
    (shard,) = report.datasets[0].shards
    assert {w.split(":")[0] for w in shard.writers} == {"worker-a", "worker-b"}
    assert shard.adds == shard.live == shard.stored > 2


def test_a_rebuilt_state_continues_every_ledger(site: Path) -> None:
    shutil.rmtree(site / "state")
    # Without its state, a run refuses to start the ledgers again over the stored ones.
    (site / "data/profiles/part-009.jsonl").write_bytes(b'{"user_id": "late"}\n')
    refused = run_cli("run", "plan.yaml", cwd=site)
    assert refused.returncode == 3 and "state rebuild" in refused.stderr
    shutil.rmtree(site / "state")
    rebuilt = run_cli("state", "rebuild", "plan.yaml", cwd=site)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert audit(site)[0] == 0
    before = {s: len(segments(site, "profiles", s)) for s in range(4)}
    synced = run_cli("run", "plan.yaml", cwd=site)
    assert synced.returncode == 0, synced.stderr
    after = {s: len(segments(site, "profiles", s)) for s in range(4)}
    assert sum(after.values()) == sum(before.values()) + 1  # one shard changed: one segment
    code, doc = audit(site, "--full")
    assert code == 0, findings(doc)


def test_audit_names_an_unknown_dataset_and_a_bad_key_file(site: Path) -> None:
    done = run_cli("audit", "plan.yaml", "--dataset", "nope", cwd=site)
    assert done.returncode == 2 and "nope" in done.stderr
    (site / "bad.json").write_text("{}")
    done = run_cli("audit", "plan.yaml", "--audit-key-file", "bad.json", cwd=site)
    assert done.returncode == 2 and "bad.json: not an audit key file" in done.stderr
    assert os.access(site / "audit-key.json", os.R_OK)


def test_segment_keys_are_per_shard_and_numbered_from_one() -> None:
    assert segment_key("profiles", 3, 1) == "profiles/_ledger/s00003/0000000001.mgl"
