"""The gate's integrity rules over the verdicts table: a head never checked blocks; a failure
blocks until a full read-back passes after it (a sampled or quick pass does not clear it, and a
sync's new head does not either); a pass never overwrites a failure; old rows are pruned."""

from __future__ import annotations

from pathlib import Path

from migrator.codec.generation import GenerationKind, GenerationRecord, ShardHead
from migrator.read.cutover_integrity import failed_checks, integrity_problems, open_sync_problem
from migrator.state.db import StateDB
from migrator.state.tables.verifications import Verdict

DS = "profiles"


def record(heads: dict[int, tuple[int, str]]) -> GenerationRecord:
    shards = tuple(ShardHead(s, (g,), xxh3, 0, "00") for s, (g, xxh3) in sorted(heads.items()))
    gen = max(g for g, _ in heads.values())
    return GenerationRecord(
        "plan", DS, gen, GenerationKind.SYNC, "", "", 0.0, 0, None, 0, 0, shards
    )


def verdict(
    shard: int, head: int, xxh3: str, passed: bool, at: float, sample: float = 1.0
) -> Verdict:
    first = None if passed else "TamperedError: authentication failed"
    key = None if passed else f"{DS}/g{head:06d}/s{shard:05d}/r/00000000.mgc"
    return Verdict(shard, head, xxh3, passed, 0 if passed else 1, first, key, sample, False, at)


def test_never_checked_then_checked(tmp_path: Path) -> None:
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        rec = record({0: (1, "a"), 1: (1, "b")})
        found = integrity_problems(state, DS, rec)
        assert set(found) == {0, 1} and all("never checked" in w for w in found.values())
        state.record_verdicts(DS, [verdict(0, 1, "a", True, 10.0, sample=0.02)])
        assert set(integrity_problems(state, DS, rec)) == {1}
        state.record_verdicts(DS, [verdict(1, 1, "other", True, 11.0)])  # another manifest
        assert set(integrity_problems(state, DS, rec)) == {1}


def test_a_failure_blocks_until_a_full_pass_after_it(tmp_path: Path) -> None:
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        rec = record({0: (1, "a")})
        state.record_verdicts(DS, [verdict(0, 1, "a", True, 10.0)])
        state.record_verdicts(DS, [verdict(0, 1, "a", False, 20.0)])
        (why,) = integrity_problems(state, DS, rec).values()
        assert "integrity check failed" in why and "s00000/r/00000000.mgc" in why
        assert [(d, s) for d, s, _ in failed_checks(state, [DS])] == [(DS, 0)]
        state.record_verdicts(DS, [verdict(0, 1, "a", True, 30.0, sample=0.02)])  # a sample
        assert 0 in integrity_problems(state, DS, rec)
        synced = record({0: (2, "b")})  # a sync's new head still lists the damaged chunk
        state.record_verdicts(DS, [verdict(0, 2, "b", True, 40.0, sample=0.5)])
        assert 0 in integrity_problems(state, DS, synced)
        state.record_verdicts(DS, [verdict(0, 2, "b", True, 50.0)])  # full, after it
        assert integrity_problems(state, DS, synced) == {}
        assert failed_checks(state, [DS]) == []
        # Pruned: the older head's pass and the cleared failure are gone.
        assert [(v.head, v.passed) for v in state.verdicts(DS)[0]] == [(2, True)]


def test_an_open_generation_is_named(tmp_path: Path) -> None:
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        state.open_generation(DS, 1, GenerationKind.BULK)
        assert open_sync_problem(state, DS, 0) is not None
        assert "generation 1 (bulk)" in (open_sync_problem(state, DS, 0) or "")
        assert open_sync_problem(state, DS, 1) is None
