"""Incremental sync: a live source mutated between and during syncs, over many generations.

After every sync, restore (base, then deltas in order) must equal the source as that sync
captured it; earlier generations stay restorable; a sync after a small change writes little.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest

from migrator.errors import SourceError
from migrator.keys.local import LocalKeyProvider
from migrator.plan.model import DatasetPlan, Plan, load_plan
from migrator.read.restore import Restorer
from migrator.read.verify import Verifier
from migrator.sources.base import Source, SourceObject
from migrator.sources.factory import open_source
from migrator.state.db import StateDB
from migrator.stores.memory import MemoryStore
from migrator.write.run import MigrationRun, ProgressSink, RunReport
from tests.planfiles import files_below, restored_records, write_plan

CSV_HEADER = b"video_id,title,duration_s"
DATASETS = """\
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 4}
  - {name: metadata, kind: records, format: csv, source: {kind: local, path: data/metadata},
     key: video_id, shards: 3}
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 3,
     part_size: 64KiB}
"""


@dataclass
class Snapshot:
    profiles: Counter[bytes]
    metadata: Counter[bytes]
    videos: dict[str, bytes]


@dataclass
class LiveSource:
    """The platform's data as the test changes it; write() puts it on disk as the source."""

    root: Path
    rng: random.Random
    profiles: dict[str, bytes] = field(default_factory=dict)  # user_id -> JSON record
    twins: list[bytes] = field(default_factory=list)  # extra records that repeat a key
    metadata: dict[str, bytes] = field(default_factory=dict)  # video_id -> CSV row
    videos: dict[str, bytes] = field(default_factory=dict)
    serial: int = 0

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    words: int = 8  # words in a profile's bio

    def profile(self, uid: str) -> bytes:
        bio = " ".join(
            self.rng.choice(["video", "music", "cats", "李雷", "🎬"]) + str(self.rng.randrange(999))
            for _ in range(self.words)
        )
        return orjson.dumps({"user_id": uid, "bio": bio, "v": self._next()})

    def row(self, vid: str) -> bytes:
        title = self.rng.choice([f"clip {vid}", f'say "hi", {vid}', f"two\nlines {vid}"])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([vid, title, self._next() % 600])
        return buf.getvalue().encode().removesuffix(b"\n")

    def seed(self, profiles: int, rows: int, videos: int) -> None:
        for i in range(profiles):
            uid = f"u{i:06d}"
            self.profiles[uid] = self.profile(uid)
        for i in range(rows):
            vid = f"v{i:06d}"
            self.metadata[vid] = self.row(vid)
        for _ in range(videos):
            self.add_video()

    def add_video(self) -> None:
        n = self._next()
        name = f"{n % 3:02x}/clip {n}é.mp4" if n % 4 == 0 else f"{n % 3:02x}/c{n}.mp4"
        self.videos[name] = self.rng.randbytes(self.rng.choice([0, 100, 64 * 1024, 150_000]))

    def mutate(self, fraction: float = 0.05) -> None:
        """Inserts, updates and deletes of records; videos added, changed and removed."""
        for table, make in ((self.profiles, self.profile), (self.metadata, self.row)):
            keys = sorted(table)
            n = max(1, int(len(keys) * fraction))
            for k in self.rng.sample(keys, n):  # updates
                table[k] = make(k)
            for k in self.rng.sample(keys, n):  # deletes (some of them just updated)
                table.pop(k, None)
            prefix = "u" if table is self.profiles else "v"
            for _ in range(n):  # inserts
                k = f"{prefix}{self._next() + 900_000:06d}"
                table[k] = make(k)
        names = sorted(self.videos)
        for name in self.rng.sample(names, 2):
            del self.videos[name]
        for name in self.rng.sample(sorted(self.videos), 2):
            self.videos[name] = self.rng.randbytes(len(self.videos[name]) + 7)
        self.add_video()
        self.add_video()

    def write(self) -> None:
        pdir, mdir, vdir = (self.root / "data" / n for n in ("profiles", "metadata", "videos"))
        for d in (pdir, mdir, vdir):
            d.mkdir(parents=True, exist_ok=True)
        lines: list[list[bytes]] = [[], [], []]
        for i, uid in enumerate(sorted(self.profiles)):
            lines[i % 3].append(self.profiles[uid])
        lines[2].extend(self.twins)
        for n, part in enumerate(lines):
            _replace(pdir / f"part-{n}.jsonl", b"".join(r + b"\n" for r in part))
        rows: list[list[bytes]] = [[], []]
        for i, vid in enumerate(sorted(self.metadata)):
            rows[i % 2].append(self.metadata[vid])
        for n, part in enumerate(rows):
            body = CSV_HEADER + b"\n" + b"".join(r + b"\n" for r in part)
            _replace(mdir / f"meta-{n}.csv", body)
        for path in [p for p in vdir.rglob("*") if p.is_file()]:
            name = path.relative_to(vdir).as_posix()
            if name not in self.videos:
                path.unlink()
        for name, data in self.videos.items():
            path = vdir / name
            if not path.exists() or path.read_bytes() != data:
                path.parent.mkdir(parents=True, exist_ok=True)
                _replace(path, data)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            Counter([*self.profiles.values(), *self.twins]),
            Counter(self.metadata.values()),
            dict(self.videos),
        )


