"""What can go wrong around syncs: overlapping runs, a changed CSV schema, an object deleted
after some of its parts were sent, a writer whose delta loses a record."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

import migrator.write.encoding as encoding
from migrator.errors import SourceError, StoreError
from migrator.read.cutover import CutoverGate
from migrator.read.verify import Verifier
from migrator.stores.base import Buffer
from migrator.stores.memory import MemoryStore
from tests.e2e.test_compact import FailingPuts
from tests.e2e.test_sync_generations import (
    CSV_HEADER,
    DATASETS,
    LiveSource,
    Site,
    assert_same,
)
from tests.planfiles import run_cli, write_plan


def test_overlapping_runs_take_turns_and_leave_a_restorable_destination(tmp_path: Path) -> None:
    live = LiveSource(tmp_path, random.Random(51))
    live.seed(profiles=3000, rows=2000, videos=8)
    live.write()
    write_plan(tmp_path, datasets=DATASETS)
    assert run_cli("run", "plan.yaml", cwd=tmp_path).returncode == 0
    live.mutate(0.2)
    live.write()
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "migrator", "run", "plan.yaml"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [err for _, err in outputs]
    # One synced generation 2, the other waited for it and then synced generation 3.
    shown = "".join(out for out, _ in outputs)
    assert "2 sync" in shown and "3 sync" in shown
    assert run_cli("verify", "plan.yaml", cwd=tmp_path).returncode == 0
    assert run_cli("cutover", "plan.yaml", cwd=tmp_path).returncode == 0
    for name in ("profiles", "metadata", "videos"):
        done = run_cli(
            "restore", "plan.yaml", "--dataset", name, "--out", f"out/{name}", cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr


def test_a_changed_csv_header_is_refused_not_synced(tmp_path: Path) -> None:
    live = LiveSource(tmp_path, random.Random(52))
    live.seed(profiles=50, rows=80, videos=2)
    live.write()
    site = Site(tmp_path)
    site.run()
    meta = tmp_path / "data/metadata/meta-1.csv"
    meta.write_bytes(meta.read_bytes().replace(CSV_HEADER, b"video_id,name,duration_s", 1))
    with pytest.raises(SourceError, match=r"meta-1.csv:1: CSV header differs from earlier gen"):
        site.run()
    live.write()  # the header restored: the open sync goes on
    report = site.run()
    assert all(d.committed for d in report.datasets)
    assert_same(site.restore(tmp_path / "out"), live.snapshot(), "header restored")


class FailingDataPuts(FailingPuts):
    """Fails data puts only: what was stored before the failure is committed, ledger and all."""

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        if "/_ledger/" in key:
            MemoryStore.put(self, key, data, metadata)
        else:
            super().put(key, data, metadata)


def test_parts_of_an_object_deleted_before_its_shard_closed_are_removed(tmp_path: Path) -> None:
    live = LiveSource(tmp_path, random.Random(53))
    live.seed(profiles=20, rows=20, videos=3)
    live.write()
    site = Site(tmp_path)
    store = FailingDataPuts()
    site.store = store
    site.run()
    (tmp_path / "data/videos/new").mkdir()
    (tmp_path / "data/videos/new/big.mp4").write_bytes(random.Random(1).randbytes(300_000))
    store.allow = 4  # two generation records (nothing else changed), two parts, then a failure
    with pytest.raises(StoreError, match="injected"):
        site.run()
    assert any("/g000002/" in o.key and "/o/" in o.key for o in store.list())
    (tmp_path / "data/videos/new/big.mp4").unlink()
    store.allow = 10**9
    site.run()
    assert not any("/g000002/" in o.key and "/o/" in o.key for o in store.list())
    with site.state() as state:
        assert not state.has_chunks("videos", 2)
    assert_same(site.restore(tmp_path / "out"), live.snapshot(), "deleted mid-sync")
    site.verify_ok()


def test_a_delta_that_lost_a_record_fails_verify_and_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = LiveSource(tmp_path, random.Random(54))
    live.seed(profiles=200, rows=20, videos=2)
    live.write()
    site = Site(tmp_path)
    site.run()
    for uid in sorted(live.profiles)[:40]:
        live.profiles[uid] = live.profile(uid)
    live.write()
    real = encoding.write_delta_spool

    def lossy(
        spool: Path, entries: bytes, changed: set[bytes], target: Path, extra: bytes = b""
    ) -> None:
        real(spool, entries, changed, target, extra)
        data = target.read_bytes()
        target.write_bytes(data[data.index(b"\n") + 1 :])  # a broken writer drops one record

    monkeypatch.setattr(encoding, "write_delta_spool", lossy)
    site.run()
    with site.state() as state:
        report = Verifier(site.plan, site.store, site.provider, state).verify({"profiles"})
        gate = CutoverGate(site.plan, site.store, site.provider, state).check({"profiles"})
    assert report.problems
    assert {p.error for p in report.problems} == {"TamperedError"}
    assert any("added digest" in p.message for p in report.problems)
    assert not gate.ready
