"""Landing into folders (the local kind of every bucket target): a bulk and five syncs landed,
each time equal to the source; the cutover gate closed while landing lags, naming the shards,
and open once it caught up; a landing killed mid-way ends as an uninterrupted one would; a
landed object changed behind landing's back is named."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import migrator
from migrator.plan.model import DatasetPlan
from migrator.wiring import open_landing_store
from tests.landing_site import (
    CSV_HEADER,
    LandingSite,
    assert_all_match,
    datasets_yaml,
    shard_file_records,
)
from tests.planfiles import run_cli

LOCAL = datasets_yaml(
    "{bucket: {kind: local, path: landed/profiles}}",
    "{bucket: {kind: local, path: landed/metadata}}",
    "{bucket: {kind: local, path: landed/videos}}",
)


def dataset(site: LandingSite, name: str) -> DatasetPlan:
    return next(d for d in site.plan.datasets if d.name == name)


def landed_objects(site: LandingSite, name: str) -> dict[str, bytes]:
    ds = dataset(site, name)
    assert ds.landing is not None and ds.landing.bucket is not None
    store = open_landing_store(site.plan, ds.landing.bucket)
    return {o.key: store.get(o.key) for o in store.list()}


def assert_landed_equals_source(site: LandingSite) -> None:
    assert landed_objects(site, "videos") == site.sources.videos
    profiles = shard_file_records(landed_objects(site, "profiles"), csv_header=None)
    assert profiles == site.sources.profile_records()
    metadata = shard_file_records(landed_objects(site, "metadata"), csv_header=CSV_HEADER)
    assert metadata == site.sources.metadata_records()
    assert_all_match(site.check())


def test_a_bulk_and_five_syncs_land_equal_to_the_source(tmp_path: Path) -> None:
    site = LandingSite(tmp_path, LOCAL)
    site.sync()
    reports = site.land()
    assert {r.dataset for r in reports} == {"profiles", "metadata", "videos"}
    assert_landed_equals_source(site)
    for step in range(1, 6):
        site.sources.change(step)
        site.sync()
        if step == 2:
            assert migrator.verify(site.plan, sample=0.2, seed=1).ok  # what the gate requires
            gate = migrator.cutover(site.plan)
            assert not gate.ready
            lagging = {
                (d.name, s.shard) for d in gate.datasets for s in d.shards if s.landing_problem
            }
            assert ("videos", 0) in lagging or ("videos", 1) in lagging or ("videos", 2) in lagging
            for d in gate.datasets:
                for s in d.shards:
                    if s.landing_problem:  # the archive and the source agree; landing lags
                        assert s.source_digest == s.destination_digest
                        assert "landing lags or differs" in s.landing_problem
            shown = run_cli("cutover", "plan.yaml", cwd=tmp_path)  # as the operator sees it
            assert shown.returncode == 1, shown.stderr
            assert "landed digest" in shown.stdout and "landing lags" in shown.stdout
            assert "NOT READY" in shown.stdout
        site.land()
        assert_landed_equals_source(site)
        if step == 2:
            assert migrator.cutover(site.plan).ready
            shown = run_cli("cutover", "plan.yaml", cwd=tmp_path)
            assert shown.returncode == 0 and "CUTOVER READY" in shown.stdout, shown.stdout
    again = site.land()  # nothing left: a second landing applies nothing
    assert all(r.generations_applied == 0 for r in again)


def test_a_landed_object_changed_behind_landings_back_is_named(tmp_path: Path) -> None:
    site = LandingSite(tmp_path, LOCAL)
    site.sync()
    site.land()
    ds = dataset(site, "videos")
    assert ds.landing is not None and ds.landing.bucket is not None
    store = open_landing_store(site.plan, ds.landing.bucket)
    name = sorted(site.sources.videos)[2]
    store.put(name, b"not the landed bytes")  # no migrator metadata: someone else's write
    bad = [s for s in site.check() if not s.match]
    assert len(bad) == 1 and name in bad[0].why(), [s.why() for s in bad]
    assert migrator.verify(site.plan, sample=0.2, seed=1).ok  # the archive itself is intact
    gate = migrator.cutover(site.plan)
    assert not gate.ready
    assert any("landing lags" in (s.landing_problem or "") for d in gate.datasets for s in d.shards)
    site.land()  # the checkpoint says landed: landing again does not notice ...
    assert not migrator.cutover(site.plan).ready  # ... but the gate stays closed, named


def _land_and_kill_when(root: Path, condition_met: Callable[[], bool]) -> bool:
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "land", "plan.yaml"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None:
            if condition_met():
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                return True
            assert time.monotonic() < deadline, "landing neither finished nor got there"
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    return False


@pytest.mark.parametrize("at", [0.2, 0.5, 0.8])
def test_kill_9_while_landing_then_land_again_ends_as_an_uninterrupted_landing(
    tmp_path: Path, at: float
) -> None:
    site = LandingSite(tmp_path, LOCAL)
    for i in range(60):  # enough objects that landing takes a while
        site.sources.videos[f"bulk/{i:03d}.bin"] = site.sources.rng.randbytes(200_000)
    site.sources.write()
    site.sync()
    folder = tmp_path / "landed" / "videos"
    total = len(site.sources.videos)

    def landed_some() -> bool:
        done = sum(1 for p in folder.rglob("*.bin") if p.is_file()) if folder.exists() else 0
        return done >= int(total * at)

    assert _land_and_kill_when(tmp_path, landed_some), "landing finished before the kill"
    site.land()
    assert_landed_equals_source(site)
    site.sources.change(1)  # and a sync on top lands as usual
    site.sync()
    site.land()
    assert_landed_equals_source(site)