def _replace(path: Path, data: bytes) -> None:
    """Write beside, then rename: a new inode, as an application's atomic save would."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


class Site:
    """One plan against one in-memory destination, driven through the engine's API."""

    def __init__(self, root: Path, datasets: str = DATASETS, chunk: str = "64KiB") -> None:
        self.root = root
        self.plan: Plan = load_plan(
            write_plan(root, datasets=datasets, chunk_size=chunk), check_sources=False
        )
        self.store = MemoryStore()
        assert self.plan.keys.kek_file is not None
        self.provider = LocalKeyProvider(self.plan.keys.kek_file)

    def state(self) -> StateDB:
        return StateDB.sqlite_file(self.plan.state_dir / "state.sqlite")

    def run(
        self,
        progress: ProgressSink | None = None,
        wrap: Callable[[Source], Source] | None = None,
    ) -> RunReport:
        with self.state() as state:
            run = MigrationRun(self.plan, self.store, self.provider, state, progress)
            if wrap is not None:
                run.open_source = lambda ds: wrap(open_source(ds))
            return run.run()

    def restore(self, out: Path, generation: int | None = None) -> Snapshot:
        r = Restorer(self.plan, self.store, self.provider)
        for name in ("profiles", "metadata", "videos"):
            assert r.restore(name, out / name, generation).dataset == name
        return Snapshot(
            restored_records(out / "profiles"),
            restored_records(out / "metadata", csv_header=CSV_HEADER),
            files_below(out / "videos"),
        )

    def verify_ok(self) -> None:
        with self.state() as state:
            report = Verifier(self.plan, self.store, self.provider, state).verify()
        assert report.problems == []
        assert report.chunks_checked == report.chunks_listed


class ChangeWhileEncoding(ProgressSink):
    """Changes records after the sync routed them: the next sync must pick the change up."""

    def __init__(self, live: LiveSource) -> None:
        self.live = live
        self.fired = False

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        if dataset == "profiles" and phase == "encoding" and not self.fired:
            self.fired = True
            uid = sorted(self.live.profiles)[0]
            self.live.profiles[uid] = self.live.profile(uid)
            self.live.profiles["u-late-insert"] = self.live.profile("u-late-insert")
            self.live.profiles.pop(sorted(self.live.profiles)[1])
            self.live.write()


def assert_same(restored: Snapshot, expected: Snapshot, when: str) -> None:
    assert restored.profiles == expected.profiles, f"profiles differ after {when}"
    assert restored.metadata == expected.metadata, f"metadata differ after {when}"
    assert restored.videos == expected.videos, f"videos differ after {when}"


def test_six_generations_of_a_mutating_source_restore_as_captured(tmp_path: Path) -> None:
    live = LiveSource(tmp_path, random.Random(5))
    live.seed(profiles=400, rows=300, videos=12)
    live.write()
    site = Site(tmp_path)
    captured: dict[int, Snapshot] = {}
    for gen in range(1, 7):
        if gen > 1:
            live.mutate()
        if gen == 3:
            live.twins.append(orjson.dumps({"user_id": sorted(live.profiles)[5], "twin": 1}))
        if gen == 5:
            live.twins.clear()
        live.write()
        captured[gen] = live.snapshot()
        during = ChangeWhileEncoding(live) if gen in (2, 4) else None
        report = site.run(during)
        for ds in report.datasets:
            assert (ds.generation, ds.committed) == (gen, True), ds
            assert ds.generation_kind == ("bulk" if gen == 1 else "sync")
        if gen > 1:
            assert any(ds.removed for ds in report.datasets)  # tombstones were written
        site.verify_ok()
        assert_same(site.restore(tmp_path / f"out{gen}"), captured[gen], f"sync {gen}")
    # The changes made during syncs 2 and 4 were not in them, and are in the next ones.
    assert b"u-late-insert" not in b"".join(captured[2].profiles)
    assert b"u-late-insert" in b"".join(captured[3].profiles)
    assert any(b"u-late-insert" in r for r in site.restore(tmp_path / "last").profiles)
    # Every earlier generation is still restorable as it was captured.
    for gen in (1, 2, 4):
        assert_same(site.restore(tmp_path / f"again{gen}", gen), captured[gen], f"again {gen}")


