"""The gate's source side from routed digests: the same sums and lag as reading every record.

Routed output is written here by the routing primitives themselves (route_file into a
RoutedFileWriter, file tables from build_table), over local files, with no state store: the
gate then takes the newest table on disk whose files are all routed.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from migrator.codec.digests import (
    DIGEST_ENTRY,
    key_hash,
    record_digest,
    records_map_from_spool,
    spool_digest,
)
from migrator.errors import StateError
from migrator.plan.model import DatasetPlan, Plan, load_plan
from migrator.read.records_lag import changed_keys, keyed, lag_between, lag_of_change
from migrator.read.routed_digests import entries_sum, routed_table
from migrator.read.source_digests import records_source
from migrator.repository.names import digests_path, file_table_path, routed_dir, routed_file_path
from migrator.sources.base import SourceObject
from migrator.sources.factory import open_source
from migrator.write.listing import FileTable, build_table
from migrator.write.route import BlockRunner, RecordsSpec, route_file, scan_digests
from migrator.write.routed import RoutedFileWriter
from tests.planfiles import write_plan

SHARDS = 4


def entry(key: bytes, record: bytes) -> bytes:
    return DIGEST_ENTRY.pack(key_hash(key), record_digest(record), len(record) + 1)


def test_entries_sum_is_the_digest_sum_with_every_carry() -> None:
    rng = random.Random(3)
    top = b"\xff" * 16  # digests that carry out of the low word and wrap around 2**128
    data = b"".join(
        DIGEST_ENTRY.pack(rng.randbytes(16), top if i % 3 else rng.randbytes(16), i)
        for i in range(1000)
    )
    assert entries_sum(data) == spool_digest(data)
    assert entries_sum(b"") == (0, 0)


def test_the_lag_from_changed_files_alone_equals_comparing_every_key() -> None:
    """Files then and now; some unchanged, some changed or gone, keys repeated across files."""
    rng = random.Random(11)
    for _ in range(200):
        keys = [f"k{i}".encode() for i in range(rng.randrange(1, 12))]

        def files(keys: list[bytes] = keys) -> bytes:
            return b"".join(
                entry(rng.choice(keys), f"r{rng.randrange(4)}".encode())
                for _ in range(rng.randrange(0, 12))
            )

        unchanged, then = files(), files()
        now = then if rng.random() < 0.2 else files()
        whole = lag_between(keyed(unchanged + then), keyed(unchanged + now))
        old, new = keyed(then), keyed(now)
        diff = changed_keys(old, new)
        assert lag_of_change(old, new, diff, keyed(unchanged, diff)) == whole
        assert keyed(unchanged, None) == records_map_from_spool(unchanged)


def test_keyed_folds_the_entries_of_the_keys_asked_for() -> None:
    data = entry(b"a", b"1") + entry(b"b", b"2") + entry(b"a", b"3")
    assert keyed(data, set()) == {} and keyed(data, {b"x" * 16}) == {}
    (a,) = keyed(data, {key_hash(b"a")}).values()
    assert (a.records, a.nbytes) == (2, 4)


class Folder:
    """A folder of JSONL files and the generations a sync would route of it."""

    def __init__(self, root: Path) -> None:
        datasets = f"""\
  - {{name: events, kind: records, format: jsonl, source: {{kind: local, path: data}},
     key: id, shards: {SHARDS}}}
