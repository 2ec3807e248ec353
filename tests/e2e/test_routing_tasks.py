"""Routing as tasks many workers share: each source byte is read once per generation across all
of them, whether they run whole syncs or routing steps alone; the source is listed once per
generation; a worker that comes as routing completes does not mix two listings into one
generation; an interrupted sync resumes with the source as it then is.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import migrator.write.routing as routing_module
import migrator.write.run as run_module
from migrator.errors import SourceError
from migrator.plan.model import load_plan
from migrator.repository.names import file_table_path, routed_dir
from migrator.sources.base import SourceObject
from migrator.sources.factory import open_source
from migrator.state.db import StateDB
from migrator.wiring import open_key_provider, open_state, open_store
from migrator.write import encoding
from migrator.write.listing import load_table
from migrator.write.run import MigrationRun
from tests.e2e.changing_source import (
    DATASETS,
    CountingSource,
    Files,
    Tally,
    assert_whole,
    restored,
    run_workers,
    small_tasks,
)
from tests.planfiles import write_plan


def test_three_workers_read_each_source_byte_once_in_the_bulk_and_in_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_tasks(monkeypatch)
    files = Files(tmp_path)
    files.seed(profile_files=14, row_files=8, per_file=30)
    files.write()
    # Short leases: a worker waiting for another's task looks again a quarter of a lease later.
    plan = load_plan(write_plan(tmp_path, datasets=DATASETS, extra="lease_seconds: 2"))
    tally = Tally()

    bulk = run_workers(plan, tally, 3, monkeypatch, delay=0.05)
    for dataset in ("profiles", "metadata"):
        assert tally.of(dataset) == files.sizes(dataset), dataset  # every file, read once
    total = sum(files.sizes("profiles").values()) + sum(files.sizes("metadata").values())
    assert sum(n for _, n in bulk) == total
    assert sum(1 for _, n in bulk if n) >= 2, "the routing tasks were not shared"
    for report, _ in bulk:
        assert all(d.committed and d.generation == 1 for d in report.datasets)
    table = load_table(file_table_path(routed_dir(plan.state_dir, "profiles", 1)))
    assert table is not None and len(table.tasks) == 7  # 14 files, two a task
    assert_whole(plan, files, tmp_path / "out1")

    # A sync: one file edited, one appended to, one added, one removed, the rest unchanged.
    tally.clear()
    edited = files.files["profiles"]["p003.jsonl"]
    edited[5] = files.profile(f"u003-{5:04d}")
    files.files["metadata"]["m002.csv"].append(files.row("v-appended"))
    files.files["profiles"]["p100.jsonl"] = [files.profile(f"u-new-{i}") for i in range(9)]
    del files.files["profiles"]["p007.jsonl"]
    files.write()
    synced = run_workers(plan, tally, 3, monkeypatch)
    assert tally.of("profiles") == files.sizes("profiles", {"p003.jsonl", "p100.jsonl"})
    assert tally.of("metadata") == files.sizes("metadata", {"m002.csv"})
    changed = sum(tally.of("profiles").values()) + sum(tally.of("metadata").values())
    assert sum(n for _, n in synced) == changed
    for report, _ in synced:
        assert all(d.committed and d.generation == 2 for d in report.datasets)
    assert_whole(plan, files, tmp_path / "out2")

    # Nothing changed: nothing is read.
    tally.clear()
    idle = run_workers(plan, tally, 3, monkeypatch)
    assert tally.of("profiles") == {} and tally.of("metadata") == {}
    assert sum(n for _, n in idle) == 0
    assert_whole(plan, files, tmp_path / "out3")


def test_route_alone_reads_each_byte_once_across_workers_and_reports_the_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MigrationRun.route (Dagster's routing step): one worker lists, each routes the tasks
    it is given, the last one finishes; then run encodes without reading the source again."""
    small_tasks(monkeypatch)
    files = Files(tmp_path)
    files.seed(profile_files=9, row_files=1, per_file=20)
    files.write()
    plan = load_plan(write_plan(tmp_path, datasets=DATASETS))
    tally = Tally()
    with open_state(plan) as state:

        def worker(name: str) -> MigrationRun:
            run = MigrationRun(plan, open_store(plan), open_key_provider(plan), state)
            run.worker_id = name
            run.open_source = lambda ds: CountingSource(open_source(ds), ds.name, tally)
            return run

        listed = worker("lister").route("profiles", set())
        assert (listed.tasks, listed.files, listed.files_to_route) == (5, 9, 9)
        assert (listed.bytes_routed, listed.complete) == (0, False)
        assert tally.of("profiles") == {}
        first = worker("a").route("profiles", {0, 2, 4})
        assert not first.complete
        second = worker("b").route("profiles", {1, 3})
        assert second.complete
        assert first.bytes_routed + second.bytes_routed == sum(files.sizes("profiles").values())
        assert tally.of("profiles") == files.sizes("profiles")
        again = worker("c").route("profiles")
        assert again.complete and again.bytes_routed == 0
        encoder = worker("d")
        encoder.run({"profiles"})
        assert encoder.bytes_routed == 0
    assert tally.of("profiles") == files.sizes("profiles")  # the encoders read no source file
    assert restored(plan, tmp_path / "out", "profiles") == files.records("profiles")


