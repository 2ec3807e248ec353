"""Freshness rules one by one (read/freshness.py, read/head_file.py), the head file's format,
the plan's `destination.retention` and the Object Lock arguments it puts on commit points.

The rules compare generation numbers and stored bytes only, so the records here are opaque
bytes at the keys a dataset's records live at; the state store is a real one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import xxhash

from migrator.errors import PlanError, RollbackError, UsageError
from migrator.plan.model import load_plan
from migrator.read.freshness import Rollback, find_rollbacks, ledger_behind
from migrator.read.head_file import (
    DatasetHead,
    ExportedHead,
    LedgerMark,
    dataset_head,
    head_document,
    read_head_file,
)
from migrator.repository.names import generation_key
from migrator.state.db import StateDB
from migrator.stores.memory import MemoryStore
from migrator.stores.s3_retention import RETAINED_KINDS, ObjectRetention
from tests.planfiles import PROFILES, write_plan

DS = "profiles"


def record(generation: int, salt: str = "") -> bytes:
    return f"sealed record {generation}{salt}".encode()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as store:
        yield store


def commit(state: StateDB, generation: int, kind: str = "sync", data: bytes | None = None) -> None:
    state.open_generation(DS, generation, kind)
    state.commit_generation(
        DS,
        generation,
        changed_records=0,
        changed_bytes=0,
        record_xxh3=xxhash.xxh3_128_hexdigest(data or record(generation)),
        finished_at=0.0,
    )


def destination(*generations: int) -> MemoryStore:
    store = MemoryStore()
    for g in generations:
        store.put(generation_key(DS, g), record(g))
    return store


def head_of(generation: int, data: bytes | None = None) -> ExportedHead:
    digest = hashlib.sha256(data or record(generation)).hexdigest()
    return ExportedHead("kept.json", "test", {DS: DatasetHead(generation, digest, {})})


def found(rollbacks: list[Rollback]) -> list[tuple[int, int, str, str]]:
    return [(r.generation, r.found, r.source, r.how) for r in rollbacks]


# --- against the state store ----------------------------------------------------------------


def test_a_destination_as_new_as_the_state_store_is_fresh(state: StateDB) -> None:
    for g in (1, 2, 3):
        commit(state, g)
    assert find_rollbacks(destination(1, 2, 3), DS, state=state, head=None) == []
    # ahead of the state store (a crash between storing a record and committing it): fresh
    assert find_rollbacks(destination(1, 2, 3, 4), DS, state=state, head=None) == []
    state.open_generation(DS, 4, "sync")  # open, not committed: no record is owed yet
    assert find_rollbacks(destination(1, 2, 3), DS, state=state, head=None) == []


def test_the_newest_record_removed_is_behind_the_state_store(state: StateDB) -> None:
    for g in (1, 2, 3):
        commit(state, g)
    (rollback,) = find_rollbacks(destination(1, 2), DS, state=state, head=None)
    assert found([rollback]) == [(3, 2, "the state store", "behind")]
    assert rollback.object_key == "profiles/_generations/g000003.mgc"
    assert rollback.message == (
        "rollback: dataset profiles: generation 3 is committed in the state store but the"
        " destination's newest generation record is 2"
    )
    error = rollback.error("; a hint")
    assert isinstance(error, RollbackError) and error.exit_code == 4
    assert str(error).startswith(f"{rollback.object_key}: rollback:") and str(error).endswith(
        "hint"
    )
    (none_left,) = find_rollbacks(destination(), DS, state=state, head=None)
    assert "but the destination has no generation record" in none_left.message


def test_a_record_put_back_to_an_earlier_version_is_named(state: StateDB) -> None:
    commit(state, 1)
    commit(state, 2, data=record(2, " as committed"))
    (rollback,) = find_rollbacks(destination(1, 2), DS, state=state, head=None)
    assert found([rollback]) == [(2, 1, "the state store", "replaced")]
    assert "generation record 2 is not the one committed in the state store" in rollback.message


def test_a_reader_of_an_older_generation_is_held_to_what_was_committed_by_then(
    state: StateDB,
) -> None:
    for g in (1, 2, 3, 4):
        commit(state, g)
    store = destination(1, 2, 4)  # 3 removed from between
    assert find_rollbacks(store, DS, state=state, head=None) == []  # the newest is whole
    (rollback,) = find_rollbacks(store, DS, state=state, head=None, at_most=3)
    assert found([rollback]) == [(3, 2, "the state store", "absent")]
    assert "at or before generation 3 is 2" in rollback.message
    assert find_rollbacks(store, DS, state=state, head=None, at_most=2) == []


def test_records_a_compaction_deleted_are_no_rollback(state: StateDB) -> None:
    for g in (1, 2, 3):
        commit(state, g)
    commit(state, 4, "compact")
    store = destination(4)
    assert find_rollbacks(store, DS, state=state, head=None) == []
    assert find_rollbacks(store, DS, state=state, head=None, at_most=2) == []


# --- against an exported head ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ((1, 2, 3), []),
        ((1, 2, 3, 4), []),
        ((1, 2), [(3, 2, "the exported head kept.json", "behind")]),
        ((), [(3, 0, "the exported head kept.json", "behind")]),
        ((1, 2, 4), [(3, 2, "the exported head kept.json", "absent")]),
        ((4, 5), []),  # a compaction folded 3 with every record before it
    ],
)
def test_the_exported_head(
    present: tuple[int, ...], expected: list[tuple[int, int, str, str]]
) -> None:
    assert found(find_rollbacks(destination(*present), DS, state=None, head=head_of(3))) == expected


def test_a_rewritten_generation_differs_from_the_exported_head() -> None:
    store = destination(1, 2)
    store.put(generation_key(DS, 3), record(3, " rewritten after a rollback"))
    (rollback,) = find_rollbacks(store, DS, state=None, head=head_of(3))
    assert rollback.how == "replaced" and "the exported head kept.json" in rollback.message


def test_a_head_of_nothing_or_of_another_dataset_asks_nothing() -> None:
    empty = ExportedHead("kept.json", "test", {DS: DatasetHead(0, None, {})})
    assert find_rollbacks(destination(), DS, state=None, head=empty) == []
    assert find_rollbacks(destination(), "videos", state=None, head=head_of(3)) == []
    assert find_rollbacks(destination(1), DS, state=None, head=head_of(3), at_most=2) == []


def test_ledger_heads_against_the_exported_head() -> None:
    link = "ab" * 32
    ends = {0: (0, "00" * 32), 1: (4, "cd" * 32), 2: (9, link)}
    assert ledger_behind(LedgerMark(2, 9, link), ends, 2, "h") is None
    assert ledger_behind(LedgerMark(1, 4, "cd" * 32), ends, 2, "h") is None  # moved on since
    kind, message = ledger_behind(LedgerMark(3, 12, link), ends, 2, "h") or ("", "")
    assert kind == "truncated" and "h names segment 3 (12 entries" in message
    assert message.endswith("the ledger ends at segment 2")
    kind, message = ledger_behind(LedgerMark(2, 9, "ef" * 32), ends, 2, "h") or ("", "")
    assert kind == "head-mismatch" and "has 9 entries, link abababab" in message


# --- the head file --------------------------------------------------------------------------


def test_the_head_file_round_trips(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path, datasets=PROFILES), check_sources=False)
    store = destination(1, 2)
    marks = {0: LedgerMark(3, 17, "ab" * 32), 2: LedgerMark(1, 2, "cd" * 32)}
    head = dataset_head(store, DS, marks)
    assert head == DatasetHead(2, hashlib.sha256(record(2)).hexdigest(), marks)
    path = tmp_path / "head.json"
    path.write_bytes(head_document(plan.name, store.describe(), {DS: head}))
    back = read_head_file(path, plan)
    assert back.datasets == {DS: head} and back.plan == "test"
    assert back.source == f"the exported head {path}"
    assert dataset_head(MemoryStore(), DS, {}) == DatasetHead(0, None, {})


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("generation", -1, "datasets.profiles.generation is not a non-negative integer"),
        ("generation", True, "datasets.profiles.generation is not a non-negative integer"),
        ("record_sha256", None, "datasets.profiles.record_sha256 is not 64 lowercase hex"),
        ("record", "profiles/_generations/g000001.mgc", "record is not the key of generation 2"),
        ("ledger", {"0": {"segment": 1, "entries": 1, "link": "x"}}, "ledger.0.link"),
        ("ledger", {"zero": {}}, "ledger.zero is not a shard's ledger head"),
        ("ledger", {"0": {"segment": "1", "entries": 1, "link": "ab" * 32}}, "ledger.0.segment"),
    ],
)
def test_a_bad_head_entry_is_named(
    tmp_path: Path, field: str, value: object, expected: str
) -> None:
    plan = load_plan(write_plan(tmp_path, datasets=PROFILES), check_sources=False)
    doc = orjson.loads(head_document("test", "here", {DS: dataset_head(destination(2), DS, {})}))
    doc["datasets"][DS][field] = value
    path = tmp_path / "head.json"
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(UsageError, match=r"head\.json: ") as refused:
        read_head_file(path, plan)
    assert expected in str(refused.value)


# --- Object Lock: the plan and the arguments ------------------------------------------------


def test_retention_locks_only_commit_points() -> None:
    retention = ObjectRetention.of("compliance", 30)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert sorted(RETAINED_KINDS) == ["audit-ledger", "generation"]
    for kind in RETAINED_KINDS:
        assert retention.put_args({"migrator-kind": kind}, now) == {
            "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": now + timedelta(days=30),
        }
    for kind in ("manifest", "keyring", "chunk"):
        assert retention.put_args({"migrator-kind": kind}, now) == {}
    assert retention.put_args({}, now) == {}
    assert ObjectRetention.of("governance", 1).mode == "GOVERNANCE"
    with pytest.raises(ValueError, match="days"):
        ObjectRetention.of("governance", 0)


RETENTION_PLANS = {
    "local": ("{kind: local, path: dest, retention: {mode: governance, days: 1}}", "not used"),
    "azure": (
        "{kind: azure, bucket: box, account_url: 'https://acct.blob.core.usgovcloudapi.net',"
        " retention: {mode: governance, days: 1}}",
        "not used",
    ),
    "mode": (
        "{kind: s3, bucket: bkt, region: us-gov-west-1, retention: {mode: forever, days: 1}}",
        "governance",
    ),
    "days": (
        "{kind: s3, bucket: bkt, region: us-gov-west-1, retention: {mode: governance, days: 0}}",
        "must be at least 1 (got 0)",
    ),
}


@pytest.mark.parametrize("case", sorted(RETENTION_PLANS))
def test_a_bad_retention_is_a_plan_error(tmp_path: Path, case: str) -> None:
    dest, expected = RETENTION_PLANS[case]
    path = write_plan(tmp_path, datasets=PROFILES, destination=dest)
    with pytest.raises(PlanError, match=r"destination\.retention") as refused:
        load_plan(path, check_sources=False)
    assert expected in str(refused.value)