"""
        self.plan: Plan = load_plan(write_plan(root, datasets=datasets), check_sources=False)
        self.ds: DatasetPlan = self.plan.datasets[0]
        self.folder = root / "data"
        self.folder.mkdir()
        self.rng = random.Random(7)
        self.table: FileTable | None = None

    def put(self, name: str, keys: list[str]) -> None:
        docs = [orjson.dumps({"id": k, "x": self.rng.randrange(10**9)}) for k in keys]
        (self.folder / name).write_bytes(b"".join(d + b"\n" for d in docs))

    def spec(self) -> RecordsSpec:
        return RecordsSpec("events", 0, "jsonl", "id", SHARDS, open_source(self.ds))

    def route(self, generation: int) -> FileTable:
        """What a sync's routing leaves: the table, and routed output of its new files."""
        spec = self.spec()
        listing = list(spec.source.list())
        table = build_table(generation, listing, self.table, task_files=2)
        folder = routed_dir(self.plan.state_dir, "events", generation)
        with BlockRunner(1) as runner:
            for position in table.routed_here():
                f = table.files[position]
                writer = RoutedFileWriter(folder, f.origin[1], SHARDS, 1 << 20)
                src = SourceObject(f.name, f.size, f.version)
                header, line = route_file(spec, src, writer, None, runner)
                writer.finish(header, line, 0)
        table.save(file_table_path(folder))
        self.table = table
        return table

    def whole(self, tmp: Path) -> list[tuple[int, int]]:
        scan_digests(self.spec(), tmp, buffer_budget=1 << 20)
        return [spool_digest(digests_path(tmp, s).read_bytes()) for s in range(SHARDS)]

    def gate(self) -> list[tuple[int, int]]:
        found = records_source(self.plan, self.ds, open_source(self.ds), None, (), 0)
        assert found.lags == [None] * SHARDS  # no state store: no inventory to compare with
        self.found = found
        return [(s.digest, s.records) for s in found.shards]


@pytest.fixture
def source(tmp_path: Path) -> Folder:
    src = Folder(tmp_path)
    for f in range(6):
        src.put(f"f{f}.jsonl", [f"k{f}-{i}" for i in range(30)])
    return src


def test_the_sums_from_routed_digests_equal_a_whole_scan_over_several_syncs(
    source: Folder, tmp_path: Path
) -> None:
    assert source.gate() == source.whole(tmp_path / "w0")  # nothing routed yet: read whole
    assert (source.found.reused, source.found.read, source.found.table) == (0, 6, None)
    source.route(1)
    steps = [
        lambda: source.put("f2.jsonl", [f"k2-{i}" for i in range(30)]),  # changed
        lambda: source.put("f9.jsonl", ["k9-0", "k0-1"]),  # added, a key repeated
        lambda: (source.folder / "f4.jsonl").unlink(),  # removed
        lambda: source.put("f1.jsonl", [f"k1-{i}" for i in range(31)]),  # appended
    ]
    for generation, step in enumerate(steps, start=2):
        assert source.gate() == source.whole(tmp_path / f"a{generation}")
        assert source.found.read == 0 and source.found.table == generation - 1
        step()
        assert source.gate() == source.whole(tmp_path / f"b{generation}")
        assert source.found.read == (0 if generation == 4 else 1)
        source.route(generation)


def test_an_unfinished_table_is_passed_over_and_vanished_output_is_read_again(
    source: Folder, tmp_path: Path
) -> None:
    first = source.route(1)
    source.put("f3.jsonl", ["k3-new"])
    second = source.route(2)
    # Generation 2's routing is unfinished (a file's index is missing): table 1 serves.
    (slot,) = {f.origin[1] for f in second.files if f.origin[0] == 2}
    routed_file_path(routed_dir(source.plan.state_dir, "events", 2), slot, "index").unlink()
    assert routed_table(source.plan, "events", None) == first
    assert source.gate() == source.whole(tmp_path / "w1")
    assert source.found.read == 1 and source.found.table == 1
    # An unchanged file's routed digests are gone too (pruned meanwhile): read whole.
    folder = routed_dir(source.plan.state_dir, "events", 1)
    routed_file_path(folder, first.files[0].origin[1], "digests").unlink()
    assert source.gate() == source.whole(tmp_path / "w2")
    assert source.found.table is None and source.found.read == 6


def test_routed_digests_shorter_than_their_index_are_named(source: Folder) -> None:
    table = source.route(1)
    folder = routed_dir(source.plan.state_dir, "events", 1)
    path = routed_file_path(folder, table.files[2].origin[1], "digests")
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(StateError, match=rf"{path.name}: routed digests are shorter"):
        source.gate()
