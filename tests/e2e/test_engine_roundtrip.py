"""Migrate, verify and restore whole plans: what comes back equals the source, byte for byte."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from migrator.errors import StoreError
from migrator.keys.local import LocalKeyProvider
from migrator.plan.model import Plan, load_plan
from migrator.read.restore import Restorer
from migrator.read.verify import Verifier, VerifyReport
from migrator.repository.names import manifest_key
from migrator.sharding import shard_of
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.stores.memory import MemoryStore
from migrator.write.run import MigrationRun, RunReport
from tests.planfiles import (
    METADATA,
    PROFILES,
    VIDEOS,
    files_below,
    restored_records,
    run_cli,
    split_records,
    write_metadata_csv,
    write_objects,
    write_plan,
    write_profiles,
)

CSV_HEADER = b"video_id,title,duration_s"
# Empty file (with a non-ASCII name), one byte, just under / at / over one 64KiB part, several
# parts, and a small one.
OBJECT_SIZES = [0, 1, 65535, 65536, 65537, 200_000, 3000, 70_000]


@dataclass
class Source:
    root: Path
    profiles: Counter[bytes]
    metadata: Counter[bytes]
    videos: dict[str, bytes]


def write_source(root: Path, *, profiles: int = 1500, rows: int = 9000) -> Source:
    """Records spread over several chunks a shard, with oversize records; objects of all sizes."""
    recs = write_profiles(root / "data/profiles", profiles)
    # One record larger than a whole chunk, and a last line without its line feed.
    big = orjson.dumps({"user_id": "big-one", "bio": "x" * 150_000, "n": 1})
    tail = orjson.dumps({"user_id": 123456, "bio": "no line feed at the end"})
    (root / "data/profiles/zz-odd.jsonl").write_bytes(big + b"\n" + tail)
    recs += [big, tail]

    csv_rows = write_metadata_csv(root / "data/metadata", rows)
    # A CSV row larger than a chunk: quoted commas, quotes and line feeds all through it.
    big_row = big_csv_row("v9999999", 3000)
    (root / "data/metadata/zz-big.csv").write_bytes(CSV_HEADER + b"\n" + big_row + b"\n")
    csv_rows.append(big_row)

    videos = write_objects(root / "data/videos", OBJECT_SIZES)
    return Source(root, Counter(recs), Counter(csv_rows), videos)


def big_csv_row(video_id: str, repeats: int) -> bytes:
    """A row whose title field is 34 * repeats characters of quotes, commas and line feeds."""
    title = ('a "quoted", part\nand a line feed ' * repeats).replace('"', '""')
    return f'{video_id},"{title}",7'.encode()


def open_api(plan: Plan, store: ObjectStore) -> tuple[LocalKeyProvider, StateDB]:
    assert plan.keys.kek_file is not None
    return LocalKeyProvider(plan.keys.kek_file), StateDB.sqlite_file(
        plan.state_dir / "state.sqlite"
    )


def migrate(plan: Plan, store: ObjectStore) -> RunReport:
    provider, state = open_api(plan, store)
    with state:
        return MigrationRun(plan, store, provider, state).run()


def verify(plan: Plan, store: ObjectStore, **kwargs: object) -> VerifyReport:
    provider, state = open_api(plan, store)
    with state:
        return Verifier(plan, store, provider, state, **kwargs).verify()  # type: ignore[arg-type]


def restore(plan: Plan, store: ObjectStore, dataset: str, out: Path) -> None:
    provider, _ = open_api(plan, store)
    Restorer(plan, store, provider).restore(dataset, out)


def check_restored(source: Source, out: Path) -> None:
    assert restored_records(out / "profiles") == source.profiles
    assert restored_records(out / "metadata", csv_header=CSV_HEADER) == source.metadata
    assert files_below(out / "videos") == source.videos


def make_store(kind: str, root: Path) -> ObjectStore:
    return MemoryStore() if kind == "memory" else LocalStore(root / "dest" / "t")


@pytest.fixture(params=["memory", "local"])
def store_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


# --- through the Python API ----------------------------------------------------------------


def test_roundtrip_records_and_objects(tmp_path: Path, store_kind: str) -> None:
    source = write_source(tmp_path)
    plan = load_plan(write_plan(tmp_path, datasets=PROFILES + METADATA + VIDEOS))
    store = make_store(store_kind, tmp_path)

    report = migrate(plan, store)
    by_name = {d.name: d for d in report.datasets}
    assert by_name["profiles"].records == sum(source.profiles.values())
    assert by_name["metadata"].records == sum(source.metadata.values())
    assert by_name["videos"].bytes_in == sum(len(b) for b in source.videos.values())
    assert report.chunks_skipped == 0
    # Several chunks a shard, so chunk cuts (and the oversize records) are exercised.
    assert by_name["profiles"].chunks_written > 2 * 4
    assert by_name["metadata"].chunks_written > 2 * 3
    assert by_name["videos"].chunks_written == sum(max(1, -(-s // 65536)) for s in OBJECT_SIZES)

    checked = verify(plan, store)
    assert checked.problems == []
    assert checked.shards == 4 + 3 + 3
    assert checked.chunks_checked == checked.chunks_listed == report.chunks_written
    assert checked.records == sum(source.profiles.values()) + sum(source.metadata.values())

    out = tmp_path / "restored"
    for name in ("profiles", "metadata", "videos"):
        restore(plan, store, name, out / name)
    check_restored(source, out)
    # One restored file a records shard, each holding exactly that shard's records.
    assert sorted(p.name for p in (out / "profiles").iterdir()) == [
        f"shard-{s:05d}.jsonl" for s in range(4)
    ]
    assert sorted(p.name for p in (out / "metadata").iterdir()) == [
        f"shard-{s:05d}.csv" for s in range(3)
    ]


def test_a_sync_of_an_unchanged_source_writes_only_its_generation_records(
    tmp_path: Path,
) -> None:
    write_source(tmp_path, profiles=600, rows=2000)
    plan = load_plan(write_plan(tmp_path, datasets=PROFILES + METADATA + VIDEOS))
    store = MemoryStore()
    first = migrate(plan, store)
    puts = store.requests["put"]
    keys = {o.key for o in store.list()}

    second = migrate(plan, store)
    assert second.chunks_written == 0
    # one sealed generation record per dataset: when the source was last compared
    assert store.requests["put"] == puts + len(plan.datasets)
    assert {o.key for o in store.list() if o.key not in keys} == {
        f"{ds.name}/_generations/g000002.mgc" for ds in plan.datasets
    }
    for a, b in zip(first.datasets, second.datasets, strict=True):
        assert (a.generation, a.generation_kind, b.generation, b.generation_kind) == (
            1,
            "bulk",
            2,
            "sync",
        )
        assert (b.name, b.chunks_written, b.shards_changed, b.removed) == (a.name, 0, 0, 0)
        assert b.committed
    assert verify(plan, store).problems == []


class FailingStore(MemoryStore):
    """Fails one put, the n-th, as a store outage would."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        if self.requests["put"] + 1 == self.fail_at:
            self.fail_puts = 1
        super().put(key, data, metadata)


