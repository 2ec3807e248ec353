"""A records source that changes file by file between syncs, read through a source that counts
every byte read and every listing, and workers run in threads as `migrator run --worker`
processes would run: what the routing and sync tests share.

Tasks can be made small (a few files each) so that a handful of files makes many tasks; the
product's tasks are larger, nothing else differs.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import orjson
import pytest

import migrator.write.routing as routing_module
import migrator.write.run as run_module
from migrator.plan.model import DatasetPlan, Plan
from migrator.read.restore import Restorer
from migrator.read.verify import Verifier
from migrator.sources.base import Source, SourceObject
from migrator.sources.factory import open_source
from migrator.wiring import open_key_provider, open_state, open_store
from migrator.write.listing import build_table
from migrator.write.run import MigrationRun, RunReport
from tests.planfiles import restored_records

CSV_HEADER = b"video_id,title,duration_s"
TASK_FILES = 2  # files a routing task holds here
DATASETS = """\
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 4}
  - {name: metadata, kind: records, format: csv, source: {kind: local, path: data/metadata},
     key: video_id, shards: 3}
"""


# --- the source, file by file --------------------------------------------------------------


class Files:
    """Each dataset's source files as records; write() touches only files whose bytes changed
    (an unchanged file keeps its size and mtime: its identity)."""

    def __init__(self, root: Path, seed: int = 3) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.serial = 0
        self.files: dict[str, dict[str, list[bytes]]] = {"profiles": {}, "metadata": {}}

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def profile(self, uid: str) -> bytes:
        bio = " ".join(self.rng.choice(["video", "cats", "李雷", "🎬"]) for _ in range(12))
        return orjson.dumps({"user_id": uid, "bio": bio, "v": self._next()})

    def row(self, vid: str) -> bytes:
        title = self.rng.choice([f"clip {vid}", f'"say ""hi"", {vid}"', f'"two\nlines {vid}"'])
        return f"{vid},{title},{self._next() % 600}".encode()

    def seed(self, profile_files: int, row_files: int, per_file: int) -> None:
        for f in range(profile_files):
            self.files["profiles"][f"p{f:03d}.jsonl"] = [
                self.profile(f"u{f:03d}-{i:04d}") for i in range(per_file)
            ]
        for f in range(row_files):
            self.files["metadata"][f"m{f:03d}.csv"] = [
                self.row(f"v{f:03d}-{i:04d}") for i in range(per_file)
            ]

    def body(self, dataset: str, name: str) -> bytes:
        head = CSV_HEADER + b"\n" if dataset == "metadata" else b""
        return head + b"".join(r + b"\n" for r in self.files[dataset][name])

    def write(self) -> None:
        for dataset, files in self.files.items():
            folder = self.root / "data" / dataset
            folder.mkdir(parents=True, exist_ok=True)
            for path in folder.iterdir():
                if path.name not in files:
                    path.unlink()
            for name in files:
                path, body = folder / name, self.body(dataset, name)
                if not path.exists() or path.read_bytes() != body:
                    tmp = path.with_name(name + ".new")
                    tmp.write_bytes(body)
                    tmp.replace(path)

    def rename(self, dataset: str, old: str, new: str) -> None:
        """A rename on disk: the same bytes, size and mtime under a new name."""
        folder = self.root / "data" / dataset
        (folder / old).rename(folder / new)
        self.files[dataset][new] = self.files[dataset].pop(old)

    def sizes(self, dataset: str, names: set[str] | None = None) -> dict[str, int]:
        return {
            n: len(self.body(dataset, n))
            for n in self.files[dataset]
            if names is None or n in names
        }

    def records(self, dataset: str) -> Counter[bytes]:
        return Counter(r for rows in self.files[dataset].values() for r in rows)


# --- a source that counts what is read -------------------------------------------------------


class Tally:
    """Bytes read per (dataset, file), and listings per dataset, over every worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read: Counter[tuple[str, str]] = Counter()
        self.listings: Counter[str] = Counter()

    def add(self, dataset: str, name: str, n: int) -> None:
        with self.lock:
            self.read[(dataset, name)] += n

    def of(self, dataset: str) -> dict[str, int]:
        return {name: n for (ds, name), n in self.read.items() if ds == dataset and n}

    def clear(self) -> None:
        self.read.clear()
        self.listings.clear()


