"""The one-frame decisions of a limiter of one limit in memory (resilio._inline).

The conformance suite runs them on fake clocks; here they run on the system
clock, as in production, against the generic path of the same algorithms
(a store that is not a MemoryStore), and they follow the process-wide
settings they were built for.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from resilio import (
    FixedWindow,
    LeakyBucket,
    RateLimiter,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)
from resilio._events import EventKind
from resilio.testing import FakeClock, capture_events, use_clock

from .conftest import ProxyStore

MONTH = 30 * 86400.0
# Limits that do not refill, roll over or drain while a test runs, on the real clock.
SLOW: list[tuple[str, Callable[..., RateLimiter]]] = [
    ("token", lambda **kw: TokenBucket(rate=4, per=10 * 3600.0, capacity=4, **kw)),
    ("leaky", lambda **kw: LeakyBucket(rate=1, per=3600.0, capacity=4, **kw)),
    ("fixed", lambda **kw: FixedWindow(limit=4, window=MONTH, **kw)),
    ("sliding", lambda **kw: SlidingWindow(limit=4, window=MONTH, **kw)),
    ("log", lambda **kw: SlidingWindowLog(limit=4, window=MONTH, **kw)),
]
IDS = [name for name, _ in SLOW]
METHODS = ["try_acquire", "allow", "try_acquire_async", "allow_async"]
COSTS = [1, 2, 2, 1, 4, 1]


def fast_path(limiter: RateLimiter, method: str) -> Any:
    """The one-frame decision standing for ``method``, or None when the method answers."""
    return vars(limiter).get(method)


async def call(limiter: RateLimiter, method: str, key: str, cost: int) -> Any:
    answer = getattr(limiter, method)(key, cost)
    return await answer if inspect.isawaitable(answer) else answer


@pytest.mark.anyio
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "factory"), SLOW, ids=IDS)
async def test_fast_paths_decide_as_the_generic_path(
    name: str, factory: Callable[..., RateLimiter], method: str
) -> None:
    fast, generic = factory(), factory(store=ProxyStore())
    assert fast_path(fast, method) is not None
    assert fast_path(generic, method) is None
    assert fast_path(fast, method).__code__.co_filename.startswith("<resilio ")
    for cost in COSTS:
        mine, theirs = await call(fast, method, "k", cost), await call(generic, method, "k", cost)
        if method.startswith("allow"):
            assert mine is theirs
            continue
        assert (mine.allowed, mine.remaining, mine.limit) == (
            theirs.allowed,
            theirs.remaining,
            theirs.limit,
        )
        # Read a few microseconds apart on the real clock.
        assert mine.retry_after == pytest.approx(theirs.retry_after, abs=0.05)
        assert mine.reset_after == pytest.approx(theirs.reset_after, abs=0.05)
    assert generic.store.calls == len(COSTS)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "factory"), SLOW, ids=IDS)
def test_fast_paths_step_aside_while_anybody_listens(
    name: str, factory: Callable[..., RateLimiter]
) -> None:
    limiter = factory(name=f"listened-{name}")
    limiter.allow("before")
    with capture_events() as events:
        limiter.allow("k")  # met out of date: set aside, the method answers and emits
        assert all(fast_path(limiter, method) is None for method in METHODS)
        limiter.try_acquire("k", 4)
    limiter.allow("after")  # after the listener went: not heard, and built anew
    assert all(fast_path(limiter, method) is not None for method in METHODS)
    assert [event.kind for event in events] == [
        EventKind.LIMITER_ALLOWED,
        EventKind.LIMITER_REJECTED,
    ]


def test_a_limiter_with_listeners_of_its_own_always_answers_through_its_methods() -> None:
    heard: list[Any] = []
    limiter = TokenBucket(rate=1, per=3600.0, capacity=1, listeners=[heard.append])
    assert fast_path(limiter, "allow") is None
    limiter.allow("k")
    assert [event.kind for event in heard] == [EventKind.LIMITER_ALLOWED]


def test_fast_paths_follow_a_swap_of_the_global_clock() -> None:
    limiter = TokenBucket(rate=1, per=1.0, capacity=1)
    real = fast_path(limiter, "try_acquire")
    with use_clock(FakeClock()) as clock:
        assert limiter.try_acquire("k")  # met out of date: built anew for the fake clock
        assert fast_path(limiter, "try_acquire") not in (None, real)
        decision = limiter.try_acquire("k")
        assert not decision
        assert decision.retry_after == 1.0  # exact: the fake clock's time
        clock.advance(1.0)
        assert limiter.try_acquire("k")
    assert limiter.try_acquire("k")  # back on the real clock, afresh


@pytest.mark.parametrize(("name", "factory"), SLOW, ids=IDS)
def test_threads_never_over_admit_while_listeners_come_and_go(
    name: str, factory: Callable[..., RateLimiter]
) -> None:
    """Every change of listeners rebuilds the fast paths under the deciding threads."""
    limiter = factory(name=f"churn-{name}")
    admitted: list[int] = []
    stop = threading.Event()

    def decide() -> None:
        count = 0
        while not stop.is_set():
            count += limiter.allow("k")
        admitted.append(count)

    def churn() -> None:
        for _ in range(300):
            with capture_events():
                pass

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for thread in threads:
        thread.start()
    churn()
    stop.set()
    for thread in threads:
        thread.join()
    # Every limit above holds 4 units and gives none back within a test; the leaky
    # bucket admits one request, then drains it for an hour.
    assert sum(admitted) == (1 if name == "leaky" else 4)


@pytest.mark.anyio
async def test_async_fast_paths_never_over_admit_across_tasks() -> None:
    limiter = SlidingWindowLog(limit=50, window=MONTH)
    admitted = 0

    async def decide() -> None:
        nonlocal admitted
        for _ in range(40):
            admitted += await limiter.allow_async("k")
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(decide)
    assert admitted == 50


def test_a_copy_decides_on_the_same_state_and_follows_the_settings() -> None:
    import copy

    limiter = SlidingWindowLog(limit=3, window=MONTH)
    assert limiter.allow("k")
    twin = copy.copy(limiter)
    assert fast_path(twin, "allow") is None  # its own, built by its first decision
    assert twin.allow("k")
    assert fast_path(twin, "allow") not in (None, fast_path(limiter, "allow"))
    with capture_events() as events:
        assert twin.allow("k")
        assert not twin.allow("k")  # one state: 3 admitted in all
    assert [event.kind for event in events] == [
        EventKind.LIMITER_ALLOWED,
        EventKind.LIMITER_REJECTED,
    ]


def test_a_change_of_settings_builds_nothing_until_a_decision_needs_it() -> None:
    from resilio._clock import runtime

    limiters = [TokenBucket(rate=1, per=3600.0, capacity=1) for _ in range(50)]
    with capture_events():
        pass
    assert all(limiter._built < runtime.version for limiter in limiters)
    assert limiters[0].allow("k")
    assert limiters[0]._built == runtime.version
    assert limiters[1]._built < runtime.version


def test_decisions_kept_by_a_caller_follow_the_settings() -> None:
    """``allow = limiter.allow``, kept, still hears listeners and follows the clock."""
    limiter = TokenBucket(rate=1, per=1.0, capacity=1)
    allow, try_acquire = limiter.allow, limiter.try_acquire
    with capture_events() as events:
        assert allow("k")
    assert [event.kind for event in events] == [EventKind.LIMITER_ALLOWED]
    with use_clock(FakeClock()) as clock:
        assert try_acquire("k")  # afresh on the fake clock
        decision = try_acquire("k")
        assert not decision
        assert decision.retry_after == 1.0  # exact: the fake clock's time
        clock.advance(1.0)
        assert allow("k")