@pytest.mark.parametrize("when", [0.0, 0.1, 0.35, 0.6, 0.85, 1.0])
def test_failed_put_then_rerun_completes(tmp_path: Path, when: float) -> None:
    """Any put may fail (a key, a chunk, a manifest, the very last one); a rerun finishes."""
    source = write_source(tmp_path, profiles=600, rows=2000)
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "data").symlink_to(tmp_path / "data")
    plan = load_plan(write_plan(tmp_path / "clean", datasets=PROFILES + METADATA + VIDEOS))
    clean = MemoryStore()
    chunks = migrate(plan, clean).chunks_written
    puts = clean.requests["put"]

    plan = load_plan(write_plan(tmp_path, datasets=PROFILES + METADATA + VIDEOS))
    store = FailingStore(max(1, round(when * puts)))
    with pytest.raises(StoreError, match="injected failure"):
        migrate(plan, store)
    second = migrate(plan, store)
    # datasets the failed run had committed get an (empty) sync; the others resume their bulk
    resumed = [d for d in second.datasets if d.generation == 1]
    assert all(d.chunks_written == 0 for d in second.datasets if d.generation > 1)
    assert sum(d.chunks_written + d.chunks_skipped for d in resumed) <= chunks
    stored = [o.key for o in store.list() if "/r/" in o.key or "/o/" in o.key]
    assert len(stored) == chunks
    assert verify(plan, store).problems == []
    out = tmp_path / "restored"
    for name in ("profiles", "metadata", "videos"):
        restore(plan, store, name, out / name)
    check_restored(source, out)
    assert migrate(plan, store).chunks_written == 0


def test_empty_shards_get_manifests_and_verify(tmp_path: Path, store_kind: str) -> None:
    recs = write_profiles(tmp_path / "data/profiles", 3, files=1)
    rows = write_metadata_csv(tmp_path / "data/metadata", 2, files=1)
    videos = write_objects(tmp_path / "data/videos", [10, 0])
    datasets = (
        PROFILES.replace("shards: 4", "shards: 9")
        + METADATA.replace("shards: 3", "shards: 7")
        + VIDEOS.replace("shards: 3", "shards: 6")
    )
    plan = load_plan(write_plan(tmp_path, datasets=datasets))
    store = make_store(store_kind, tmp_path)
    migrate(plan, store)

    for name, shards in (("profiles", 9), ("metadata", 7), ("videos", 6)):
        for shard in range(shards):
            assert store.head(manifest_key(name, 1, shard)) is not None, (name, shard)

    checked = verify(plan, store)
    assert checked.problems == []
    assert checked.shards == 9 + 7 + 6
    assert checked.chunks_checked == checked.chunks_listed
    # Sampling must cope with shards that hold nothing.
    assert verify(plan, store, sample=0.3, seed=5).problems == []

    out = tmp_path / "restored"
    for name in ("profiles", "metadata", "videos"):
        restore(plan, store, name, out / name)
    assert restored_records(out / "profiles") == Counter(recs)
    assert restored_records(out / "metadata", csv_header=CSV_HEADER) == Counter(rows)
    assert files_below(out / "videos") == videos
    empty_jsonl = [p for p in (out / "profiles").iterdir() if p.stat().st_size == 0]
    assert len(empty_jsonl) >= 9 - 3


