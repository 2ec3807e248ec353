"""The shared token bucket, on a fake clock: the average rate holds, bursts are bounded."""

from __future__ import annotations

import threading

import pytest

from migrator.stores.memory import MemoryStore
from migrator.stores.wrappers import CountingStore, ThrottledStore, TokenBucket

MiB = 1024 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds


def bucket(rate: int, clock: FakeClock, burst: int | None = None) -> TokenBucket:
    return TokenBucket(rate, burst=burst, clock=clock, sleep=clock.sleep)


def test_first_burst_is_free_then_rate_holds() -> None:
    clock = FakeClock()
    b = bucket(10 * MiB, clock)
    assert b.acquire(10 * MiB) == 0.0  # the initial burst: one second's worth
    assert b.acquire(5 * MiB) == pytest.approx(0.5)
    assert b.acquire(10 * MiB) == pytest.approx(1.0)
    # 25 MiB at 10 MiB/s with a 10 MiB burst: 1.5 s of waiting in all.
    assert clock.now == pytest.approx(1.5)


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    b = bucket(1 * MiB, clock)
    b.acquire(1 * MiB)
    clock.now += 100.0  # a long pause must not bank 100 s of credit
    assert b.acquire(1 * MiB) == 0.0
    assert b.acquire(1 * MiB) == pytest.approx(1.0)


def test_a_request_larger_than_the_burst_goes_into_debt() -> None:
    clock = FakeClock()
    b = bucket(1 * MiB, clock)
    assert b.acquire(3 * MiB) == pytest.approx(2.0)
    assert b.acquire(1 * MiB) == pytest.approx(1.0)


def test_average_rate_over_many_uploads() -> None:
    clock = FakeClock()
    b = bucket(200 * MiB, clock)
    total = 0
    for _ in range(100):
        b.acquire(16 * MiB)
        total += 16 * MiB
    # All but the initial burst is paced at the rate.
    assert clock.now == pytest.approx((total - 200 * MiB) / (200 * MiB))


def test_throttled_store_paces_puts_and_passes_data_through() -> None:
    clock = FakeClock()
    inner = MemoryStore()
    store = ThrottledStore(inner, bucket(1 * MiB, clock))
    for i in range(4):
        store.put(f"k{i}", b"x" * MiB)
    assert clock.now == pytest.approx(3.0)
    assert inner.get("k3") == b"x" * MiB
    store.get("k0")  # reads are not limited
    assert clock.now == pytest.approx(3.0)


def test_counting_store_counts_requests_and_bytes() -> None:
    store = CountingStore(MemoryStore())
    store.put("a", b"12345")
    store.get("a")
    store.head("a")
    list(store.list(""))
    assert store.requests == {"put": 1, "get": 1, "head": 1, "list": 1}
    assert store.bytes_sent == 5


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
