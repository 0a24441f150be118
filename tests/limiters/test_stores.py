"""The store protocol from the limiter's side, and the memory store's own guarantees."""

from __future__ import annotations

import pytest

from resilio import AllOf, FixedWindow, TokenBucket
from resilio._core.limiters import US, FixedWindowAlgorithm, GcraAlgorithm
from resilio._errors import RateLimitExceeded
from resilio.stores import MemoryStore, Store
from resilio.testing import FakeClock

from .conftest import ProxyStore


def test_stores_satisfy_the_protocol() -> None:
    assert isinstance(MemoryStore(), Store)
    assert isinstance(ProxyStore(), Store)


def test_an_async_only_store_refuses_sync_calls_clearly() -> None:
    limiter = TokenBucket(rate=1, store=ProxyStore(async_only=True), clock=FakeClock())
    for call in (limiter.try_acquire, limiter.allow, limiter.peek, limiter.acquire):
        with pytest.raises(TypeError, match="async"):
            call("k")


@pytest.mark.anyio
async def test_an_async_only_store_serves_the_async_api() -> None:
    store = ProxyStore(async_only=True)
    clock = FakeClock()
    limiter = TokenBucket(rate=1, capacity=1, store=store, clock=clock)
    assert (await limiter.try_acquire_async("k")).allowed
    assert not await limiter.allow_async("k")
    assert (await limiter.peek_async("k")).retry_after == pytest.approx(1.0)
    assert (await limiter.acquire_async("k", 1, 2.0)).allowed
    assert clock.sleeps == [pytest.approx(1.0)]
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire_async("k", 1, 0.5)
    await limiter.reset_async("k")
    assert (await limiter.try_acquire_async("k")).allowed
    async with limiter.limit(key="other"):
        pass
    assert store.calls > 0


def test_memory_store_time_never_runs_backwards() -> None:
    store = MemoryStore()
    window = FixedWindowAlgorithm(limit=1, window=10 * US)
    assert store.acquire([window], "k", 1, 15 * US).allowed  # window [10, 20)
    # A decision arriving late with an earlier time is made at the latest time seen.
    late = store.acquire([window], "k", 1, 5 * US)
    assert not late.allowed
    assert late.retry_after == pytest.approx(5.0)


@pytest.mark.parametrize("start", [-60.0, -1e9])
def test_limiters_on_a_clock_that_reads_below_zero_refill(start: float) -> None:
    """A fake or skewed clock may read negative times: they run forwards all the same."""
    from resilio import TokenBucket
    from resilio.testing import FakeClock, skew_clock, use_clock

    clock = FakeClock(start=start)
    bucket = TokenBucket(rate=1, capacity=1, clock=clock)
    assert bucket.allow()
    assert not bucket.allow()
    clock.advance(1.0)
    assert bucket.allow()
    with use_clock(FakeClock()) as fake, skew_clock(offset=-30.0):
        skewed = TokenBucket(rate=1, capacity=1)
        assert skewed.allow()
        fake.advance(1.0)
        assert skewed.allow()


def test_memory_store_sweeps_as_a_side_effect_of_traffic() -> None:
    store = MemoryStore(sweep_every=4)
    bucket = GcraAlgorithm(interval=10, capacity=1)
    for i in range(4):
        store.allow([bucket], f"k{i}", 1, 1_000)
    assert len(store) == 4  # the fourth operation swept, but every bucket was still draining
    # The next sweep is due once the operations since the last one reach the
    # number of keys held (at least sweep_every): at the eighth operation.
    for _ in range(4):
        store.allow([bucket], "hot", 1, 2_000)  # the other buckets are full again by now
    assert len(store) == 1
    assert not store.allow([bucket], "hot", 1, 2_000)


def test_all_of_shares_a_store_with_its_parts_only_by_name() -> None:
    store = MemoryStore()
    clock = FakeClock()
    minute = FixedWindow(limit=2, window=60.0, store=store, clock=clock, name="minute")
    both = AllOf(minute, TokenBucket(rate=10, store=store, clock=clock), store=store, clock=clock)
    assert both.try_acquire("k").allowed
    assert minute.peek("k").remaining == 0  # one used through AllOf, one would be by this peek
    assert minute.try_acquire("k").allowed
    assert not both.try_acquire("k").allowed


def test_a_sliding_log_drops_expired_entries_in_bulk_and_stays_exact() -> None:
    from resilio import SlidingWindowLog
    from resilio.testing import FakeClock

    clock = FakeClock(start=10.0)
    log = SlidingWindowLog(limit=100, window=1.0, clock=clock)
    for _ in range(100):  # at 10.00, 10.01, ... 10.99 s
        assert log.allow("k")
        clock.advance(0.01)
    clock.advance(0.695)  # at 11.695 s those up to 10.69 s have left the window
    admitted = 0
    while log.allow("k"):
        admitted += 1
    assert admitted == 70  # exactly the room that freed
    state = log.store._tables[log._limits[0].name][1]["k"]  # type: ignore[attr-defined]
    assert state.total == 100
    assert len(state.entries) == 100  # the 70 expired entries are gone, not kept
    assert state.head == 0
    assert log.try_acquire("k").retry_after == pytest.approx(0.005)  # 10.70 s expires