def test_csv_row_with_a_field_over_128kib(tmp_path: Path) -> None:
    """A quoted CSV field of 200,000 characters: JSONL records of any size migrate, so must this."""
    rows = write_metadata_csv(tmp_path / "data/metadata", 20, files=1)
    big_row = big_csv_row("v7777777", 6000)
    (tmp_path / "data/metadata/zz-big.csv").write_bytes(CSV_HEADER + b"\n" + big_row + b"\n")
    plan = load_plan(
        write_plan(tmp_path, datasets=METADATA, chunk_size="1MiB", memory_budget="8MiB")
    )
    store = MemoryStore()
    migrate(plan, store)
    assert verify(plan, store).problems == []
    restore(plan, store, "metadata", tmp_path / "out")
    assert restored_records(tmp_path / "out", csv_header=CSV_HEADER) == Counter([*rows, big_row])


def jsonl_key(record: bytes) -> bytes:
    value = json.loads(record)["user_id"]
    return str(value).encode() if isinstance(value, int) else value.encode()


def records_by_shard(out: Path) -> dict[int, Counter[bytes]]:
    shards = {}
    for path in out.iterdir():
        match = re.fullmatch(r"shard-(\d{5})\.jsonl", path.name)
        assert match, path.name
        shards[int(match[1])] = Counter(split_records(path.read_bytes(), csv_quotes=False))
    return shards


def test_shard_of_is_pinned() -> None:
    """xxh3-64 of the key bytes mod N; a change here moves every record of every plan."""
    assert shard_of(b"u000000001", 4) == 2
    assert shard_of(b"42", 7) == 5
    assert shard_of("李雷".encode(), 1000) == 631


def test_integer_and_string_keys_route_stably(tmp_path: Path) -> None:
    """An integer key routes as its decimal digits: 42 and "42" share a shard, run after run."""
    records = [orjson.dumps({"user_id": i, "v": "int"}) for i in range(-20, 300)]
    records += [orjson.dumps({"user_id": str(i), "v": "str"}) for i in range(0, 300, 3)]
    records += [orjson.dumps({"user_id": f"u{i:09d}", "v": "name"}) for i in range(300)]
    records += [orjson.dumps({"user_id": "李雷 🎬", "v": "unicode"})]
    records += [orjson.dumps({"user_id": 2**63 + 5, "prefs": {"user_id": "nested"}})]
    shards = 5
    by_run = []
    for run in ("a", "b"):
        root = tmp_path / run
        src = root / "data/profiles"
        src.mkdir(parents=True)
        (src / "mixed.jsonl").write_bytes(b"".join(r + b"\n" for r in records))
        plan = load_plan(
            write_plan(root, datasets=PROFILES.replace("shards: 4", f"shards: {shards}"))
        )
        store = MemoryStore()
        migrate(plan, store)
        restore(plan, store, "profiles", root / "out")
        placed = records_by_shard(root / "out")
        assert sorted(placed) == list(range(shards))
        for shard, recs in placed.items():
            for rec in recs:
                assert shard_of(jsonl_key(rec), shards) == shard, rec
        assert sum(placed.values(), Counter()) == Counter(records)
        by_run.append(placed)
    # A second, independent migration (another data key) places every record the same way.
    assert by_run[0] == by_run[1]
    for i in range(0, 300, 3):
        placed = by_run[0][shard_of(str(i).encode(), shards)]
        assert placed[orjson.dumps({"user_id": i, "v": "int"})] == 1
        assert placed[orjson.dumps({"user_id": str(i), "v": "str"})] == 1


# --- through the CLI -----------------------------------------------------------------------


def test_roundtrip_through_the_cli(tmp_path: Path) -> None:
    source = write_source(tmp_path, profiles=800, rows=3000)
    write_plan(tmp_path, datasets=PROFILES + METADATA + VIDEOS)

    first = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    match = re.search(r"(\d+) chunks written, 0 already done", first.stdout)
    assert match, first.stdout
    written = int(match[1])
    assert written > 0

    checked = run_cli("verify", "plan.yaml", "--json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["chunks_checked"] == doc["chunks_listed"] == written

    out = tmp_path / "restored"
    for name in ("profiles", "metadata", "videos"):
        done = run_cli("restore", "plan.yaml", "--dataset", name, "--out", out / name, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"restored {name}: ")
    check_restored(source, out)

    before = files_below(tmp_path / "dest")
    again = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 chunks written, 0 already done" in again.stdout  # a sync: nothing changed
    assert "2 sync" in again.stdout
    after = files_below(tmp_path / "dest")
    assert {k: v for k, v in after.items() if "_generations" not in k} == {
        k: v for k, v in before.items() if "_generations" not in k
    }
    assert list((tmp_path / "state").rglob("*.spool")) == []  # spools go once a dataset is done
