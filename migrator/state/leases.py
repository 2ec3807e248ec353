"""Shard leases: how many workers share one plan without two ever working one shard at once.

A worker claims a shard for `ttl` seconds on the state server's clock and renews the claim on a
thread every ttl/3. A worker that dies stops renewing; once its lease lapses another claims the
shard (a higher token) and resumes it from its last committed chunk. Two fences keep a worker
that only stalled (a long pause, a partition) from writing over its successor:
- it stops starting work on a shard two thirds of a ttl after its last successful renewal, so it
  has stopped well before the lease can lapse on the server;
- every state write of a shard checks, in its own transaction, that the writer's token is
  still the shard's token.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import xxhash

from migrator.errors import StateError

SAFE_FRACTION = 2 / 3  # of a ttl after the last renewal: past it a worker starts nothing new


class LeaseLostError(StateError):
    """This worker no longer holds a shard it was working on: stop, another has taken over."""


@dataclass(frozen=True, slots=True)
class Lease:
    dataset: str
    shard: int
    owner: str
    token: int


Fence = Mapping[tuple[str, int], Lease]  # the leases a writer holds, by (dataset, shard)


class LeaseStore(Protocol):
    """Where a keeper claims, renews and releases its leases: the state store (its lease
    table, state/tables/leases.py)."""

    def claim_shard(
        self, dataset: str, shard: int, owner: str, ttl: float, steal_from: str | None = None
    ) -> Lease | None: ...

    def claim_shards(
        self,
        dataset: str,
        shards: Sequence[int],
        owner: str,
        ttl: float,
        *,
        skip_held: bool = False,
        limit: int | None = None,
    ) -> list[Lease]: ...

    def renew_leases(self, held: Iterable[Lease], ttl: float) -> list[Lease]: ...

    def release_leases(self, held: Iterable[Lease]) -> None: ...


WORKER_ID_ENV = "MIGRATOR_WORKER_ID"


def worker_identity() -> str:
    """Who a worker is, in leases and logs: its name (MIGRATOR_WORKER_ID, e.g. the pod's, else
    the host's), its process, a nonce (pids are reused), and which kernel and pid namespace
    the pid belongs to (two containers may share a host name and both be pid 1)."""
    name = os.environ.get(WORKER_ID_ENV) or socket.gethostname()
    return f"{name}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_pid_space()}"


def _pid_space() -> str:
    """This boot of this kernel and this pid namespace, as a short tag."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        space = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "unknown"
    return xxhash.xxh3_64_hexdigest(f"{boot} {space}".encode())[:12]


def process_started_at() -> float:
    """When this process started (epoch seconds): workers started together for one sync treat
    a generation opened after that as their own, however slowly each of them came up."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()
_ACTIVE_OWNERS: set[str] = set()  # keepers of this process not yet closed


def dead_on_this_host(owner: str) -> bool:
    """True when `owner` was a process of this very host that no longer runs: its leases need
    not lapse first (a killed run on one machine resumes at once)."""
    if os.environ.get(WORKER_ID_ENV):
        return False  # named workers: only the lease's lapse tells
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    if parts[3] != _pid_space() or parts[3] == "unknown":
        return False  # another kernel or pid namespace: its pid means nothing here
    pid_text = parts[1]
    pid = int(pid_text)
    if pid == os.getpid():  # an earlier run in this very process that failed to release
        return owner not in _ACTIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LeaseKeeper:
    """The leases one worker holds, renewed in the background until released."""

    def __init__(self, state: LeaseStore, ttl: float, owner: str | None = None) -> None:
        self.state = state
        self.ttl = float(ttl)
        self.owner = owner or worker_identity()
        self.held: dict[tuple[str, int], Lease] = {}
        self._safe_until: dict[tuple[str, int], float] = {}
        self._lost: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _ACTIVE_OWNERS.add(self.owner)

    def claim(self, dataset: str, shard: int, steal_from: str | None = None) -> bool:
        """Take the shard's lease if it is free, lapsed, ours, or held by `steal_from` (a
        process of this host that is gone)."""
        sent = time.monotonic()
        lease = self.state.claim_shard(dataset, shard, self.owner, self.ttl, steal_from)
        if lease is None:
            return False
        with self._lock:
            self.held[(dataset, shard)] = lease
            self._safe_until[(dataset, shard)] = sent + self.ttl * SAFE_FRACTION
            self._lost.discard((dataset, shard))
        self._start()
        return True

    def claim_in_order(self, dataset: str, shards: Sequence[int]) -> int:
        """claim each of `shards` in order, in one transaction, up to the first one another
        worker holds; returns how many were claimed."""
        return len(self.claim_many(dataset, shards))

    def claim_many(
        self,
        dataset: str,
        shards: Sequence[int],
        *,
        skip_held: bool = False,
        limit: int | None = None,
    ) -> list[int]:
        """claim `shards` in order in one transaction (state store claim_shards); returns the
        shards claimed."""
        sent = time.monotonic()
        got = self.state.claim_shards(
            dataset, shards, self.owner, self.ttl, skip_held=skip_held, limit=limit
        )
        with self._lock:
            for lease in got:
                self.held[(dataset, lease.shard)] = lease
                self._safe_until[(dataset, lease.shard)] = sent + self.ttl * SAFE_FRACTION
                self._lost.discard((dataset, lease.shard))
        if got:
            self._start()
        return [lease.shard for lease in got]

    def release(self, dataset: str, shards: Iterable[int]) -> None:
        with self._lock:
            gone = [self.held.pop((dataset, s)) for s in shards if (dataset, s) in self.held]
            for lease in gone:
                self._safe_until.pop((lease.dataset, lease.shard), None)
        if gone:
            self.state.release_leases(gone)

    def release_all(self) -> None:
        with self._lock:
            gone = list(self.held.values())
            self.held.clear()
            self._safe_until.clear()
        if gone:
            self.state.release_leases(gone)

    def check(self, dataset: str, shard: int) -> None:
        """Raise LeaseLostError unless this worker may still start work on the shard."""
        with self._lock:
            key = (dataset, shard)
            if key not in self.held or key in self._lost:
                raise LeaseLostError(
                    f"dataset {dataset} shard {shard}: this worker's lease was taken over by"
                    " another worker; it stops here and leaves the shard to it"
                )
            if time.monotonic() > self._safe_until[key]:
                raise LeaseLostError(
                    f"dataset {dataset} shard {shard}: this worker could not renew its lease"
                    f" for {self.ttl * SAFE_FRACTION:.0f} s (is the state store reachable?);"
                    " it stops before another worker may take the shard over"
                )

    def fence(self) -> dict[tuple[str, int], Lease]:
        with self._lock:
            return dict(self.held)

    def close(self) -> None:
        """Stop renewing; leases still held lapse on their own unless released."""
        _ACTIVE_OWNERS.discard(self.owner)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew_loop, name="leases", daemon=True)
            self._thread.start()

    def _renew_loop(self) -> None:
        wait = self.ttl / 3
        while not self._stop.wait(wait):
            wait = self.ttl / 3
            with self._lock:
                held = list(self.held.values())
            if not held:
                continue
            sent = time.monotonic()
            try:
                lost = self.state.renew_leases(held, self.ttl)
            except StateError:
                # Soon again, not a third of a lease later: that would be past the deadline
                # in check(), which stops the work only if the store stays unreachable.
                wait = min(1.0, self.ttl / 12)
                continue
            with self._lock:
                for lease in held:
                    key = (lease.dataset, lease.shard)
                    if self.held.get(key) != lease:
                        continue  # released, or claimed anew, since this renewal began
                    if lease in lost:
                        self._lost.add(key)
                    else:
                        self._safe_until[key] = sent + self.ttl * SAFE_FRACTION
