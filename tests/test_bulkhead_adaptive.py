"""Adaptive limits: the AIMD and gradient arithmetic, and a bulkhead that follows latency."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import resilio
from resilio._bulkhead import Bulkhead
from resilio._core.adaptive import AIMD, Gradient
from resilio.testing import FakeClock, capture_events

from .test_bulkhead_async import wait_until

# -- AIMD -------------------------------------------------------------------------


def test_aimd_adds_one_while_busy() -> None:
    limit = AIMD(min_limit=1, max_limit=10).start(4)
    assert limit.update(0.01, inflight=2, dropped=False) == 5
    assert limit.update(0.01, inflight=3, dropped=False) == 6


def test_aimd_does_not_grow_while_mostly_idle() -> None:
    limit = AIMD(min_limit=1, max_limit=10).start(8)
    assert limit.update(0.01, inflight=3, dropped=False) == 8


def test_aimd_backs_off_on_a_drop_and_on_a_slow_call() -> None:
    limit = AIMD(min_limit=1, max_limit=100, backoff_ratio=0.5, slow_call_duration=1.0).start(40)
    assert limit.update(0.01, inflight=40, dropped=True) == 20
    assert limit.update(1.5, inflight=20, dropped=False) == 10


def test_aimd_small_limits_still_shrink() -> None:
    limit = AIMD(min_limit=1, max_limit=10, backoff_ratio=0.9).start(3)
    assert limit.update(0.01, inflight=3, dropped=True) == 2
    assert limit.update(0.01, inflight=2, dropped=True) == 1
    assert limit.update(0.01, inflight=1, dropped=True) == 1


def test_aimd_stays_within_bounds() -> None:
    limit = AIMD(min_limit=2, max_limit=5).start(5)
    assert limit.update(0.01, inflight=5, dropped=False) == 5
    for _ in range(50):
        limit.update(0.01, inflight=5, dropped=True)
    assert limit.limit == 2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"min_limit": 0}, ValueError),
        ({"min_limit": 5, "max_limit": 4}, ValueError),
        ({"max_limit": 2.5}, TypeError),
        ({"backoff_ratio": 0.4}, ValueError),
        ({"backoff_ratio": 1.0}, ValueError),
        ({"slow_call_duration": 0}, ValueError),
        ({"slow_call_duration": "1"}, TypeError),
    ],
)
def test_aimd_rejects_bad_configuration(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        AIMD(**options)


# -- Gradient -----------------------------------------------------------------------


def test_gradient_grows_while_latency_is_steady() -> None:
    limit = Gradient(min_limit=1, max_limit=100, smoothing=1.0, queue_size=2).start(10)
    for _ in range(5):
        limit.update(0.1, inflight=limit.limit, dropped=False)
    assert limit.limit == 20


def test_gradient_shrinks_when_latency_rises() -> None:
    limit = Gradient(min_limit=1, max_limit=100, smoothing=1.0, queue_size=0).start(40)
    for _ in range(100):
        limit.update(0.1, inflight=40, dropped=False)
    assert limit.limit == 40
    limit.update(0.4, inflight=40, dropped=False)
    assert limit.limit < 40
    assert limit.limit >= 20  # the gradient never falls below 0.5


def test_gradient_ignores_samples_while_app_limited() -> None:
    limit = Gradient(min_limit=1, max_limit=100).start(20)
    assert limit.update(0.1, inflight=3, dropped=False) == 20
    assert limit.update(5.0, inflight=3, dropped=False) == 20


def test_gradient_halves_its_target_on_a_drop() -> None:
    limit = Gradient(min_limit=1, max_limit=100, smoothing=1.0, queue_size=0).start(40)
    assert limit.update(0.1, inflight=40, dropped=True) == 20


def test_gradient_recovers_after_an_overload() -> None:
    limit = Gradient(min_limit=1, max_limit=50, smoothing=0.5, long_window=50).start(20)
    for _ in range(60):
        limit.update(1.0, inflight=limit.limit, dropped=False)
    for _ in range(60):
        limit.update(0.05, inflight=limit.limit, dropped=False)
    assert limit.limit == 50


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"tolerance": 0.9}, ValueError),
        ({"smoothing": 0}, ValueError),
        ({"smoothing": 1.5}, ValueError),
        ({"long_window": 0}, ValueError),
        ({"queue_size": -1}, ValueError),
        ({"queue_size": 1.5}, TypeError),
    ],
)
def test_gradient_rejects_bad_configuration(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Gradient(**options)


# -- the bulkhead driver ---------------------------------------------------------------


def test_adaptive_bulkhead_shrinks_on_overload_and_reports_it() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(
        max_concurrent=10, adaptive=AIMD(min_limit=1, max_limit=20, backoff_ratio=0.5), clock=clock
    )

    @bulkhead
    def call(seconds: float, fail: bool) -> None:
        clock.advance(seconds)
        if fail:
            raise resilio.TimeoutExceeded("slow", timeout=1.0)

    with capture_events() as events, pytest.raises(resilio.TimeoutExceeded):
        call(1.0, True)
    assert bulkhead.limit == 5
    changed = [e for e in events if e.kind is resilio.EventKind.BULKHEAD_LIMIT_CHANGED]
    assert [(e.previous_state, e.state) for e in changed] == [(10, 5)]
    with pytest.raises(ValueError, match="not overload"):
        bulkhead.call(_raise, ValueError("not overload"))
    assert bulkhead.limit == 5  # a plain failure with one call in flight: idle, no change


def _raise(exc: Exception) -> None:
    raise exc


def test_adaptive_bulkhead_measures_latency_on_its_clock() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(
        max_concurrent=2,
        adaptive=AIMD(min_limit=1, max_limit=20, slow_call_duration=0.5),
        clock=clock,
    )

    @bulkhead
    def call(seconds: float) -> None:
        clock.advance(seconds)

    call(0.1)  # 1 in flight, limit 2: busy enough to grow
    assert bulkhead.limit == 3
    call(0.6)  # slower than slow_call_duration: back off
    assert bulkhead.limit == 2


def test_overload_predicate_sees_results() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(
        max_concurrent=4,
        adaptive=AIMD(min_limit=1, max_limit=8, backoff_ratio=0.5),
        overload_on=lambda outcome: outcome.result == 503,
        clock=clock,
    )

    @bulkhead
    def answer(status: int) -> int:
        return status

    assert answer(503) == 503
    assert bulkhead.limit == 2


def test_cancelled_calls_do_not_move_the_limit() -> None:
    bulkhead = Bulkhead(max_concurrent=4, adaptive=AIMD(min_limit=1, max_limit=8))

    @bulkhead
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert bulkhead.limit == 4
    assert bulkhead.in_use == 0


@pytest.mark.anyio
async def test_a_growing_limit_admits_queued_tasks() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(
        max_concurrent=1,
        max_queue=5,
        adaptive=AIMD(min_limit=1, max_limit=10),
        clock=clock,
    )
    release = anyio.Event()
    running = 0
    peak = 0

    @bulkhead
    async def work(hold: bool) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if hold:
            await release.wait()
        running -= 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(work, True)
            await wait_until(lambda: bulkhead.in_use == 1)
            for _ in range(3):
                group.start_soon(work, True)
            await wait_until(lambda: bulkhead.queued == 3)
            release.set()
    # Each finished call raised the limit by one, so the queue drained through more slots.
    assert bulkhead.limit > 1
    assert (bulkhead.in_use, bulkhead.queued) == (0, 0)


@pytest.mark.anyio
async def test_adaptive_bulkhead_async_backs_off_on_timeouts() -> None:
    bulkhead = Bulkhead(
        max_concurrent=8, adaptive=AIMD(min_limit=1, max_limit=8, backoff_ratio=0.5)
    )
    slow = resilio.Pipeline(bulkhead, resilio.timeout(0.01))

    @slow
    async def hang() -> None:
        await anyio.sleep(1)

    with pytest.raises(resilio.TimeoutExceeded):
        await hang()
    assert bulkhead.limit == 4
