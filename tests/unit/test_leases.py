"""Lease bookkeeping without a database: the renewal thread, the self-fence, and which lease
holders count as dead."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable

import pytest

from migrator.errors import StateError
from migrator.state import leases
from migrator.state.leases import Lease, LeaseKeeper, LeaseLostError, dead_on_this_host


class FlakyState:
    """Claims always succeed; the first `failures` renewals fail as an unreachable store."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.renewals = 0

    def claim_shard(
        self, dataset: str, shard: int, owner: str, ttl: float, steal_from: str | None = None
    ) -> Lease:
        return Lease(dataset, shard, owner, 1)

    def renew_leases(self, held: Iterable[Lease], ttl: float) -> list[Lease]:
        self.renewals += 1
        if self.renewals <= self.failures:
            raise StateError("state store unreachable")
        return []

    def release_leases(self, held: Iterable[Lease]) -> None:
        pass


def test_a_failed_renewal_is_retried_soon_so_one_blip_does_not_stop_the_work() -> None:
    state = FlakyState(failures=2)
    keeper = LeaseKeeper(state, ttl=0.6, owner="w:1:x:y")
    try:
        assert keeper.claim("ds", 0)
        time.sleep(0.5)  # past 2/3 of the lease since the claim: only the quick retry saves it
        keeper.check("ds", 0)
        assert state.renewals >= 3
    finally:
        keeper.close()


def test_a_store_that_stays_unreachable_stops_the_work_before_the_lease_lapses() -> None:
    keeper = LeaseKeeper(FlakyState(failures=10**6), ttl=0.6, owner="w:1:x:y")
    try:
        assert keeper.claim("ds", 0)
        keeper.check("ds", 0)
        time.sleep(0.45)
        with pytest.raises(LeaseLostError, match="could not renew its lease"):
            keeper.check("ds", 0)
    finally:
        keeper.close()


def test_only_a_gone_process_of_this_host_and_pid_namespace_counts_as_dead() -> None:
    host, space = socket.gethostname(), leases._pid_space()
    gone = 2**22 + 12345  # above the default pid_max: no such process
    assert dead_on_this_host(f"{host}:{gone}:n0nce:{space}")
    assert not dead_on_this_host(f"{host}:{os.getppid()}:n0nce:{space}")  # alive
    assert not dead_on_this_host(f"{host}:{gone}:n0nce:other-space")  # another container
    assert not dead_on_this_host(f"other-host:{gone}:n0nce:{space}")
    assert not dead_on_this_host(f"{host}:{gone}:n0nce")  # no namespace: cannot tell


def test_a_closed_keeper_of_this_process_is_dead_an_open_one_is_not() -> None:
    keeper = LeaseKeeper(FlakyState(0), ttl=60)
    assert not dead_on_this_host(keeper.owner)
    keeper.close()
    assert dead_on_this_host(keeper.owner)


def test_named_workers_only_lapse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(leases.WORKER_ID_ENV, "pod-3")
    owner = leases.worker_identity()
    assert owner.startswith("pod-3:")
    assert not dead_on_this_host(f"{socket.gethostname()}:{2**22 + 1}:x:{leases._pid_space()}")
