"""FIFO waiting: order, no barging, timeouts, cancellation, threads and tasks together.

The async tests call only the limiters' async methods, so that
tests/redis/test_redis_waiting.py can run them on async Redis clients too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from resilio import AllOf, FixedWindow, LeakyBucket, RateLimiter, TokenBucket
from resilio._errors import RateLimitExceeded
from resilio.stores import MemoryStore, Store
from resilio.testing import FakeClock, use_clock

pytestmark = pytest.mark.anyio

Make = Callable[..., Any]


class ManualClock:
    """A clock whose sleepers block until the test advances time past their wake-up."""

    def __init__(self) -> None:
        self._now = 0.0
        self._cond = threading.Condition()
        self.sleepers = 0

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        with self._cond:
            target = self._now + seconds
            self.sleepers += 1
            self._cond.wait_for(lambda: self._now >= target)
            self.sleepers -= 1

    async def sleep_async(self, seconds: float) -> None:
        target = self._now + seconds
        self.sleepers += 1
        try:
            while self._now < target:  # noqa: ASYNC110 - another task advances the clock
                await anyio.sleep(0.001)
        finally:
            self.sleepers -= 1


def queued(limiter: RateLimiter, key: str = "k") -> int:
    line = limiter._lines.lines.get(key)
    return 0 if line is None else line.live


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110 - polls state owned by the limiter
            await anyio.sleep(0.001)


def wait_for(predicate: Callable[[], bool]) -> None:
    """Block until ``predicate`` holds (set by another thread), for at most 5 s."""
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the other threads"
        time.sleep(0.001)


async def test_async_waiters_are_admitted_in_arrival_order(store: Store) -> None:
    clock = FakeClock(start=50.0)
    limiter = TokenBucket(rate=10, per=1.0, capacity=1, store=store, clock=clock)
    order: list[tuple[int, float]] = []

    async def worker(i: int) -> None:
        await limiter.acquire_async("k", 1, None)
        order.append((i, clock.now()))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(worker, i)
            # Let the task reach its place (admitted, or in line) before the next one
            # starts: on a store across the network its first decision takes a round trip.
            await wait_until(lambda: len(order) + queued(limiter) == i + 1)  # noqa: B023
    assert [i for i, _ in order] == list(range(20))
    times = [t for _, t in order]
    assert all(b - a == pytest.approx(0.1) for a, b in pairwise(times))


def test_threads_are_admitted_in_arrival_order(store: Store) -> None:
    clock = ManualClock()
    limiter = TokenBucket(rate=10, per=1.0, capacity=1, store=store, clock=clock)
    assert limiter.try_acquire("k").allowed
    order: list[int] = []

    def worker(i: int) -> None:
        limiter.acquire("k", 1, None)
        order.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for i, thread in enumerate(threads):
        thread.start()
        deadline = time.monotonic() + 5
        while queued(limiter) < i + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert queued(limiter) == 8
    for admitted in range(8):
        # Advance only once the previous head is through and the next one sleeps.
        deadline = time.monotonic() + 5
        while not (len(order) == admitted and clock.sleepers == 1):
            assert time.monotonic() < deadline, (order, clock.sleepers)
            time.sleep(0.001)
        clock.advance(0.1)
    for thread in threads:
        thread.join(5)
    assert order == list(range(8))


async def test_newcomers_do_not_barge_past_waiters(store: Store) -> None:
    clock = ManualClock()
    limiter = TokenBucket(rate=10, per=1.0, capacity=5, store=store, clock=clock)
    assert (await limiter.try_acquire_async("k", 5)).allowed
    clock.advance(0.2)  # two tokens back: enough for a small request, not for 5
    results: list[str] = []

    async def big() -> None:
        await limiter.acquire_async("k", 5, None)
        results.append("big")

    async with anyio.create_task_group() as tg:
        tg.start_soon(big)
        await wait_until(lambda: clock.sleepers == 1)
        with pytest.raises(RateLimitExceeded) as caught:
            await limiter.acquire_async("k", 1, 0)
        assert (await limiter.peek_async("k", 1)).allowed  # try_acquire would have admitted it
        # The estimate covers the line: 3 more tokens for the big request ahead.
        assert caught.value.retry_after == pytest.approx(0.3)
        clock.advance(0.3)
    assert results == ["big"]


async def test_cancelled_waiters_consume_nothing_and_wake_the_next(store: Store) -> None:
    clock = ManualClock()
    limiter = TokenBucket(rate=10, per=1.0, capacity=1, store=store, clock=clock)
    assert (await limiter.try_acquire_async("k")).allowed
    admitted: list[str] = []

    async def waiter(name: str) -> None:
        await limiter.acquire_async("k", 1, None)
        admitted.append(name)

    async with anyio.create_task_group() as outer:
        async with anyio.create_task_group() as head_group:
            head_group.start_soon(waiter, "head")
            await wait_until(lambda: clock.sleepers == 1)
            async with anyio.create_task_group() as middle_group:
                middle_group.start_soon(waiter, "middle")
                await wait_until(lambda: queued(limiter) == 2)
                outer.start_soon(waiter, "last")
                await wait_until(lambda: queued(limiter) == 3)
                middle_group.cancel_scope.cancel()
            assert queued(limiter) == 2
            head_group.cancel_scope.cancel()
        # The last waiter is now the head, sleeping for the token nobody took.
        await wait_until(lambda: clock.sleepers == 1)
        before = await limiter.peek_async("k")
        assert not before.allowed
        clock.advance(0.1)
    assert admitted == ["last"]
    assert queued(limiter) == 0


async def test_a_timed_out_waiter_does_not_block_those_behind(store: Store) -> None:
    clock = ManualClock()
    limiter = TokenBucket(rate=10, per=1.0, capacity=5, store=store, clock=clock)
    assert (await limiter.try_acquire_async("k", 5)).allowed
    outcomes: dict[str, Any] = {}

    async def waiter(name: str, cost: int, patience: float | None) -> None:
        try:
            await limiter.acquire_async("k", cost, patience)
            outcomes[name] = clock.now()
        except RateLimitExceeded as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "head", 5, None)
        await wait_until(lambda: clock.sleepers == 1)
        tg.start_soon(waiter, "impatient", 1, 0.2)
        await wait_until(lambda: queued(limiter) == 2)
        tg.start_soon(waiter, "patient", 1, None)
        await wait_until(lambda: queued(limiter) == 3)
        clock.advance(0.5)
        await wait_until(lambda: "head" in outcomes and clock.sleepers == 1)
        clock.advance(0.1)
    assert outcomes["head"] == pytest.approx(0.5)
    assert isinstance(outcomes["impatient"], RateLimitExceeded)
    # The impatient waiter took nothing: the patient one got the next token.
    assert outcomes["patient"] == pytest.approx(0.6)
    assert queued(limiter) == 0


def test_a_timed_out_waiting_thread_does_not_block_those_behind(store: Store) -> None:
    clock = ManualClock()
    limiter = TokenBucket(rate=10, per=1.0, capacity=5, store=store, clock=clock)
    assert limiter.try_acquire("k", 5).allowed
    outcomes: dict[str, Any] = {}

    def waiter(name: str, cost: int, patience: float | None) -> None:
        try:
            limiter.acquire("k", cost, patience)
            outcomes[name] = clock.now()
        except RateLimitExceeded as exc:
            outcomes[name] = exc

    threads: list[threading.Thread] = []
    for name, cost, patience, arrived in (
        ("head", 5, None, lambda: clock.sleepers == 1),
        ("impatient", 1, 0.2, lambda: queued(limiter) == 2),
        ("patient", 1, None, lambda: queued(limiter) == 3),
    ):
        threads.append(threading.Thread(target=waiter, args=(name, cost, patience)))
        threads[-1].start()
        wait_for(arrived)
    clock.advance(0.5)  # the head's five tokens are back; the impatient one's 0.2 s are up
    wait_for(lambda: len(outcomes) == 2 and clock.sleepers == 1)
    # The patient thread is the head now, sleeping for its token: the impatient one is gone.
    assert queued(limiter) == 1
    clock.advance(0.1)
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert outcomes["head"] == pytest.approx(0.5)
    assert isinstance(outcomes["impatient"], RateLimitExceeded)
    # The impatient thread took nothing: the patient one got the next token.
    assert outcomes["patient"] == pytest.approx(0.6)
    assert queued(limiter) == 0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_thread_and_task_share_one_line(store: Store, backend: str) -> None:
    limiter = TokenBucket(rate=50, per=1.0, capacity=1, store=store)
    assert limiter.try_acquire("k").allowed
    order: list[str] = []

    def thread_waiter() -> None:
        limiter.acquire("k", 1, 5.0)
        order.append("thread")

    thread = threading.Thread(target=thread_waiter)
    thread.start()
    deadline = time.monotonic() + 5
    while queued(limiter) < 1 and time.monotonic() < deadline:
        time.sleep(0.0005)

    async def main() -> None:
        await limiter.acquire_async("k", 1, 5.0)
        order.append("task")

    anyio.run(main, backend=backend)
    thread.join(5)
    assert order == ["thread", "task"]


async def test_leaky_bucket_queue_is_bounded(store: Store) -> None:
    clock = ManualClock()
    limiter = LeakyBucket(rate=10, per=1.0, capacity=2, store=store, clock=clock)
    assert (await limiter.try_acquire_async("k")).allowed
    admitted: list[int] = []

    async def waiter(i: int) -> None:
        await limiter.acquire_async("k", 1, None)
        admitted.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 1)
        await wait_until(lambda: queued(limiter) == 1)
        tg.start_soon(waiter, 2)
        await wait_until(lambda: queued(limiter) == 2)
        with pytest.raises(RateLimitExceeded):
            await limiter.acquire_async("k", 1, None)
        for done in range(2):
            await wait_until(lambda: len(admitted) == done and clock.sleepers == 1)  # noqa: B023
            clock.advance(0.1)
    assert admitted == [1, 2]


def test_waits_disabled_admit_without_sleeping(store: Store) -> None:
    from resilio.testing import disable_waits

    clock = FakeClock()
    limiter = TokenBucket(rate=1, capacity=1, store=store, clock=clock)
    limiter.try_acquire("k")
    with disable_waits():
        assert limiter.acquire("k", 1, 10.0).allowed
        with pytest.raises(RateLimitExceeded):
            limiter.acquire("k", 1, 0.5)
    assert clock.sleeps == []


async def test_a_wait_ending_exactly_at_the_timeout_is_admitted(store: Store) -> None:
    """A deadline minus the time rounds (here to 516.99999994 µs): waits compare in whole µs."""
    clock = FakeClock(start=1000.0)
    limiter = TokenBucket(rate=1000, per=1.0, capacity=1, store=store, clock=clock)
    assert await limiter.try_acquire_async("k")
    clock.advance(0.000483)
    assert (clock.now() + 0.000517) - clock.now() < 0.000517  # the rounding this is about
    assert (await limiter.acquire_async("k", 1, 0.000517)).allowed
    assert clock.now() == 1000.001


def test_a_thread_waiting_exactly_until_the_timeout_is_admitted(store: Store) -> None:
    clock = FakeClock(start=1000.0)
    limiter = TokenBucket(rate=1000, per=1.0, capacity=1, store=store, clock=clock)
    assert limiter.try_acquire("k")
    clock.advance(0.000483)
    assert limiter.acquire("k", 1, 0.000517).allowed
    assert clock.now() == 1000.001


def test_enclosing_timeout_bounds_the_wait(fake_clock: FakeClock, store: Store) -> None:
    import resilio

    limiter = TokenBucket(rate=1, capacity=1, store=store)
    limiter.try_acquire("k")

    @resilio.timeout(0.5)
    def call() -> None:
        limiter.acquire("k", 1, None)

    with pytest.raises(RateLimitExceeded):
        call()
    assert fake_clock.sleeps == []


def test_newcomers_do_not_barge_past_waiting_threads(store: Store) -> None:
    clock = ManualClock()
    limiter = TokenBucket(rate=10, per=1.0, capacity=5, store=store, clock=clock)
    assert limiter.try_acquire("k", 5).allowed
    clock.advance(0.2)
    thread = threading.Thread(target=limiter.acquire, args=("k", 5, None))
    thread.start()
    deadline = time.monotonic() + 5
    while clock.sleepers == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(RateLimitExceeded) as caught:
        limiter.acquire("k", 1, 0)
    assert caught.value.retry_after == pytest.approx(0.3)
    assert limiter.peek("k", 1).allowed
    clock.advance(0.3)
    thread.join(5)
    assert not thread.is_alive()
    assert limiter.peek("k", 1).retry_after == pytest.approx(0.1)


def test_a_swapped_global_clock_starts_the_limiter_afresh() -> None:
    """Times of two clocks do not compare: state kept under one is dropped under the other."""
    limiter = TokenBucket(rate=1, per=10.0, capacity=1)  # on the global clock
    assert limiter.allow("k")  # real monotonic time: thousands of seconds since boot
    with use_clock(FakeClock()) as fake:  # fake time starts at 0
        assert limiter.acquire("k", timeout=None).allowed
        assert limiter.acquire("k", timeout=None).allowed
        assert fake.sleeps == [10.0]  # one interval, not the machine's uptime
    with use_clock(FakeClock(start=1e9)):
        assert limiter.allow("k")
        assert not limiter.allow("k")
    # Back on the real clock, nothing stamped at 1e9 s keeps the key limited.
    assert limiter.allow("k")
    assert not limiter.allow("k")


def test_waiters_of_two_limiter_objects_of_one_name_wait_in_one_line(store: Store) -> None:
    clock = ManualClock()
    # As a request handler that builds its limiter on every call would.
    limiters = [
        TokenBucket(rate=10, capacity=1, name="shared", store=store, clock=clock) for _ in range(2)
    ]
    assert limiters[0].try_acquire("k").allowed
    order: list[int] = []

    def worker(i: int) -> None:
        limiters[i % 2].acquire("k", 1, None)
        order.append(i)

    def queued() -> int:
        line = limiters[0]._lines.lines.get("k")
        return 0 if line is None else line.live

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for i, thread in enumerate(threads):
        thread.start()
        wait_for(lambda: queued() == i + 1)  # noqa: B023 - read before the next start
    for admitted in range(6):
        # Only the head of the one line sleeps, whichever object its caller used.
        wait_for(lambda: len(order) == admitted and clock.sleepers == 1)  # noqa: B023
        clock.advance(0.1)
    for thread in threads:
        thread.join(5)
    assert order == list(range(6))


def test_lines_are_shared_by_the_limiters_of_one_state_only() -> None:
    store, other = MemoryStore(), MemoryStore()
    first = TokenBucket(rate=10, name="a", store=store)
    assert TokenBucket(rate=10, name="a", store=store)._lines is first._lines
    assert TokenBucket(rate=10, name="b", store=store)._lines is not first._lines
    assert TokenBucket(rate=10, name="a", store=other)._lines is not first._lines
    assert TokenBucket(rate=10)._lines is not TokenBucket(rate=10)._lines  # each its own store
    # A combination's name= names it in events, not its state: the parts' names do.
    hourly = FixedWindow(limit=100, window=3600.0, name="hourly", store=store)
    combined = AllOf(first, hourly, name="a")
    assert combined._lines is not first._lines
    assert AllOf(first, hourly)._lines is combined._lines
    assert AllOf(hourly, first)._lines is combined._lines  # the same state, in any order


def test_limiters_sharing_a_limit_follow_a_clock_swap_once() -> None:
    """The second object to see the swap drops nothing the first decided on the new clock."""
    store = MemoryStore()
    limiters = [FixedWindow(limit=3, window=60.0, name="api", store=store) for _ in range(2)]
    with use_clock(FakeClock(start=1_000.0)):
        admitted = [limiters[0].allow("k") for _ in range(3)]
        admitted += [limiters[1].allow("k") for _ in range(3)]
    assert admitted == [True, True, True, False, False, False]


def test_a_waiter_follows_a_swap_of_the_global_clock() -> None:
    """A thread asleep on the old clock decides on the new one once it wakes."""
    old = ManualClock()
    old.advance(10_000.0)  # far ahead of the new clock: its times would pin the new clock's
    new = FakeClock(start=50.0)
    admitted: list[float] = []
    with use_clock(old):
        limiter = TokenBucket(rate=2, per=1.0, capacity=1)  # on the global clock
        assert limiter.allow("k")
        waiter = threading.Thread(
            target=lambda: admitted.append(limiter.acquire("k", 1, None).reset_after)
        )
        waiter.start()
        wait_for(lambda: old.sleepers == 1)
        with use_clock(new):
            assert limiter.allow("k")  # afresh on the new clock
            old.advance(1.0)  # the waiter wakes, on the new clock now
            waiter.join(5)
            assert admitted == [0.5]
            assert new.sleeps == [0.5]  # it waited for the new clock's token
            new.advance(1.0)
            assert limiter.allow("k")  # the new clock's time, not the old one's, counts
            assert not limiter.allow("k")


def test_a_waiter_behind_the_head_times_out_on_time_on_any_real_time_clock() -> None:
    """A clock other than SystemClock may pass in real time: waiters behind keep their time."""
    from .test_concurrency import OffsetClock

    clock = OffsetClock()  # real time, but not SystemClock
    limiter = TokenBucket(rate=20, per=1.0, capacity=3, clock=clock)
    assert limiter.try_acquire("k", 3).allowed
    ended: dict[str, float] = {}

    def head() -> None:
        limiter.acquire("k", 3, None)  # 0.15 s
        ended["head admitted"] = clock.now()

    def behind() -> None:
        started = clock.now()
        try:
            limiter.acquire("k", 1, 0.05)  # its own cost would fit in that time
        except RateLimitExceeded:
            ended["behind gave up after"] = clock.now() - started

    first = threading.Thread(target=head)
    first.start()
    wait_for(lambda: queued(limiter) == 1)
    second = threading.Thread(target=behind)
    second.start()
    first.join(5)
    second.join(5)
    # Before: it waited untimed until the head woke, 0.15 s after the head began.
    assert 0.04 <= ended["behind gave up after"] < 0.12, ended
    assert "head admitted" in ended
