"""Workers claim shards in different orders (each starts at its own shard), so PostgreSQL may
end one of two claiming transactions to break a deadlock; that claim is taken again, not
reported as a broken state store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection

from migrator.state.backend import Backend, ContendedError
from migrator.state.db import StateDB


def test_a_claim_ended_by_a_deadlock_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[str] = []
    write = Backend.write

    @contextlib.contextmanager
    def once_ended(self: Backend, what: str = "") -> Iterator[Connection]:
        with write(self, what) as conn:
            yield conn
            if what.startswith("claim") and not ended:
                ended.append(what)
                raise ContendedError("deadlock detected (as PostgreSQL ends one)")

    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        monkeypatch.setattr(Backend, "write", once_ended)
        got = state.claim_shards("d", [3, 1, 2], "w1", 60.0)
    assert ended and [lease.shard for lease in got] == [3, 1, 2]


def test_a_claim_that_keeps_being_ended_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def always_ended(self: Backend, what: str = "") -> Iterator[Connection]:
        raise ContendedError("deadlock detected")
        yield  # pragma: no cover

    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        monkeypatch.setattr(Backend, "write", always_ended)
        with pytest.raises(ContendedError, match="deadlock"):
            state.claim_shards("d", [1, 2], "w1", 60.0)
