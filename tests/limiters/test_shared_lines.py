"""Limiter objects with one name on one store share their state, so their waiters share one line."""

from __future__ import annotations

import threading

from resilio import TokenBucket
from resilio.stores import MemoryStore, Store

from .test_waiting import ManualClock, wait_for


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


def test_lines_are_shared_per_store_and_name_only() -> None:
    store, other = MemoryStore(), MemoryStore()
    first = TokenBucket(rate=10, name="a", store=store)
    assert TokenBucket(rate=10, name="a", store=store)._lines is first._lines
    assert TokenBucket(rate=10, name="b", store=store)._lines is not first._lines
    assert TokenBucket(rate=10, name="a", store=other)._lines is not first._lines
    assert TokenBucket(rate=10)._lines is not TokenBucket(rate=10)._lines  # each its own store
