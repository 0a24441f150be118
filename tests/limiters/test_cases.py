"""Scenarios from users of other limiters: bursts, many waiters, big requests, idle keys."""

from __future__ import annotations

import gc
import random
import sys
import threading
import time
from bisect import bisect_left
from itertools import pairwise
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from resilio import (
    FixedWindow,
    LeakyBucket,
    RateLimiter,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)
from resilio._events import Event
from resilio._waiting import TaskWaiter
from resilio.stores import MemoryStore, Store
from resilio.testing import FakeClock

from .test_concurrency import OffsetClock


def most_in_any_window(times: list[float], length: float) -> int:
    """The most admissions inside any half-open window [t, t + length)."""
    times = sorted(times)
    return max(
        (bisect_left(times, start + length - 1e-9) - bisect_left(times, start) for start in times),
        default=0,
    )


def random_arrivals(seed: int, count: int, spread: float) -> list[float]:
    rng = random.Random(seed)
    return sorted(rng.uniform(0, spread) for _ in range(count))


# -- L1: burst and order ---------------------------------------------------


@pytest.mark.parametrize("cls", [LeakyBucket, TokenBucket])
def test_any_window_admits_at_most_capacity_plus_rate(cls: type[Any]) -> None:
    clock = FakeClock(start=0.0)
    rate, capacity = 10, 4
    limiter = cls(rate=rate, per=1.0, capacity=capacity, clock=clock)
    admitted: list[float] = []
    last = 0.0
    for t in random_arrivals(seed=1, count=3000, spread=60.0):
        clock.advance(t - last)
        last = t
        if limiter.allow("k"):
            admitted.append(t)
    assert most_in_any_window(admitted, 1.0) <= capacity + rate
    assert len(admitted) <= rate * 60 + capacity
    if cls is TokenBucket:
        # Demand (50/s) exceeds the rate and bursts absorb the jitter: the long-run
        # rate is the configured one. (A shaper without waiters loses the gaps.)
        assert len(admitted) >= rate * 60 * 0.97


@pytest.mark.anyio
async def test_leaky_bucket_releases_waiters_in_order_at_a_constant_rate() -> None:
    clock = FakeClock(start=0.0)
    events: list[Event] = []
    limiter = LeakyBucket(rate=10, per=1.0, capacity=20, clock=clock, listeners=[events.append])
    order: list[int] = []

    async def waiter(i: int) -> None:
        await limiter.acquire_async("k", 1, None)
        order.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(waiter, i)
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
    assert order == list(range(20))
    times = [event.time for event in events]
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps == pytest.approx([0.1] * 19)
    assert most_in_any_window(times, 1.0) <= 20 + 10


# -- L2: many waiters are cheap --------------------------------------------