class CountingReader:
    def __init__(self, inner: BinaryIO, count: Callable[[int], None]) -> None:
        self.inner, self.count = inner, count

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.count(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self.inner.readinto(buffer)  # type: ignore[attr-defined]
        self.count(n or 0)
        return int(n or 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __enter__(self) -> CountingReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.inner.close()


class CountingSource:
    """A source whose reads are tallied, optionally slowed per file (so that workers started
    together each get some of the tasks)."""

    def __init__(self, inner: Source, dataset: str, tally: Tally, delay: float = 0.0) -> None:
        self.inner, self.dataset, self.tally, self.delay = inner, dataset, tally, delay

    def list(self) -> Iterator[SourceObject]:
        with self.tally.lock:
            self.tally.listings[self.dataset] += 1
        return self.inner.list()

    def open(self, obj: SourceObject) -> BinaryIO:
        time.sleep(self.delay)
        fh = self.inner.open(obj)
        reader = CountingReader(fh, functools.partial(self.tally.add, self.dataset, obj.name))
        return reader  # type: ignore[return-value]

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        data = self.inner.read_range(obj, offset, length)
        self.tally.add(self.dataset, obj.name, len(data))
        return data

    def location(self, obj: SourceObject) -> str:
        return self.inner.location(obj)

    def describe(self) -> str:
        return self.inner.describe()


# --- workers in threads ------------------------------------------------------------------------


def small_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routing tasks of TASK_FILES files: a handful of files makes many tasks."""
    monkeypatch.setattr(
        routing_module, "build_table", functools.partial(build_table, task_files=TASK_FILES)
    )


def run_workers(
    plan: Plan, tally: Tally, count: int, monkeypatch: pytest.MonkeyPatch, delay: float = 0.02
) -> list[tuple[RunReport, int]]:
    """`count` workers (MigrationRun.run(worker=True), as `migrator run --worker` runs), each in
    a thread with its own state store connection and worker id, started together as one
    cohort; returns each one's report and the source bytes its routing read."""
    cohort = time.time()
    monkeypatch.setattr(run_module, "process_started_at", lambda: cohort)
    time.sleep(0.01)  # the last generation was opened before this cohort started
    start = threading.Barrier(count)
    results: list[tuple[RunReport, int] | BaseException | None] = [None] * count

    def work(i: int) -> None:
        try:
            with open_state(plan) as state:
                run = MigrationRun(plan, open_store(plan), open_key_provider(plan), state)
                run.worker_id = f"w{i}"

                def counted(ds: DatasetPlan) -> Source:
                    return CountingSource(open_source(ds), ds.name, tally, delay)

                run.open_source = counted
                start.wait()
                report = run.run(worker=True, claim=1)
                results[i] = (report, run.bytes_routed)
        except BaseException as exc:  # reported below, in the test's thread
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    out: list[tuple[RunReport, int]] = []
    for r in results:
        if isinstance(r, BaseException):
            raise r
        assert r is not None, "a worker did not finish"
        out.append(r)
    return out


def restored(plan: Plan, out: Path, dataset: str) -> Counter[bytes]:
    Restorer(plan, open_store(plan), open_key_provider(plan)).restore(dataset, out / dataset)
    header = CSV_HEADER if dataset == "metadata" else None
    return restored_records(out / dataset, csv_header=header)


def assert_whole(plan: Plan, files: Files, out: Path) -> None:
    for dataset in ("profiles", "metadata"):
        assert restored(plan, out, dataset) == files.records(dataset), dataset
    with open_state(plan) as state:
        report = Verifier(plan, open_store(plan), open_key_provider(plan), state).verify()
    assert report.problems == []
