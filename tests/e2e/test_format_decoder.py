"""docs/FORMAT.md is enough to read a destination: tests/format_decoder.py and format_reader.py,
written from it alone, read what `migrator run` wrote and get the source back exactly.

The source is built to need each part of the spec: CRLF and LF records, blank lines, a last line
without a line feed, JSON keys that are integers, repeated or nested, CSV with another delimiter,
quoted delimiters, line feeds and doubled quotes, a header row in every file, a zero-byte object
and one of several parts; then a sync that updates and deletes, so reading needs the recorded
key field to drop the records a later generation removed.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.format_decoder import (
    RECORDS,
    Identity,
    Refused,
    data_keys,
    decode,
    read_kek_file,
    seal,
)
from tests.format_reader import Reader
from tests.planfiles import run_cli, write_plan

DATASETS = """\
  - {name: people, kind: records, format: jsonl, source: {kind: local, path: data/people},
     key: id, shards: 3}
  - {name: rows, kind: records, format: csv, csv_delimiter: ";",
     source: {kind: local, path: data/rows}, key: code, shards: 2}
  - {name: blobs, kind: objects, source: {kind: local, path: data/blobs}, shards: 2,
     part_size: 64KiB}
"""
HEADER = "label;code;n"


PAD = b', "pad": "' + b"x" * 3000 + b'"'  # a few chunks a shard at the smallest chunk size


def person(key: object, version: int, extra: bytes = b"") -> bytes:
    if isinstance(key, int):
        return b'{"id": %d, "v": %d%s%s}' % (key, version, extra, PAD)
    return b'{"id": "%s", "v": %d%s%s}' % (str(key).encode(), version, extra, PAD)


def row(code: str, version: int, quoted: bool = False) -> bytes:
    label = [b"plain", b'"semi; colon"', b'"two\nlines"', b'"say ""hi"""'][version % 4]
    key = b'"%s"' % code.encode() if quoted else code.encode()
    return label + b";" + key + b";" + str(version).encode()


class Source:
    """The source as of one version: 1 for the bulk run, 2 for the sync."""

    def __init__(self, root: Path, version: int) -> None:
        self.root, self.version = root, version
        self.people: Counter[bytes] = Counter()
        self.rows: Counter[bytes] = Counter()
        self.blobs: dict[str, bytes] = {}

    def pick(self, i: int) -> int | None:
        """The version of entry i: sync 2 updates every 5th, deletes every 7th."""
        if self.version == 2 and i % 7 == 3:
            return None
        return 2 if self.version == 2 and i % 5 == 0 else 1

    def write(self) -> None:
        lf, crlf = [], []
        for i in range(80):
            v = self.pick(i)
            if v is None:
                continue
            key: object = i - 40 if i % 4 == 0 else f"p{i:03d}"  # integers, negative and 0 too
            extra = b', "nested": {"id": "not the key"}' if i % 6 == 0 else b""
            record = person(key, v, extra)
            if i % 9 == 0:  # a repeated name: the last one is the key
                record = b'{"id": "decoy", ' + record[1:]
            (lf if i % 2 else crlf).append(record)
        self.people.update(lf)
        self.people.update(r + b"\r" for r in crlf[:-1])  # the CR stays part of the record
        self.people[crlf[-1]] += 1  # the last: neither CR nor line feed
        self.put("people/lf.jsonl", b"\n".join(lf[:10]) + b"\n\n  \t\n" + b"\n".join(lf[10:]))
        self.put("people/crlf.jsonl", b"\r\n".join(crlf))  # no line feed after the last
        rows = [row(f"c{i:03d}", v, quoted=i % 3 == 0) for i in range(50) if (v := self.pick(i))]
        self.rows.update(rows)
        head = HEADER.encode()
        self.put("rows/a.csv", head + b"\n" + b"\n".join(rows[:20]) + b"\n\n")
        self.put("rows/b.csv", b"\n" + head + b"\r\n" + b"\n".join(rows[20:]) + b"\n")
        sizes = {"empty.bin": 0, "dir/one.bin": 1, "dir/café.bin": 70_000, "big.bin": 200_000}
        for name, size in sizes.items():
            if self.version == 2 and name == "dir/one.bin":
                continue  # deleted by the sync
            grow = 3 if self.version == 2 and name == "big.bin" else 0
            self.blobs[name] = os.urandom(size + grow) if size or grow else b""
            self.put(f"blobs/{name}", self.blobs[name])

    def put(self, name: str, data: bytes) -> None:
        path = self.root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Source]:
    root = tmp_path_factory.mktemp("decoder")
    write_plan(root, datasets=DATASETS, chunk_size="64KiB")
    Source(root, 1).write()
    assert run_cli("run", "plan.yaml", cwd=root).returncode == 0
    shutil.rmtree(root / "data" / "blobs")
    synced = Source(root, 2)
    synced.write()
    done = run_cli("run", "plan.yaml", cwd=root)
    assert done.returncode == 0, done.stderr
    return root, synced


