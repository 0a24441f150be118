"""Threads and tasks hammering one key never over-admit, even while idle keys are swept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from resilio import (
    AllOf,
    FixedWindow,
    LeakyBucket,
    RateLimiter,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)
from resilio._errors import RateLimitExceeded
from resilio.stores import MemoryStore, Store


class OffsetClock:
    """Real time, starting at 1.0 s: hour-long aligned windows never roll over in a test."""

    def __init__(self) -> None:
        self._start = time.monotonic() - 1.0

    def now(self) -> float:
        return time.monotonic() - self._start

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        await anyio.sleep(seconds)


LIMIT = 300
# Limits that cannot refill during a test: the total admitted must equal LIMIT.
NO_REFILL: list[tuple[str, Callable[..., RateLimiter]]] = [
    ("token", lambda **kw: TokenBucket(rate=LIMIT, per=10 * 3600.0, capacity=LIMIT, **kw)),
    ("fixed", lambda **kw: FixedWindow(limit=LIMIT, window=3600.0, **kw)),
    ("sliding", lambda **kw: SlidingWindow(limit=LIMIT, window=3600.0, **kw)),
    ("log", lambda **kw: SlidingWindowLog(limit=LIMIT, window=3600.0, **kw)),
    (
        "all_of",
        lambda **kw: AllOf(
            TokenBucket(rate=LIMIT, per=10 * 3600.0, capacity=LIMIT),
            FixedWindow(limit=LIMIT + 7, window=3600.0),
            **kw,
        ),
    ),
]
IDS = [name for name, _ in NO_REFILL]


def hammer_threads(limiter: RateLimiter, threads: int, calls: int) -> int:
    admitted = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(index: int) -> None:
        try:
            start.wait()
            for i in range(calls):
                cost = 1 + (i + index) % 3
                if i % 3 == 0:
                    try:
                        limiter.acquire("hot", cost, 0)
                        admitted[index] += cost
                    except RateLimitExceeded:
                        pass
                elif i % 3 == 1:
                    admitted[index] += cost if limiter.allow("hot", cost) else 0
                else:
                    admitted[index] += cost if limiter.try_acquire("hot", cost).allowed else 0
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    return sum(admitted)


@pytest.mark.parametrize(("name", "factory"), NO_REFILL, ids=IDS)
def test_threads_never_over_admit(name: str, factory: Callable[..., RateLimiter]) -> None:
    limiter = factory(clock=OffsetClock())
    # Demand is far above the limit, so the exact total shows both over- and under-admission.
    assert hammer_threads(limiter, threads=8, calls=600) == LIMIT


def test_leaky_bucket_admits_one_at_a_time_under_threads() -> None:
    limiter = LeakyBucket(rate=1, per=3600.0, capacity=5, clock=OffsetClock())
    assert hammer_threads(limiter, threads=8, calls=200) in (1, 2, 3)
    assert not limiter.peek("hot").allowed


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "factory"), NO_REFILL, ids=IDS)
async def test_tasks_never_over_admit(name: str, factory: Callable[..., RateLimiter]) -> None:
    limiter = factory(clock=OffsetClock())
    admitted = 0

    async def work(index: int) -> None:
        nonlocal admitted
        for i in range(300):
            cost = 1 + (i + index) % 3
            if i % 2:
                admitted += cost if (await limiter.try_acquire_async("hot", cost)).allowed else 0
            else:
                try:
                    await limiter.acquire_async("hot", cost, 0)
                    admitted += cost
                except RateLimitExceeded:
                    pass
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for index in range(20):
            tg.start_soon(work, index)
    assert admitted == LIMIT


def sweeper(store: MemoryStore, stop: threading.Event, every: float) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            store.sweep()
            if every:
                time.sleep(every)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.parametrize(("name", "factory"), NO_REFILL, ids=IDS)
def test_sweeping_never_resets_a_limited_key(name: str, factory: Callable[..., Any]) -> None:
    """Case L5: cleanup as often as possible while 16 threads x 10 000 acquires hammer one key.

    A sweep after every decision and another thread sweeping without pause; the
    limits cannot refill during the test, so exactly LIMIT is admitted in all.
    About 1-3 s per algorithm on a 2-core machine (12 s for the five).
    """
    store = MemoryStore(sweep_every=1)
    limiter = factory(clock=OffsetClock(), store=store)
    stop = threading.Event()
    thread = sweeper(store, stop, every=0)
    try:
        assert hammer_threads(limiter, threads=16, calls=10_000) == LIMIT
    finally:
        stop.set()
        thread.join()


def test_housekeeping_races_with_new_keys_threads_and_tasks() -> None:
    """Case L3: sweeps every 10 ms while threads and tasks hammer one key and add 1000 keys."""
    store = MemoryStore(sweep_every=16)
    clock = OffsetClock()
    limiter = FixedWindow(limit=LIMIT, window=3600.0, clock=clock, store=store)
    fresh = TokenBucket(rate=100, per=0.01, capacity=1, clock=clock, store=store)
    stop = threading.Event()
    thread = sweeper(store, stop, every=0.01)
    admitted = 0
    lock = threading.Lock()

    def count(n: int) -> None:
        nonlocal admitted
        with lock:
            admitted += n

    def thread_work(index: int) -> None:
        for i in range(400):
            count(limiter.allow("hot") and 1)
            fresh.try_acquire(f"new:{index}:{i % 20}")

    async def task_work(index: int) -> None:
        for i in range(400):
            count((await limiter.try_acquire_async("hot")).allowed and 1)
            await fresh.try_acquire_async(f"task:{index}:{i % 20}")
            await anyio.lowlevel.checkpoint()

    async def tasks() -> None:
        async with anyio.create_task_group() as tg:
            for index in range(25):
                tg.start_soon(task_work, index)

    threads = [threading.Thread(target=thread_work, args=(i,)) for i in range(25)]
    try:
        for worker in threads:
            worker.start()
        anyio.run(tasks)
        for worker in threads:
            worker.join()
    finally:
        stop.set()
        thread.join()
    assert admitted == LIMIT
    time.sleep(0.002)  # every new key's bucket refills in 100 µs
    store.sweep(round(clock.now() * 1_000_000))
    assert len(store) == 1  # only the hot key, still limited, is kept
    assert not limiter.try_acquire("hot").allowed


def test_a_store_can_be_shared_by_limiters(store: Store) -> None:
    clock = OffsetClock()
    first = FixedWindow(limit=3, window=3600.0, store=store, clock=clock, name="shared")
    second = FixedWindow(limit=3, window=3600.0, store=store, clock=clock, name="shared")
    assert first.try_acquire("k", 2).allowed
    assert second.try_acquire("k", 1).allowed
    assert not first.try_acquire("k").allowed
    with pytest.raises(ValueError, match="share the name"):
        # Refused when built on a memory or Redis store, at the first decision elsewhere.
        TokenBucket(rate=1, store=store, clock=clock, name="shared").try_acquire("k")


def test_blocking_threads_on_the_real_clock_respect_the_rate() -> None:
    times: list[float] = []
    lock = threading.Lock()
    limiter = LeakyBucket(rate=200, per=1.0, capacity=40)

    def work() -> None:
        for _ in range(3):
            limiter.acquire("k", 1, 5.0)
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(times) == 36
    times.sort()
    # 36 admissions spaced by 5 ms take at least 35 intervals.
    assert times[-1] - times[0] >= 35 * 0.005 - 0.002
    assert limiter._lines.lines == {}
