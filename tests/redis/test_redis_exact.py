"""The largest limits a window limiter accepts decide exactly on Redis, and larger ones are refused.

Redis scripts count in doubles, exact below 2**53; the constructors refuse what
would pass it (the buckets' case is in test_redis_store.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from resilio import FixedWindow, SlidingWindow, SlidingWindowLog
from resilio.redis import RedisStore
from resilio.testing import FakeClock

LARGEST = 2**53 - 1
YEAR = 365 * 86_400.0


@pytest.mark.parametrize("cls", [FixedWindow, SlidingWindow, SlidingWindowLog])
def test_a_limit_of_2_to_the_53_is_refused(cls: type[Any]) -> None:
    with pytest.raises(ValueError, match=r"2\*\*53 or more"):
        cls(limit=LARGEST + 1, window=1.0)
    with pytest.raises(ValueError, match=r"2\*\*53 or more"):
        cls(f"{LARGEST + 1}/second")


@pytest.mark.parametrize("window", [1.0, YEAR])
@pytest.mark.parametrize("cls", [FixedWindow, SlidingWindow, SlidingWindowLog])
def test_the_largest_limit_decides_exactly_on_redis(
    cls: type[Any], window: float, sync_client: redis.Redis, prefix: str
) -> None:
    clock = FakeClock(start=1_000.25 * window)  # a quarter into a window
    store = RedisStore(sync_client, prefix=prefix, time_source="caller")
    remote = cls(limit=LARGEST, window=window, store=store, clock=clock)
    local = cls(limit=LARGEST, window=window, clock=clock)
    # Fill the window to one short of the limit, then go past it; half a window
    # later the sliding counter weighs the full previous window.
    steps: list[int | str] = [LARGEST - 1, 1, 1, 2, "peek", "half", 1, 3, "peek", "window", 5]
    for step in steps:
        if step == "half":
            clock.advance(window / 2)
        elif step == "window":
            clock.advance(window)
        elif step == "peek":
            assert remote.peek("k", 7) == local.peek("k", 7)
        else:
            assert isinstance(step, int)
            assert remote.try_acquire("k", cost=step) == local.try_acquire("k", cost=step), step


@pytest.mark.parametrize("admitted", [1, 2, 3, 4, 5])
def test_a_sliding_log_near_its_largest_limit_times_a_huge_request_exactly(
    admitted: int, sync_client: redis.Redis, prefix: str
) -> None:
    # Admitted units plus a request of the whole limit pass 2**53: in a double the
    # units to free rounded, so Redis answered too early or ran off the end of its log.
    clock = FakeClock(start=1_000.0)
    store = RedisStore(sync_client, prefix=prefix, time_source="caller")
    remote = SlidingWindowLog(limit=LARGEST, window=60.0, store=store, clock=clock)
    local = SlidingWindowLog(limit=LARGEST, window=60.0, clock=clock)
    for _ in range(admitted):
        assert remote.try_acquire("k") == local.try_acquire("k")
        clock.advance(10.0)
    assert remote.try_acquire("k", LARGEST) == local.try_acquire("k", LARGEST)
    assert remote.peek("k", LARGEST - 1) == local.peek("k", LARGEST - 1)
