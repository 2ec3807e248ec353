"""The cutover gate reads only what changed since the last sync, and finds what a whole scan finds.

A records source of many files goes through a bulk copy and several syncs, with files added,
changed, removed and appended between them, and a key repeated across files. Before each sync
the gate runs twice: reusing the routed digests of unchanged files, and reading every record;
both must give the same per-shard digests, counts and lag, and the first reads only the changed
files. After each sync the gate opens, reading nothing.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import orjson
import pytest

from migrator.keys.local import LocalKeyProvider
from migrator.plan.model import Plan, load_plan
from migrator.read.cutover import CutoverGate, CutoverReport, DatasetGate
from migrator.read.verify import Verifier
from migrator.records.keys import JsonKeyReader
from migrator.repository.names import routed_root
from migrator.sharding import shard_of
from migrator.state.db import StateDB
from migrator.stores.memory import MemoryStore
from migrator.write.run import MigrationRun
from tests.planfiles import run_cli, write_plan

DATASETS = """\
  - {name: events, kind: records, format: jsonl, source: {kind: local, path: data/events},
     key: id, shards: 5}
  - {name: rows, kind: records, format: csv, source: {kind: local, path: data/rows},
     key: id, shards: 3}
"""
EVENTS_SHARDS = 5
CSV_HEADER = b"id,title,n"


class Files:
    """A folder of record files as the test edits them, each rewritten whole when it changes
    (a new inode, as an application's atomic save) or appended to in place."""

    def __init__(self, folder: Path, suffix: str, header: bytes | None = None) -> None:
        self.folder, self.suffix, self.header = folder, suffix, header
        self.files: dict[str, list[bytes]] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, records: list[bytes]) -> None:
        self.files[name] = list(records)
        body = b"".join(r + b"\n" for r in records)
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes((self.header + b"\n" if self.header else b"") + body)
        tmp.replace(self.folder / f"{name}{self.suffix}")

    def append(self, name: str, records: list[bytes]) -> None:
        self.files[name] += records
        with (self.folder / f"{name}{self.suffix}").open("ab") as fh:
            fh.write(b"".join(r + b"\n" for r in records))

    def remove(self, name: str) -> None:
        del self.files[name]
        (self.folder / f"{name}{self.suffix}").unlink()


class Site:
    def __init__(self, root: Path) -> None:
        self.plan: Plan = load_plan(
            write_plan(root, datasets=DATASETS, chunk_size="64KiB"), check_sources=False
        )
        self.store = MemoryStore()
        assert self.plan.keys.kek_file is not None
        self.provider = LocalKeyProvider(self.plan.keys.kek_file)
        self.rng = random.Random(16)
        self.serial = 0
        self.events = Files(root / "data" / "events", ".jsonl")
        self.rows = Files(root / "data" / "rows", ".csv", CSV_HEADER)

    def state(self) -> StateDB:
        return StateDB.sqlite_file(self.plan.state_dir / "state.sqlite")

    def event(self, key: str) -> bytes:
        self.serial += 1
        words = " ".join(self.rng.choice(["a", "bé", "c🎬"]) for _ in range(6))
        return orjson.dumps({"id": key, "text": words, "v": self.serial})

    def row(self, key: str) -> bytes:
        self.serial += 1
        return f'{key},"title, {self.serial}",{self.serial % 97}'.encode()

    def sync(self) -> None:
        with self.state() as state:
            report = MigrationRun(self.plan, self.store, self.provider, state).run()
        assert all(d.committed for d in report.datasets)

    def gate(self, *, reuse: bool = True) -> CutoverReport:
        with self.state() as state:  # the integrity checks the gate requires, then the gate
            Verifier(self.plan, self.store, self.provider, state, sample=0.1, seed=1).verify()
            gate = CutoverGate(self.plan, self.store, self.provider, state, reuse_routed=reuse)
            return gate.check()


def by_name(report: CutoverReport) -> dict[str, DatasetGate]:
    return {d.name: d for d in report.datasets}


def same_as_whole_scan(site: Site) -> CutoverReport:
    """The gate as it runs, checked against a gate that reads every record."""
    reused, whole = site.gate(), site.gate(reuse=False)
    assert reused.ready == whole.ready
    for a, b in zip(reused.datasets, whole.datasets, strict=True):
        assert b.files_reused == 0 and b.final_sync_files == b.files_listed
        assert a.files_listed == b.files_listed
        for x, y in zip(a.shards, b.shards, strict=True):
            assert (x.source_digest, x.source_entries) == (y.source_digest, y.source_entries)
            assert (x.pending_upserts, x.pending_deletes, x.pending_bytes) == (
                y.pending_upserts,
                y.pending_deletes,
                y.pending_bytes,
            ), f"{a.name} shard {x.shard}"
    return reused


def reads(report: CutoverReport) -> dict[str, int | None]:
    return {d.name: d.final_sync_files for d in report.datasets}


def event_shard(record: bytes) -> int:
    return shard_of(JsonKeyReader("id").key(record, "test", 1), EVENTS_SHARDS)