def test_unchanged_shards_are_left_alone_and_chains_only_grow_where_touched(
    tmp_path: Path,
) -> None:
    live = LiveSource(tmp_path, random.Random(7))
    live.seed(profiles=200, rows=10, videos=3)
    live.write()
    site = Site(tmp_path)
    site.run()
    before = {o.key for o in site.store.list()}
    uid = sorted(live.profiles)[0]
    live.profiles[uid] = live.profile(uid)  # one record of one shard
    live.write()
    report = site.run()
    added = sorted(o.key for o in site.store.list() if o.key not in before)
    profiles = next(d for d in report.datasets if d.name == "profiles")
    # one record rewritten: a replacement, not a removal
    assert (profiles.shards_changed, profiles.replaced, profiles.removed) == (1, 1, 0)
    assert profiles.records == 1
    assert all(d.shards_changed == 0 for d in report.datasets if d.name != "profiles")
    shard_files = [k for k in added if "/_generations/" not in k and "/_ledger/" not in k]
    assert len(shard_files) == 2  # one records chunk and its manifest
    (segment,) = [k for k in added if "/_ledger/" in k]  # and its shard's audit ledger segment
    assert segment.startswith("profiles/_ledger/s0")
    assert shard_files[0].startswith("profiles/g000002/s0")
    assert {k for k in added if "/_generations/" in k} == {
        f"{name}/_generations/g000002.mgc" for name in ("profiles", "metadata", "videos")
    }
    assert_same(site.restore(tmp_path / "out"), live.snapshot(), "one change")
    site.verify_ok()


def test_a_one_percent_change_uploads_about_one_percent_of_the_bytes(tmp_path: Path) -> None:
    live = LiveSource(tmp_path, random.Random(11), words=80)  # ~700-byte profiles
    live.seed(profiles=20_000, rows=0, videos=0)
    live.write()
    profiles_only = DATASETS.split("  - {name: metadata")[0].replace("shards: 4", "shards: 8")
    site = Site(tmp_path, profiles_only, chunk="256KiB")
    site.run()
    bulk = site.store.bytes_written
    for uid in live.rng.sample(sorted(live.profiles), 200):  # 1 % of the records
        live.profiles[uid] = live.profile(uid)
    live.write()
    site.store.bytes_written = 0
    report = site.run()
    synced = site.store.bytes_written
    assert report.datasets[0].records == 200
    ratio = synced / bulk
    # Manifests, a generation record and small chunks' overhead come on top of the 1 %.
    print(f"bulk {bulk:,} bytes, sync after a 1 % change {synced:,} bytes ({ratio:.2%})")
    assert 0.005 < ratio < 0.02, f"sync wrote {synced:,} bytes, the bulk {bulk:,}: {ratio:.2%}"
    Restorer(site.plan, site.store, site.provider).restore("profiles", tmp_path / "out")
    assert restored_records(tmp_path / "out") == live.snapshot().profiles


class ChangesAfterListing:
    """A source whose object changes between the listing and the read of its parts."""

    def __init__(self, inner: Source, victim: str, live: LiveSource) -> None:
        self.inner, self.victim, self.live = inner, victim, live
        self.done = False

    def list(self) -> Iterator[SourceObject]:
        yield from self.inner.list()

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        if obj.name == self.victim and not self.done:
            self.done = True
            self.live.videos[obj.name] = b"rewritten while the sync read it"
            self.live.write()
        return self.inner.read_range(obj, offset, length)

    def open(self, obj: SourceObject) -> BinaryIO:
        return self.inner.open(obj)

    def location(self, obj: SourceObject) -> str:
        return self.inner.location(obj)

    def describe(self) -> str:
        return self.inner.describe()


def test_an_object_changed_while_read_stops_the_sync_and_a_rerun_takes_the_new_content(
    tmp_path: Path,
) -> None:
    live = LiveSource(tmp_path, random.Random(3))
    live.seed(profiles=20, rows=20, videos=6)
    live.write()
    site = Site(tmp_path)
    site.run()
    victim = sorted(live.videos)[2]
    live.videos[victim] = live.rng.randbytes(150_000)
    live.write()

    def wrap(source: Source) -> Source:
        return ChangesAfterListing(source, victim, live)

    with pytest.raises(SourceError, match="changed"):
        site.run(wrap=wrap)
    # The interrupted sync is invisible: restore still gives the bulk's videos.
    assert site.restore(tmp_path / "mid").videos[victim] != live.videos[victim]
    report = site.run()
    videos = next(d for d in report.datasets if d.name == "videos")
    assert (videos.generation, videos.committed) == (2, True)
    assert_same(site.restore(tmp_path / "out"), live.snapshot(), "rerun")
    site.verify_ok()


def dataset(plan: Plan, name: str) -> DatasetPlan:
    return next(d for d in plan.datasets if d.name == name)