def reader(root: Path) -> Reader:
    return Reader(root / "dest" / "t", root / "kek.key", "test")


def test_records_come_back_exactly(site: tuple[Path, Source]) -> None:
    root, source = site
    people = reader(root).dataset("people")
    assert sum((s.records for s in people.values()), Counter()) == source.people
    assert all(s.csv_header is None for s in people.values())
    rows = reader(root).dataset("rows")
    assert sum((s.records for s in rows.values()), Counter()) == source.rows
    assert {s.csv_header for s in rows.values()} == {HEADER}  # kept apart, without line end


def test_objects_come_back_exactly(site: tuple[Path, Source]) -> None:
    root, source = site
    blobs = reader(root).dataset("blobs")
    found = {name: data for s in blobs.values() for name, data in s.objects.items()}
    assert found == source.blobs
    assert found["empty.bin"] == b""


def test_a_zero_byte_object_is_one_empty_part(site: tuple[Path, Source]) -> None:
    read = reader(site[0])
    read.dataset("blobs")
    parts: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for manifest in read.manifests:
        for ref in manifest["chunks"]:
            where = (manifest["generation"], ref["name"])
            parts.setdefault(where, []).append((ref["sequence"], ref["plain_size"]))
    assert parts[(2, "empty.bin")] == [(0, 0)]
    assert parts[(2, "big.bin")] == [(0, 65536), (1, 65536), (2, 65536), (3, 200_003 - 3 * 65536)]
    assert all(parts[w] == [(0, 0)] for w in parts if w[1] == "empty.bin")


def test_the_decoder_refuses_a_stale_copy_of_a_chunk(
    site: tuple[Path, Source], tmp_path: Path
) -> None:
    """An earlier upload of the same identity (same plaintext, another salt) decodes, but the
    manifest's stored digest names it (FORMAT.md §12, step 20)."""
    root = tmp_path / "copy"
    shutil.copytree(site[0], root, symlinks=True)
    store = root / "dest" / "t"
    target = sorted(store.glob("people/g000002/s*/r/00000000.mgc"))[0]
    object_key = target.relative_to(store).as_posix()
    shard = int(target.parent.parent.name[1:])
    keys = data_keys(store, read_kek_file(root / "kek.key"), "test", "people")
    original = reader(root)
    before = original.dataset("people")
    ident = Identity(RECORDS, "test", "people", 2, shard, 0)
    plain = decode(target.read_bytes(), ident, keys, object_key)
    target.write_bytes(seal(plain, ident, next(iter(keys.values())), os.urandom(32)))
    assert decode(target.read_bytes(), ident, keys, object_key) == plain  # valid, and stale
    with pytest.raises(Refused) as refused:
        reader(root).dataset("people")
    assert (refused.value.step, refused.value.object_key) == (
        "12.20 stale or replayed copy",
        object_key,
    )
    assert before  # the intact destination read fine
