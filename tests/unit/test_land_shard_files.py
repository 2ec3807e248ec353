"""Landing records as one JSONL or CSV file per shard, and reading them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.codec.digests import MOD, record_digest
from migrator.errors import LandingError
from migrator.landing.shard_files import BucketShardFiles, header_row
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.stores.memory import MemoryStore
from tests.unit.test_land_bucket import MultipartMemory


def digest_of(records: list[bytes]) -> int:
    return sum(int.from_bytes(record_digest(r)) for r in records) % MOD


@pytest.fixture(params=["memory", "multipart", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "landed", fsync=False)
    return MultipartMemory() if request.param == "multipart" else MemoryStore()


def test_jsonl_shard_files_read_back_as_written(store: ObjectStore) -> None:
    files = BucketShardFiles(store, dataset="profiles", fmt="jsonl", delimiter=",", key="id")
    records = [b'{"id":%d,"name":"n\\u00e9 %d"}' % (i, i) for i in range(500)] + [b'{"id":1}']
    assert files.landed_generation(3) is None
    files.write_shard(3, 4, None, records)
    assert files.landed_generation(3) == 4
    assert store.get("profiles/shard-00003.jsonl") == b"".join(r + b"\n" for r in records)
    content = files.content(3)
    assert (content.digest, content.count, content.problems) == (digest_of(records), 501, [])
    files.write_shard(3, 5, None, [records[1]])
    assert (files.content(3).count, files.landed_generation(3)) == (1, 5)
    if isinstance(store, MultipartMemory):
        assert store.requests["part"] > 1  # the first write went up in parts


def test_csv_shard_files_keep_quoted_line_feeds_and_the_header() -> None:
    store = MemoryStore()
    files = BucketShardFiles(store, dataset="users", fmt="csv", delimiter=";", key="id")
    header = ("id", "note; free text", 'say "hi"')
    records = [b'1;"two\nlines";x', b"2;plain;y\r", b'3;"a;b";""']
    files.write_shard(0, 2, header, records)
    data = store.get("users/shard-00000.csv")
    assert data.startswith(header_row(header, ";")) and header_row(header, ";").endswith(b"\n")
    assert data.startswith(b'id;"note; free text";"say ""hi"""\n')
    content = files.content(0)
    assert (content.digest, content.count, content.problems) == (digest_of(records), 3, [])


def test_a_csv_shard_file_needs_its_header() -> None:
    files = BucketShardFiles(MemoryStore(), dataset="users", fmt="csv", delimiter=",", key="id")
    with pytest.raises(LandingError, match="header row"):
        files.write_shard(0, 1, None, [b"1,a"])


def test_shard_files_name_what_changed_behind_landings_back() -> None:
    store = MemoryStore()
    files = BucketShardFiles(store, dataset="profiles", fmt="jsonl", delimiter=",", key="id")
    files.write_shard(1, 3, None, [b'{"id":1}'])
    info = store.head("profiles/shard-00001.jsonl")
    assert info is not None
    store.put(info.key, store.get(info.key) + b'{"id":2}\n', info.metadata)
    assert files.content(1).problems == [
        "shard file profiles/shard-00001.jsonl holds 2 records, landed with 1 (changed behind"
        " landing's back)"
    ]
    assert files.content(2).problems == ["shard file profiles/shard-00002.jsonl is missing"]
