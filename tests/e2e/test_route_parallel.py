"""Routing in worker processes writes exactly the spools routing in one process writes."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from pathlib import Path

import orjson
import pytest

import migrator.write.route as route
from migrator.codec.digests import DIGEST_ENTRY, key_hash, record_digest
from migrator.errors import SourceError
from migrator.keys.datakey import DataKey
from migrator.repository.names import digests_path, spool_path
from migrator.sharding import shard_of
from migrator.sources.local import LocalSource
from migrator.state.db import StateDB
from migrator.write.route import RecordsSpec, spool_source
from tests.planfiles import split_records

SHARDS = 5
KEY = DataKey(bytes(32))  # the dataset's first data key: the state store seals with it


def jsonl_source(folder: Path) -> dict[bytes, bytes]:
    """Records (by key) over files with blank lines, a record longer than a block and a last
    line without its line feed."""
    rng = random.Random(3)
    folder.mkdir(parents=True)
    out: dict[bytes, bytes] = {}
    for f in range(3):
        lines = []
        for i in range(400):
            key = f"u{f}-{i}"
            pad = "x" * (5000 if i == 7 else rng.randrange(10, 300))
            doc = orjson.dumps({"user_id": key, "pad": pad, "nested": {"user_id": "no"}})
            out[key.encode()] = doc
            lines.append(doc)
            if i % 50 == 0:
                lines.append(b"")
        body = b"\n".join(lines)
        (folder / f"p{f}.jsonl").write_bytes(body if f == 2 else body + b"\n")
    return out


def csv_source(folder: Path) -> dict[bytes, bytes]:
    folder.mkdir(parents=True)
    out: dict[bytes, bytes] = {}
    for f in range(2):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["video_id", "title"])
        for i in range(500):
            key = f"v{f}-{i}"
            title = [f"plain {i}", f'quoted "{i}", comma', f"two\nlines\n{i}" * (i % 4)][i % 3]
            w.writerow([key, title])
            row = io.StringIO()
            csv.writer(row, lineterminator="\n").writerow([key, title])
            out[key.encode()] = row.getvalue().encode().removesuffix(b"\n")
        (folder / f"m{f}.csv").write_text(buf.getvalue())
    return out


def route_with(tmp: Path, folder: Path, fmt: str, key: str, processes: int) -> Path:
    spec = RecordsSpec("d", 1, fmt, key, SHARDS, LocalSource(folder))
    out = tmp / f"spool-{processes}"
    with StateDB.sqlite_file(tmp / f"state-{processes}.sqlite") as state:
        state.bind_dataset_key("d", KEY)  # the checkpoint's listing digest is sealed
        spool_source(spec, out, buffer_budget=1 << 20, processes=processes)
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_worker_processes_write_the_same_spools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(route, "BLOCK_BYTES", 4096)  # many blocks, records across their edges
    if fmt == "jsonl":
        records, key = jsonl_source(tmp_path / "src"), "user_id"
    else:
        records, key = csv_source(tmp_path / "src"), "video_id"
    one = route_with(tmp_path, tmp_path / "src", fmt, key, 1)
    two = route_with(tmp_path, tmp_path / "src", fmt, key, 2)
    seen: Counter[bytes] = Counter()
    for shard in range(SHARDS):
        spool = spool_path(one, shard).read_bytes()
        digests = digests_path(one, shard).read_bytes()
        assert spool == spool_path(two, shard).read_bytes()
        assert digests == digests_path(two, shard).read_bytes()
        routed = split_records(spool, csv_quotes=fmt == "csv")
        entries = list(DIGEST_ENTRY.iter_unpack(digests))
        assert len(entries) == len(routed)
        for record, (kh, dg, length) in zip(routed, entries, strict=True):
            k = next(k for k, r in records.items() if r == record)
            assert shard_of(k, SHARDS) == shard
            assert (kh, dg, length) == (key_hash(k), record_digest(record), len(record) + 1)
            seen[record] += 1
    assert seen == Counter(records.values())


def test_a_bad_record_in_a_worker_names_its_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    good = b"".join(orjson.dumps({"user_id": i}) + b"\n" for i in range(3000))
    (folder / "a.jsonl").write_bytes(good + b'{"user_id": 1, oops\n' + good)
    spec = RecordsSpec("d", 1, "jsonl", "user_id", SHARDS, LocalSource(folder))
    with (
        StateDB.sqlite_file(tmp_path / "s.sqlite") as state,
        pytest.raises(SourceError, match=r"a\.jsonl:3001: malformed JSON"),
    ):
        state.bind_dataset_key("d", KEY)
        spool_source(spec, tmp_path / "o", buffer_budget=1 << 20, processes=2)
