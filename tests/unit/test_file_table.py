"""The file table: which files a generation reads, which it carries over, which it retires."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.errors import StateError
from migrator.plan.model import Plan
from migrator.repository.names import file_table_path, routed_dir, routed_file_path
from migrator.sources.base import SourceObject
from migrator.write.listing import FileTable, build_table, load_table, prune_routed


def obj(name: str, size: int = 10, version: str = "v1") -> SourceObject:
    return SourceObject(name, size, version)


def test_a_bulk_reads_every_file_in_tasks_of_about_the_task_size() -> None:
    listing = [obj(f"f{i}", size=10) for i in range(7)]
    table = build_table(1, listing, None, "sig", task_bytes=25)
    assert table.base == 0 and not table.incremental and table.retired == ()
    assert [f.origin for f in table.files] == [(1, i) for i in range(7)]
    assert table.tasks == ((0, 1, 2), (3, 4, 5), (6,))
    assert table.routed_here() == list(range(7))


def test_a_sync_reads_only_new_and_changed_files_and_retires_changed_and_removed() -> None:
    base = build_table(1, [obj("a"), obj("b"), obj("c"), obj("d")], None, "sig")
    listing = [obj("a"), obj("b", version="v2"), obj("d", size=11), obj("e")]
    table = build_table(2, listing, base, "sig")
    assert table.base == 1 and table.incremental
    assert [f.origin for f in table.files] == [(1, 0), (2, 0), (2, 1), (2, 2)]
    assert [f.name for f in table.retired] == ["b", "c", "d"]
    assert table.routed_here() == [1, 2, 3]


def test_no_change_means_no_task() -> None:
    listing = [obj("a"), obj("b")]
    base = build_table(1, listing, None, "sig")
    table = build_table(2, listing, base, "sig")
    assert table.tasks == () and table.retired == ()
    assert table.listing_digest == base.listing_digest


def test_listing_again_keeps_what_an_interrupted_run_routed_unless_it_changed() -> None:
    first = build_table(3, [obj("a"), obj("b"), obj("c")], None, "sig")
    again = build_table(3, [obj("a"), obj("b", version="v9"), obj("c"), obj("d")], None, "sig",
                        attempt=first)  # fmt: skip
    assert [f.origin for f in again.files] == [(3, 0), (3, 3), (3, 2), (3, 4)]
    assert again.version != first.version


def test_a_table_round_trips_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    table = build_table(2, [obj("a"), obj("ü/b", 5, "e\0tag")], None, "sig")
    path = tmp_path / "files.zst"
    table.save(path)
    assert load_table(path) == table
    assert load_table(tmp_path / "none") is None
    path.write_bytes(b"garbage")
    with pytest.raises(StateError, match=r"files\.zst: unreadable file table"):
        load_table(path)


def test_prune_keeps_only_what_the_next_sync_reads(tmp_path: Path) -> None:
    plan = Plan.model_construct(state_dir=tmp_path)
    first = build_table(1, [obj("a"), obj("b")], None, "sig")
    second = build_table(2, [obj("a"), obj("b", version="v2")], first, "sig")
    tables: dict[int, FileTable] = {1: first, 2: second}
    for gen, table in tables.items():
        folder = routed_dir(tmp_path, "ds", gen)
        table.save(file_table_path(folder))
        for f in table.files:
            if f.origin[0] == gen:
                for part in ("records", "digests", "index", "dead"):
                    routed_file_path(folder, f.origin[1], part).write_bytes(b"x")
    prune_routed(plan, "ds", 2)
    left = sorted(
        str(p.relative_to(routed_dir(tmp_path, "ds", 0).parent))
        for p in routed_dir(tmp_path, "ds", 0).parent.rglob("*")
        if p.is_file()
    )
    assert left == [
        "g000001/f00000000.dead",
        "g000001/f00000000.digests",
        "g000001/f00000000.index",
        "g000002/f00000000.dead",
        "g000002/f00000000.digests",
        "g000002/f00000000.index",
        "g000002/files.zst",
    ]