def test_routing_steps_list_the_source_once_per_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routing steps run one after another (Dagster's routing partitions, or workers that
    come and go between tasks): the first lists the generation, the others use its file
    table. Listing again costs a whole listing per step (hours at tens of millions of
    objects) and renumbers the tasks the steps were given."""
    small_tasks(monkeypatch)
    files = Files(tmp_path)
    files.seed(profile_files=9, row_files=1, per_file=20)
    files.write()
    plan = load_plan(write_plan(tmp_path, datasets=DATASETS))
    tally = Tally()
    with open_state(plan) as state:
        for name, tasks in (("lister", set()), ("a", {0, 2, 4}), ("b", {1, 3})):
            run = MigrationRun(plan, open_store(plan), open_key_provider(plan), state)
            run.worker_id = name
            run.open_source = lambda ds: CountingSource(open_source(ds), ds.name, tally)
            run.route("profiles", tasks)
    assert tally.of("profiles") == files.sizes("profiles")
    assert tally.listings["profiles"] == 1, "each routing step listed the source again"


# --- a worker that looks at routing just as another finishes it ---------------------------------


def test_a_worker_arriving_as_routing_completes_leaves_one_listing_in_the_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A routes a sync's only task; worker B, started meanwhile, finds it routed and
    goes for the routing lock just as A takes it to finish routing, and gets it after. The
    source changes in between (it is live). One generation holds one listing: every shard
    is written from the same file table, whichever it is; never shards from two (the next
    sync, comparing with the last table, would then miss a change for good)."""
    files = Files(tmp_path, seed=41)
    files.seed(profile_files=6, row_files=1, per_file=30)
    files.write()
    plan = load_plan(write_plan(tmp_path, datasets=DATASETS, extra="lease_seconds: 2"))
    tally = Tally()
    run_workers(plan, tally, 1, monkeypatch, delay=0)  # the bulk
    files.files["profiles"]["p003.jsonl"][0] = files.profile("u003-0000")
    files.write()
    before = files.records("profiles")

    a_routing, b_waiting, a_done = (threading.Event() for _ in range(3))

    def thread() -> str:
        return threading.current_thread().name

    real_route_one = routing_module.Routing.route_one

    def route_one(self: routing_module.Routing, *args: Any, **kwargs: Any) -> Any:
        if thread() == "A":
            a_routing.set()
        return real_route_one(self, *args, **kwargs)

    real_finish = routing_module.Routing.finish

    def finish(self: routing_module.Routing, *args: Any, **kwargs: Any) -> Any:
        if thread() == "A" and self.ds.name == "profiles":
            b_waiting.wait(10)  # B is about to take the routing lock
        return real_finish(self, *args, **kwargs)

    real_lock = StateDB.lock

    def lock(self: StateDB, name: str) -> Any:
        if thread() == "B" and name == "profiles.routing" and not b_waiting.is_set():
            b_waiting.set()
            a_done.wait(10)  # ... and takes it only once A finished routing
            for i in range(12):  # the live source changes meanwhile
                files.files["profiles"]["p004.jsonl"].append(files.profile(f"u-late-{i}"))
            files.write()
        return real_lock(self, name)

    real_write = encoding.write_records

    def write_records(scope: Any, *args: Any, **kwargs: Any) -> Any:
        if thread() == "A" and scope.ds.name == "profiles" and not a_done.is_set():
            a_done.set()
            time.sleep(0.5)  # A encodes its first shard after B went on
        return real_write(scope, *args, **kwargs)

    monkeypatch.setattr(routing_module.Routing, "route_one", route_one)
    monkeypatch.setattr(routing_module.Routing, "finish", finish)
    monkeypatch.setattr(StateDB, "lock", lock)
    monkeypatch.setattr(run_module, "write_records", write_records)
    cohort = time.time()
    monkeypatch.setattr(run_module, "process_started_at", lambda: cohort)
    time.sleep(0.01)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with open_state(plan) as state:
                run = MigrationRun(plan, open_store(plan), open_key_provider(plan), state)
                run.worker_id = name
                run.run({"profiles"}, worker=True, claim=1)
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=work, args=("A",), name="A")
    a.start()
    assert a_routing.wait(30)
    b = threading.Thread(target=work, args=("B",), name="B")
    b.start()
    a.join(60)
    b.join(60)
    assert not (a.is_alive() or b.is_alive()), "a worker hangs"
    assert not errors, errors
    assert b_waiting.is_set(), "B never went for the routing lock"
    after = files.records("profiles")
    restored_gen2 = restored(plan, tmp_path / "out2", "profiles")
    assert restored_gen2 in (before, after), "generation 2 holds shards of two listings"
    # Whatever generation 2 took, the next sync brings the destination to the source.
    monkeypatch.undo()
    run_workers(plan, tally, 1, monkeypatch, delay=0)
    assert restored(plan, tmp_path / "out3", "profiles") == after