def synced_and_open(site: Site) -> None:
    site.sync()
    report = same_as_whole_scan(site)
    assert report.ready
    assert reads(report) == {"events": 0, "rows": 0}  # everything was routed by the sync
    for d in report.datasets:
        assert d.files_reused == d.files_listed
        assert (d.final_sync_bytes, d.pending_bytes) == (0, 0)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    site = Site(tmp_path)
    for f in range(8):
        site.events.put(f"e{f}", [site.event(f"k{f}-{i}") for i in range(40)])
    for f in range(4):
        site.rows.put(f"r{f}", [site.row(f"r{f}-{i}") for i in range(30)])
    site.sync()
    return site


def test_syncs_with_files_added_changed_removed_and_appended(site: Site) -> None:
    report = same_as_whole_scan(site)
    assert report.ready and reads(report) == {"events": 0, "rows": 0}
    assert {d.routed_table for d in report.datasets} == {1}

    # One record of one file changes: its shard alone differs, named; one file is to read.
    record = site.event("k3-7")
    edited = [record if r.startswith(b'{"id":"k3-7"') else r for r in site.events.files["e3"]]
    site.events.put("e3", edited)
    report = same_as_whole_scan(site)
    events = by_name(report)["events"]
    assert not report.ready and by_name(report)["rows"].ready
    assert [s.shard for s in events.mismatched] == [event_shard(record)]
    (bad,) = events.mismatched
    assert (bad.pending_upserts, bad.pending_deletes, bad.pending_bytes) == (1, 0, len(record) + 1)
    assert reads(report) == {"events": 1, "rows": 0}
    assert events.final_sync_bytes == (site.events.folder / "e3.jsonl").stat().st_size
    synced_and_open(site)

    # A file added, another removed, a third appended to in place; a CSV row changed.
    site.events.put("e9", [site.event(f"k9-{i}") for i in range(25)])
    site.events.remove("e1")
    site.events.append("e5", [site.event(f"k5-extra-{i}") for i in range(6)])
    rows = site.rows.files["r2"]
    site.rows.put("r2", [site.row("r2-4") if r.startswith(b"r2-4,") else r for r in rows])
    report = same_as_whole_scan(site)
    assert not report.ready and reads(report) == {"events": 2, "rows": 1}
    assert sum(s.pending_deletes or 0 for s in by_name(report)["events"].shards) == 40
    synced_and_open(site)

    # A key repeated across files: a new file holds a key an unchanged file holds too, and a
    # record is deleted; then the repeat goes again.
    site.events.put("e10", [site.event("k0-3"), site.event("k10-0")])
    site.events.put("e6", site.events.files["e6"][1:])
    report = same_as_whole_scan(site)
    assert not report.ready and reads(report)["events"] == 2
    synced_and_open(site)
    site.events.remove("e10")
    report = same_as_whole_scan(site)
    assert not report.ready and reads(report)["events"] == 0  # a removal is read from nothing
    synced_and_open(site)

    # The freeze is estimated from the syncs timed so far and what the final sync would read.
    site.events.append("e2", [site.event("k2-late")])
    report = site.gate()
    assert report.freeze.seconds is not None and report.freeze.final_sync_files == 1
    assert report.freeze.final_sync_bytes == (site.events.folder / "e2.jsonl").stat().st_size


def test_without_routed_digests_the_gate_reads_the_source_whole(site: Site) -> None:
    site.events.put("e4", site.events.files["e4"][:-1])
    # A digests file a concurrent sync pruned, then every routed output: still exact.
    folder = routed_root(site.plan.state_dir, "events")
    next(folder.rglob("*.digests")).unlink()
    report = same_as_whole_scan(site)
    assert not report.ready
    shutil.rmtree(folder)
    report = same_as_whole_scan(site)
    events = by_name(report)["events"]
    assert events.files_reused == 0 and events.routed_table is None
    assert events.final_sync_files == events.files_listed == 8
    site.sync()
    assert site.gate().ready


def test_the_human_output_says_what_a_final_sync_reads(tmp_path: Path) -> None:
    site = Site(tmp_path)
    for f in range(3):
        site.events.put(f"e{f}", [site.event(f"k{f}-{i}") for i in range(20)])
    site.rows.put("r0", [site.row(f"r0-{i}") for i in range(10)])
    assert run_cli("run", "plan.yaml", cwd=tmp_path).returncode == 0
    assert run_cli("verify", "plan.yaml", cwd=tmp_path).returncode == 0
    shown = run_cli("cutover", "plan.yaml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "final sync reads 0 files, 0 B" in shown.stdout
    site.events.append("e0", [site.event("k0-late")])
    shown = run_cli("cutover", "plan.yaml", "--dataset", "events", cwd=tmp_path)
    assert shown.returncode == 1, shown.stderr
    assert "(3 files, 2 unchanged: routed digests reused)" in shown.stdout
    assert "final sync reads 1 file," in shown.stdout
    rescanned = run_cli("cutover", "plan.yaml", "--dataset", "events", "--rescan", cwd=tmp_path)
    assert rescanned.returncode == 1, rescanned.stderr
    assert "(3 files, 0 unchanged: routed digests reused)" in rescanned.stdout
