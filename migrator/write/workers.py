"""Claiming shards under leases: a run waits for each of its shards, a worker claims batches.

Leases live in the state store, so runs and workers on many machines never work one shard at
once; a shard whose holder died is taken over once its lease lapses (at once when the holder
was a process of this host that is gone).
"""

from __future__ import annotations

import time

import xxhash

from migrator.plan.model import Plan
from migrator.state.db import StateDB
from migrator.state.leases import LeaseKeeper, dead_on_this_host

WORKER_CLAIM_SHARE = 16  # a worker claims ~1/16 of a dataset's shards at a time


# The first wait for another worker's shard (doubling up to a quarter of a lease, or 1 s).
FIRST_WAIT = 0.05


class ShardClaims:
    """One run's way to its shards' leases, through `keeper`."""

    def __init__(self, plan: Plan, state: StateDB, keeper: LeaseKeeper) -> None:
        self.plan = plan
        self.state = state
        self.keeper = keeper
        self._wait = FIRST_WAIT

    def wait_for_all(self, dataset: str, shards: list[int]) -> None:
        """Hold the leases of `shards`, taken in order: as many as are free at once, then
        waiting for the first a live run holds, and so on."""
        at = 0
        while at < len(shards):
            at += self.keeper.claim_in_order(dataset, shards[at:])
            if at < len(shards):
                self.wait_for(dataset, shards[at])
                at += 1

    def wait_for(self, dataset: str, shard: int) -> None:
        """Hold the shard's lease, waiting while a live run holds it."""
        while not self.keeper.claim(dataset, shard):
            holder = self.state.lease_holders(dataset).get(shard)
            dead = holder is not None and dead_on_this_host(holder[0])
            if dead and holder and self.keeper.claim(dataset, shard, steal_from=holder[0]):
                return
            self.pause()

    def order(self, shards: list[int]) -> list[int]:
        """The shards, rotated by this worker's identity: workers start their search at
        different shards, so they rarely contend for one."""
        offset = int.from_bytes(xxhash.xxh3_64_digest(self.keeper.owner.encode()), "big")
        return [shards[(offset + i) % len(shards)] for i in range(len(shards))]

    @staticmethod
    def batch_size(shards: int, claim: int | None) -> int:
        return claim or max(1, shards // WORKER_CLAIM_SHARE)

    def claim_batch(self, dataset: str, gen: int, pending: list[int], size: int) -> list[int]:
        """Up to `size` of the pending shards, now leased to this worker and not complete: free
        ones (claimed in one transaction), and those of workers of this host that are gone.
        Empty: all are others'."""
        holders = self.state.lease_holders(dataset)
        free: list[int] = []
        stealable: list[tuple[int, str]] = []
        for shard in pending:
            holder = holders.get(shard)
            if holder is not None and holder[0] != self.keeper.owner and holder[1] > 0:
                if dead_on_this_host(holder[0]):
                    stealable.append((shard, holder[0]))
                continue  # else another live worker has it
            free.append(shard)
        batch = self.keeper.claim_many(dataset, free, skip_held=True, limit=size)
        for shard, owner in stealable:
            if len(batch) >= size:
                break
            if self.keeper.claim(dataset, shard, steal_from=owner):
                batch.append(shard)
        complete = self.state.complete_shards(dataset, gen)
        done = [s for s in batch if s in complete]
        if done:  # completed by another worker since this one looked
            self.keeper.release(dataset, done)
        return [s for s in batch if s not in complete]

    def pause(self) -> None:
        """Wait a while before asking again (for a holder to finish, or its lease to lapse):
        briefly at first, as the wait is often for another worker's last few shards, then
        longer, up to a quarter of a lease."""
        time.sleep(self._wait)
        self._wait = min(self._wait * 2, self.plan.lease_seconds / 4, 1.0)

    def progressed(self) -> None:
        """Work was found: the next wait starts brief again."""
        self._wait = FIRST_WAIT

    def release(self, dataset: str, shards: list[int]) -> None:
        self.keeper.release(dataset, shards)