def test_a_sync_interrupted_while_routing_resumes_and_reads_no_routed_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after routing two of a sync's four changed files. Before the rerun one of
    those two changes again, one file not routed yet is removed, and a file is added. The
    rerun does not read the unchanged routed file again (its index is its checkpoint), and
    finishes the generation; the generation holds nothing the source never held, and the
    next sync brings the destination to the source."""
    small_tasks(monkeypatch)
    files = Files(tmp_path, seed=43)
    files.seed(profile_files=8, row_files=2, per_file=25)
    files.write()
    plan = load_plan(write_plan(tmp_path, datasets=DATASETS, extra="lease_seconds: 2"))
    tally = Tally()
    run_workers(plan, tally, 1, monkeypatch, delay=0)
    profiles = files.files["profiles"]
    changed = ("p001.jsonl", "p002.jsonl", "p004.jsonl", "p006.jsonl")
    for name in changed:
        profiles[name].append(files.profile(f"u-{name}"))
    files.write()
    listed = files.records("profiles")

    routed: list[str] = []
    real_route_one = routing_module.Routing.route_one

    def route_one(self: routing_module.Routing, src: SourceObject, *args: Any) -> Any:
        if len(routed) == 2:
            raise KeyboardInterrupt  # Ctrl-C as the third file starts
        index = real_route_one(self, src, *args)
        routed.append(src.name)
        return index

    monkeypatch.setattr(routing_module.Routing, "route_one", route_one)
    with pytest.raises(KeyboardInterrupt):
        run_workers(plan, tally, 1, monkeypatch, delay=0)
    assert len(routed) == 2
    monkeypatch.setattr(routing_module.Routing, "route_one", real_route_one)

    again, kept = routed
    gone = next(n for n in changed if n not in routed)
    profiles[again][0] = files.profile("u-changed-again")  # routed, then changed again
    del profiles[gone]  # listed, then removed before it was routed
    profiles["p050.jsonl"] = [files.profile(f"u050-{i}") for i in range(5)]
    files.write()
    tally.clear()
    (report, read), *_ = run_workers(plan, tally, 1, monkeypatch, delay=0)
    (d,) = [d for d in report.datasets if d.name == "profiles"]
    assert (d.generation, d.committed) == (2, True)
    assert kept not in tally.of("profiles"), "a routed, unchanged file was read again"
    assert read == sum(tally.of("profiles").values())
    now = files.records("profiles")
    held = restored(plan, tmp_path / "out2", "profiles")
    assert held - (listed | now) == Counter(), "generation 2 holds records the source never had"
    run_workers(plan, tally, 1, monkeypatch, delay=0)
    assert_whole(plan, files, tmp_path / "out3")


def test_a_file_removed_between_the_listing_and_its_routing_does_not_wedge_the_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live source loses a file after the sync listed it and before it was read. The run
    may stop on it (naming it) or go on without it; either way a rerun finishes the
    generation, and the next sync leaves the destination equal to the source."""
    small_tasks(monkeypatch)
    files = Files(tmp_path, seed=47)
    files.seed(profile_files=6, row_files=1, per_file=20)
    files.write()
    plan = load_plan(write_plan(tmp_path, datasets=DATASETS, extra="lease_seconds: 2"))
    tally = Tally()
    run_workers(plan, tally, 1, monkeypatch, delay=0)
    profiles = files.files["profiles"]
    for name in ("p001.jsonl", "p003.jsonl", "p005.jsonl"):
        profiles[name].append(files.profile(f"u-{name}"))
    files.write()

    real_route_one = routing_module.Routing.route_one
    removed: list[str] = []

    def route_one(self: routing_module.Routing, src: SourceObject, *args: Any) -> Any:
        if not removed:  # the first file it is about to read is gone
            removed.append(src.name)
            del profiles[src.name]
            files.write()
        return real_route_one(self, src, *args)

    monkeypatch.setattr(routing_module.Routing, "route_one", route_one)
    try:
        run_workers(plan, tally, 1, monkeypatch, delay=0)
    except SourceError as exc:
        assert removed[0] in str(exc)
    monkeypatch.setattr(routing_module.Routing, "route_one", real_route_one)
    (report, _), *_ = run_workers(plan, tally, 1, monkeypatch, delay=0)
    assert all(d.committed for d in report.datasets)
    run_workers(plan, tally, 1, monkeypatch, delay=0)
    assert_whole(plan, files, tmp_path / "out")
