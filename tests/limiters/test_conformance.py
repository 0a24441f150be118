"""Behaviour every store must reproduce exactly, through the sync and the async API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from resilio._core.limiters import Decision
from resilio._errors import RateLimitExceeded
from resilio.testing import FakeClock

from .conftest import Api

pytestmark = pytest.mark.anyio

Make = Callable[..., Any]

ALL = [
    (TokenBucket, {"rate": 10, "per": 1.0, "capacity": 5}),
    (LeakyBucket, {"rate": 10, "per": 1.0, "capacity": 5}),
    (FixedWindow, {"limit": 5, "window": 1.0}),
    (SlidingWindow, {"limit": 5, "window": 1.0}),
    (SlidingWindowLog, {"limit": 5, "window": 1.0}),
]
IDS = [cls.__name__ for cls, _ in ALL]


def d(allowed: bool, remaining: int, retry: float, reset: float, limit: int) -> Decision:
    return Decision(allowed, remaining, retry, reset, limit)


# -- exact decisions per algorithm ------------------------------------------


async def test_token_bucket_decisions(api: Api, make: Make, clock: FakeClock) -> None:
    limiter = make(TokenBucket, rate=10, per=1.0, capacity=3)
    assert await api.try_acquire(limiter, "k") == d(True, 2, 0.0, 0.1, 3)
    assert await api.try_acquire(limiter, "k", 2) == d(True, 0, 0.0, 0.3, 3)
    assert await api.try_acquire(limiter, "k") == d(False, 0, 0.1, 0.3, 3)
    clock.advance(0.15)
    assert await api.try_acquire(limiter, "k") == d(True, 0, 0.0, 0.25, 3)
    assert await api.try_acquire(limiter, "k", 3) == d(False, 0, 0.25, 0.25, 3)
    clock.advance(0.25)
    assert await api.try_acquire(limiter, "k", 3) == d(True, 0, 0.0, 0.3, 3)
    assert await api.try_acquire(limiter, "other") == d(True, 2, 0.0, 0.1, 3)


async def test_leaky_bucket_spaces_admissions(api: Api, make: Make, clock: FakeClock) -> None:
    limiter = make(LeakyBucket, rate=10, per=1.0, capacity=4)
    assert await api.try_acquire(limiter, "k") == d(True, 0, 0.0, 0.1, 4)
    assert await api.try_acquire(limiter, "k") == d(False, 0, 0.1, 0.1, 4)
    clock.advance(0.1)
    assert await api.try_acquire(limiter, "k", 2) == d(True, 0, 0.0, 0.2, 4)
    clock.advance(0.15)
    assert await api.try_acquire(limiter, "k") == d(False, 0, 0.05, 0.05, 4)


async def test_fixed_window_decisions(api: Api, make: Make, clock: FakeClock) -> None:
    limiter = make(FixedWindow, limit=3, window=10.0)
    clock.advance(2.5)  # 1002.5: window [1000, 1010)
    assert await api.try_acquire(limiter, "k", 2) == d(True, 1, 0.0, 7.5, 3)
    assert await api.try_acquire(limiter, "k", 2) == d(False, 1, 7.5, 7.5, 3)
    assert await api.try_acquire(limiter, "k") == d(True, 0, 0.0, 7.5, 3)
    clock.advance(7.5)
    assert await api.try_acquire(limiter, "k", 3) == d(True, 0, 0.0, 10.0, 3)


async def test_sliding_window_decisions(api: Api, make: Make, clock: FakeClock) -> None:
    limiter = make(SlidingWindow, limit=4, window=10.0)
    clock.advance(5.0)  # 1005: window [1000, 1010), elapsed 5
    assert await api.try_acquire(limiter, "k", 4) == d(True, 0, 0.0, 15.0, 4)
    assert await api.try_acquire(limiter, "k") == d(False, 0, 7.5, 15.0, 4)
    clock.advance(7.5)  # 1012.5: previous 4 weighted by 0.75 -> 3
    assert await api.try_acquire(limiter, "k") == d(True, 0, 0.0, 17.5, 4)
    assert await api.try_acquire(limiter, "k") == d(False, 0, 2.5, 17.5, 4)
    clock.advance(2.5)  # 1015: 4 * 0.5 + 1 = 3
    assert await api.try_acquire(limiter, "k") == d(True, 0, 0.0, 15.0, 4)


async def test_sliding_log_decisions(api: Api, make: Make, clock: FakeClock) -> None:
    limiter = make(SlidingWindowLog, limit=3, window=10.0)
    assert await api.try_acquire(limiter, "k") == d(True, 2, 0.0, 10.0, 3)
    clock.advance(4.0)
    assert await api.try_acquire(limiter, "k", 2) == d(True, 0, 0.0, 10.0, 3)
    assert await api.try_acquire(limiter, "k") == d(False, 0, 6.0, 10.0, 3)
    assert await api.try_acquire(limiter, "k", 3) == d(False, 0, 10.0, 10.0, 3)
    clock.advance(6.0)
    assert await api.try_acquire(limiter, "k") == d(True, 0, 0.0, 10.0, 3)


# -- properties shared by every algorithm --------------------------------------


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
async def test_rejected_request_consumes_nothing(
    api: Api, make: Make, clock: FakeClock, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    limiter = make(cls, **options)
    while (await api.try_acquire(limiter, "k"))[0]:
        pass
    before = await api.peek(limiter, "k")
    for _ in range(5):
        rejected = await api.try_acquire(limiter, "k")
        assert not rejected.allowed
    assert await api.peek(limiter, "k") == before
    clock.advance(before.retry_after)
    assert (await api.try_acquire(limiter, "k")).allowed


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
async def test_retry_after_is_exact(
    api: Api, make: Make, clock: FakeClock, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    limiter = make(cls, **options)
    clock.advance(0.3)
    while (await api.try_acquire(limiter, "k", 2))[0]:
        clock.advance(0.01)
    retry = (await api.peek(limiter, "k", 2)).retry_after
    assert retry > 0
    clock.advance(retry - 1e-6)
    assert not (await api.peek(limiter, "k", 2)).allowed
    clock.advance(1e-6)
    assert (await api.try_acquire(limiter, "k", 2)).allowed


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
async def test_reset_after_brings_the_key_back_to_full(
    api: Api, make: Make, clock: FakeClock, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    limiter = make(cls, **options)
    fresh = await api.peek(limiter, "fresh")
    decision = await api.try_acquire(limiter, "k", 2)
    await api.try_acquire(limiter, "k", 1)
    decision = await api.peek(limiter, "k")
    clock.advance(decision.reset_after)
    assert await api.peek(limiter, "k") == await api.peek(limiter, "fresh")
    assert fresh.allowed
    assert fresh.reset_after >= 0


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
async def test_peek_and_reset(
    api: Api, make: Make, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    limiter = make(cls, **options)
    first = await api.peek(limiter, "k")
    assert first == await api.peek(limiter, "k")
    await api.try_acquire(limiter, "k", 5)
    assert await api.peek(limiter, "k") != first
    await api.reset(limiter, "k")
    assert await api.peek(limiter, "k") == first


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
async def test_cost_above_capacity_fails_at_once(
    api: Api, make: Make, clock: FakeClock, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    limiter = make(cls, **options)
    for call in (api.try_acquire, api.peek, api.allow):
        with pytest.raises(ValueError, match="above the capacity"):
            await call(limiter, "k", 6)
    with pytest.raises(ValueError, match="above the capacity"):
        await api.acquire(limiter, "k", 6, None)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            await api.try_acquire(limiter, "k", bad)
    with pytest.raises(TypeError, match="integer"):
        await api.try_acquire(limiter, "k", 1.5)  # type: ignore[arg-type]
    assert clock.sleeps == []


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
async def test_allow_matches_try_acquire(
    api: Api, make: Make, clock: FakeClock, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    one = make(cls, **options, name="one")
    two = make(cls, **options, name="two")
    for step in range(30):
        cost = 1 + step % 3
        assert await api.allow(one, "k", cost) == (await api.try_acquire(two, "k", cost)).allowed
        clock.advance(0.037)


# -- several limits as one -------------------------------------------------


async def test_all_of_is_all_or_nothing(api: Api, make: Make, clock: FakeClock) -> None:
    per_second = TokenBucket(rate=2, per=1.0, capacity=2, name="per-second")
    per_minute = FixedWindow(limit=3, window=60.0, name="per-minute")
    both = make(AllOf, per_second, per_minute)
    assert (await api.try_acquire(both, "k", 2)).allowed
    rejected = await api.try_acquire(both, "k", 1)  # per-second is empty
    assert not rejected.allowed
    assert rejected.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    # per-minute still has room for 1: a rejected cost of 2 consumed nothing anywhere.
    assert not (await api.try_acquire(both, "k", 2)).allowed
    assert (await api.try_acquire(both, "k", 1)).allowed
    blocked = await api.try_acquire(both, "k", 1)
    assert not blocked.allowed
    assert blocked.limit == 3
    # The minute window [960, 1020) ends 19.5 s after 1000.5.
    assert blocked.retry_after == pytest.approx(19.5)


async def test_all_of_accepts_limit_strings(api: Api, make: Make, clock: FakeClock) -> None:
    limiter = make(AllOf, "2/second", "3/minute")
    admitted = 0
    for _ in range(10):
        admitted += bool(await api.allow(limiter, "k"))
        clock.advance(0.5)
    assert admitted == 3
    assert limiter.max_cost == 2


async def test_all_of_rejects_bad_parts() -> None:
    with pytest.raises(ValueError, match="at least one"):
        AllOf()
    with pytest.raises(TypeError, match="rate limiters or limit strings"):
        AllOf(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct names"):
        AllOf(FixedWindow("1/s", name="x"), TokenBucket(rate=1, name="x"))
    # The same limit twice, however written, is that limit once.
    once = AllOf("2/s", "2/second", SlidingWindow("2/1s"))
    assert len(once._limits) == 1


# -- waiting -----------------------------------------------------------------


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
async def test_acquire_waits_then_admits(
    api: Api, make: Make, clock: FakeClock, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    limiter = make(cls, **options)
    while (await api.try_acquire(limiter, "k"))[0]:
        pass
    expected = (await api.peek(limiter, "k")).retry_after
    start = clock.now()
    decision = await api.acquire(limiter, "k", 1, 5.0)
    assert decision.allowed
    assert clock.now() - start == pytest.approx(expected)


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
async def test_acquire_fails_at_once_when_the_wait_exceeds_the_timeout(
    api: Api, make: Make, clock: FakeClock, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    limiter = make(cls, **options)
    while (await api.try_acquire(limiter, "k"))[0]:
        pass
    expected = (await api.peek(limiter, "k")).retry_after
    with pytest.raises(RateLimitExceeded) as caught:
        await api.acquire(limiter, "k", 1, expected / 2)
    assert caught.value.retry_after == pytest.approx(expected)
    assert clock.sleeps == []
    with pytest.raises(RateLimitExceeded):
        await api.acquire(limiter, "k", 1, 0)
    assert (await api.acquire(limiter, "k", 1, expected)).allowed


async def test_acquire_rejects_bad_timeouts(api: Api, make: Make) -> None:
    limiter = make(TokenBucket, rate=1)
    with pytest.raises(ValueError, match="timeout"):
        await api.acquire(limiter, "k", 1, -1.0)


async def test_global_listeners_added_after_the_first_decisions_hear_the_next(
    api: Api, make: Make
) -> None:
    from resilio._events import EventKind
    from resilio.testing import capture_events

    limiter = make(TokenBucket, rate=1, capacity=2, name="late")
    assert await api.allow(limiter, "k")  # decided while nobody listened
    with capture_events() as events:
        assert not (await api.try_acquire(limiter, "k", 2)).allowed
        assert await api.allow(limiter, "k")
    assert not await api.allow(limiter, "k")  # after the listener went: not heard
    assert [(e.kind, e.source) for e in events] == [
        (EventKind.LIMITER_REJECTED, "late"),
        (EventKind.LIMITER_ALLOWED, "late"),
    ]


async def test_events(make: Make, clock: FakeClock) -> None:
    from resilio._events import EventKind

    seen: list[Any] = []
    limiter = make(TokenBucket, rate=1, capacity=1, listeners=[seen.append], name="ev")
    limiter.try_acquire("k")
    limiter.try_acquire("k")
    limiter.acquire("k", timeout=5.0)
    with pytest.raises(RateLimitExceeded):
        limiter.acquire("k", timeout=0.5)
    assert [e.kind for e in seen] == [
        EventKind.LIMITER_ALLOWED,
        EventKind.LIMITER_REJECTED,
        EventKind.LIMITER_WAITED,
        EventKind.LIMITER_REJECTED,
    ]
    assert seen[2].delay == pytest.approx(1.0)
    assert {e.source for e in seen} == {"ev"}