@pytest.mark.anyio
async def test_ten_thousand_async_waiters_keep_the_loop_responsive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limiter = TokenBucket(rate=100, per=1.0, capacity=1)
    admitted = 0
    wakes = 0
    lags: list[float] = []
    wake = TaskWaiter.wake

    def counted_wake(self: TaskWaiter) -> None:
        nonlocal wakes
        wakes += 1
        wake(self)

    monkeypatch.setattr(TaskWaiter, "wake", counted_wake)

    async def waiter() -> None:
        nonlocal admitted
        await limiter.acquire_async("k", 1, None)
        admitted += 1

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await anyio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    async with anyio.create_task_group() as tg:
        for _ in range(10_000):
            tg.start_soon(waiter)
        await anyio.sleep(0.1)  # let every waiter join the line
        # A full collection over 10,000 tasks pauses any loop; that is not the
        # limiter's doing, so the collector waits until the measurement is over.
        gc.collect()
        gc.disable()
        try:
            tg.start_soon(ticker)
            cpu_before, wall_before = time.process_time(), time.monotonic()
            admitted_before, wakes_before = admitted, wakes
            await anyio.sleep(0.5)
            cpu = time.process_time() - cpu_before
            wall = time.monotonic() - wall_before
            served, woken = admitted - admitted_before, wakes - wakes_before
        finally:
            gc.enable()
        tg.cancel_scope.cancel()
    # Never more than the rate allows; close to it unless the CPU was starved.
    assert served <= 100 * wall + 2
    assert served >= 0.5 * 100 * 0.5
    # Only the next head is woken per admission: work follows admissions, not
    # waiters x ticks, and the process's own CPU time stays small.
    assert woken <= served + 1
    assert cpu < 0.25 * wall
    # A 10 ms ticker lags under 10 ms. The test machine's CPU is shared, so the
    # bound holds for nine ticks in ten and a rare stall is capped more loosely.
    assert len(lags) >= 20
    assert sorted(lags)[len(lags) * 9 // 10] < 0.010
    assert max(lags) < 0.100
    assert limiter._lines.lines == {}


# -- L6: blocking acquirers all get through ----------------------------------


def test_fifty_blocking_threads_all_get_through_at_five_per_second() -> None:
    clock = FakeClock(start=0.0)
    events: list[Event] = []
    limiter = TokenBucket(rate=5, per=1.0, capacity=5, clock=clock, listeners=[events.append])
    failures: list[BaseException] = []

    def work() -> None:
        try:
            limiter.acquire("k", 1, 20.0)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert failures == []
    assert len(events) == 50
    times = sorted(event.time for event in events)
    assert most_in_any_window(times, 1.0) <= 5 + 5
    assert times[-1] - times[0] == pytest.approx((50 - 5) / 5, abs=0.21)


@pytest.mark.anyio
async def test_fifty_waiting_tasks_all_get_through_at_five_per_second() -> None:
    clock = FakeClock(start=0.0)
    events: list[Event] = []
    limiter = LeakyBucket(rate=5, per=1.0, capacity=50, clock=clock, listeners=[events.append])

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(limiter.acquire_async, "k", 1, 20.0)
    times = [event.time for event in events]
    assert len(times) == 50
    assert [b - a for a, b in pairwise(times)] == pytest.approx([0.2] * 49)


# -- L7: linear cost, O(1) memory per key -----------------------------------


ALGORITHMS = [
    lambda **kw: TokenBucket(rate=1e9, per=3600.0, **kw),
    lambda **kw: LeakyBucket(rate=1e9, per=3600.0, **kw),
    lambda **kw: FixedWindow(limit=10**9, window=3600.0, **kw),
    lambda **kw: SlidingWindow(limit=10**9, window=3600.0, **kw),
    lambda **kw: SlidingWindowLog(limit=10**9, window=3600.0, **kw),
]


@pytest.mark.parametrize("factory", ALGORITHMS, ids=lambda f: f().name.split(":")[0])
def test_acquires_take_linear_time(factory: Any) -> None:
    def run(n: int) -> float:
        limiter = factory(clock=OffsetClock())
        start = time.perf_counter()
        for _ in range(n):
            limiter.try_acquire("k")
        return time.perf_counter() - start

    run(1000)
    small, large = min(run(10_000) for _ in range(3)), min(run(100_000) for _ in range(2))
    assert large / small < 30  # linear: 10; quadratic: 100 (slack for a shared CPU)


@pytest.mark.parametrize("factory", ALGORITHMS[:4], ids=lambda f: f().name.split(":")[0])
def test_counter_and_bucket_state_is_constant_size(factory: Any) -> None:
    store = MemoryStore()
    clock = FakeClock(start=10.0)
    limiter: RateLimiter = factory(clock=clock, store=store)
    sizes = []
    for n in (10, 10_000):
        for _ in range(n):
            limiter.try_acquire("k")
            clock.advance(1e-5)
        (table,) = (table for _, table in store._tables.values())
        sizes.append(sys.getsizeof(table["k"]))
    assert sizes[0] == sizes[1]


# -- L8: idle keys go away ------------------------------------------------------


@pytest.mark.parametrize("factory", ALGORITHMS, ids=lambda f: f().name.split(":")[0])
def test_idle_keys_are_reclaimed_without_threads(factory: Any) -> None:
    store = MemoryStore()
    clock = FakeClock(start=0.0)
    limiter: RateLimiter = factory(clock=clock, store=store)
    threads_before = threading.active_count()
    for i in range(10_000):
        limiter.try_acquire(f"user:{i}")
    assert len(store) == 10_000
    assert threading.active_count() == threads_before
    clock.advance(2 * 3600.0)
    # Reclaimed by normal traffic: within as many operations as keys held.
    for _ in range(10_000 + 1024):
        limiter.try_acquire("busy")
        if len(store) == 1:
            break
    assert len(store) == 1
    assert threading.active_count() == threads_before


def test_explicit_sweep_keeps_limited_keys(store: Store) -> None:
    memory = MemoryStore()
    clock = FakeClock(start=0.0)
    limiter = FixedWindow(limit=2, window=60.0, clock=clock, store=memory)
    for i in range(100):
        limiter.try_acquire(f"once:{i}")
    limiter.try_acquire("limited", 2)
    clock.advance(30.0)
    assert memory.sweep() == 0
    clock.advance(30.0)
    limiter.try_acquire("limited", 2)  # a new window: limited again
    assert memory.sweep() == 100
    assert len(memory) == 1
    assert not limiter.try_acquire("limited").allowed


# -- L10: boundaries --------------------------------------------------------------


def burst_at(limiter: RateLimiter, clock: FakeClock, at: float, count: int) -> int:
    clock.advance(at - clock.now())
    return sum(limiter.allow("k") for _ in range(count))


def test_fixed_window_boundary_admits_both_bursts() -> None:
    clock = FakeClock(start=0.0)
    limiter = FixedWindow(limit=5, window=60.0, clock=clock)
    assert burst_at(limiter, clock, 59.9, 5) == 5
    assert burst_at(limiter, clock, 60.1, 5) == 5  # documented: a new window


def test_sliding_log_admits_at_most_the_limit_in_any_window() -> None:
    clock = FakeClock(start=0.0)
    limiter = SlidingWindowLog(limit=5, window=60.0, clock=clock)
    assert burst_at(limiter, clock, 59.9, 5) == 5
    assert burst_at(limiter, clock, 60.1, 5) == 0
    assert burst_at(limiter, clock, 119.9, 5) == 5
    admitted = []
    for t in random_arrivals(seed=7, count=2000, spread=3600.0):
        clock.advance(max(0.0, 200.0 + t - clock.now()))
        if limiter.allow("k"):
            admitted.append(clock.now())
    assert most_in_any_window(admitted, 60.0) <= 5


def test_sliding_counter_stays_within_its_documented_error() -> None:
    clock = FakeClock(start=0.0)
    limiter = SlidingWindow(limit=5, window=60.0, clock=clock)
    assert burst_at(limiter, clock, 59.9, 5) == 5
    assert burst_at(limiter, clock, 60.1, 5) == 0  # estimate 5 * 59.9/60 + 1 > 5
    admitted = []
    for t in random_arrivals(seed=7, count=2000, spread=3600.0):
        clock.advance(max(0.0, 200.0 + t - clock.now()))
        if limiter.allow("k"):
            admitted.append(clock.now())
    # Documented bound: at most `limit` per aligned window, so under 2 x limit in any window.
    assert most_in_any_window(admitted, 60.0) < 2 * 5
    per_window: dict[int, int] = {}
    for t in admitted:
        per_window[int(t // 60)] = per_window.get(int(t // 60), 0) + 1
    assert max(per_window.values()) <= 5


# -- L14: big requests are not starved -------------------------------------------


@pytest.mark.anyio
async def test_big_request_is_not_starved_by_a_stream_of_small_ones() -> None:
    limiter = TokenBucket(rate=100, per=1.0, capacity=5)
    admitted: list[tuple[str, float]] = []

    async def request(name: str, cost: int) -> None:
        await limiter.acquire_async("k", cost, 5.0)
        admitted.append((name, time.monotonic()))

    async with anyio.create_task_group() as tg:
        assert limiter.try_acquire("k", 5).allowed
        for i in range(3):
            tg.start_soon(request, f"small-{i}", 1)
            await anyio.sleep(0.002)
        big_arrival = time.monotonic()
        tg.start_soon(request, "big", 5)
        await anyio.sleep(0.002)
        for i in range(3, 30):
            tg.start_soon(request, f"small-{i}", 1)
            await anyio.sleep(0.005)  # twice the refill rate: a steady overload
    names = [name for name, _ in admitted]
    assert names.index("big") == 3  # after the three that came first, before any later one
    granted = dict(admitted)["big"]
    # Three tokens for those ahead, then five for the big one: 80 ms at 100/s.
    assert granted - big_arrival < 0.08 + 0.1  # slack for a shared, busy CPU


def test_a_limiter_built_per_request_does_not_sweep_the_store_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    clock = FakeClock(start=100.0)
    first = FixedWindow(limit=5, window=60.0, name="api", store=store, clock=clock)
    for i in range(5000):
        assert first.allow(f"user:{i}")
    sweeps: list[int] = []
    sweep = MemoryStore._sweep_locked

    def counted(self: MemoryStore, now: int) -> int:
        sweeps.append(now)
        return sweep(self, now)

    monkeypatch.setattr(MemoryStore, "_sweep_locked", counted)
    # As a handler that builds its limiter on every request would: 500 objects, one call each.
    for i in range(500):
        assert FixedWindow(limit=5, window=60.0, name="api", store=store, clock=clock).allow(
            f"user:{i}"
        )
    assert len(sweeps) <= 1  # a pass over the 5000 keys per request, before
    assert len(store) == 5000  # nothing limited was dropped


def test_idle_keys_of_limiters_built_per_request_are_reclaimed() -> None:
    store = MemoryStore(sweep_every=100)
    clock = FakeClock(start=100.0)
    for i in range(5000):
        # One object per request, one decision each; every key idle a second later.
        limiter = TokenBucket(rate=10, capacity=1, name="api", store=store, clock=clock)
        assert limiter.allow(f"user:{i}")
        clock.advance(0.2)
    assert len(store) <= 2 * 100 + 10  # about the keys still limited, not all 5000
