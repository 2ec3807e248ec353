"""An objects run lists its source once, in parallel runs of folders, and its progress total
comes from that same listing; the bulk and a sync after a change both restore the source."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.plan.model import load_plan
from migrator.read.restore import Restorer
from migrator.sources.base import SourceObject
from migrator.sources.listing import Ranges
from migrator.sources.local import LocalSource
from migrator.wiring import open_key_provider, open_state, open_store
from migrator.write.reports import ProgressSink
from migrator.write.run import MigrationRun
from tests.planfiles import VIDEOS, files_below, write_objects, write_plan


class Totals(ProgressSink):
    def __init__(self) -> None:
        self.started: list[tuple[str, str, int]] = []

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        self.started.append((dataset, phase, total_bytes))


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often a local source was listed: whole (`list`) or in runs (`list_ranges`)."""
    calls: Counter[str] = Counter()
    whole, in_runs = LocalSource.list, LocalSource.list_ranges

    def counted_list(self: LocalSource) -> Iterator[SourceObject]:
        calls["list"] += 1
        return whole(self)

    def counted_ranges(self: LocalSource, parts: int) -> Ranges:
        calls["list_ranges"] += 1
        return in_runs(self, parts)

    monkeypatch.setattr(LocalSource, "list", counted_list)
    monkeypatch.setattr(LocalSource, "list_ranges", counted_ranges)
    return calls


def test_an_objects_run_lists_its_source_once(tmp_path: Path, listings: Counter[str]) -> None:
    sizes = [70_000, 0, 5_000, 130_000, 1_000, 64 * 1024, 9_000, 200]
    write_objects(tmp_path / "data/videos", sizes)
    for i in range(12):  # more folders than a thread's share, and names beside them
        (tmp_path / f"data/videos/f{i:02d}/deeper").mkdir(parents=True)
        (tmp_path / f"data/videos/f{i:02d}/deeper/clip {i}.mp4").write_bytes(b"c" * i)
        (tmp_path / f"data/videos/f{i:02d}.mp4").write_bytes(b"n" * i)
    plan = load_plan(write_plan(tmp_path, datasets=VIDEOS))
    total = sum(sizes) + 2 * sum(range(12))
    progress = Totals()
    with open_state(plan) as state:
        run = MigrationRun(plan, open_store(plan), open_key_provider(plan), state, progress)
        report = run.run({"videos"})
        assert report.datasets[0].bytes_in == total
        assert listings == {"list_ranges": 1}
        assert progress.started == [("videos", "encoding", total)]

        (tmp_path / "data/videos/f03/deeper/clip 3.mp4").write_bytes(b"changed")
        (tmp_path / "data/videos/f05.mp4").unlink()
        listings.clear()
        again = run.run({"videos"})
    assert again.datasets[0].generation_kind == "sync"
    assert listings == {"list_ranges": 1}
    out = tmp_path / "out"
    Restorer(plan, open_store(plan), open_key_provider(plan)).restore("videos", out)
    assert files_below(out) == files_below(tmp_path / "data/videos")
