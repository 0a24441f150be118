"""Hedging on asyncio and trio: a late second attempt, the first good outcome, losers cancelled."""

from __future__ import annotations

import inspect
import time
from typing import Any

import anyio
import pytest

import resilio
from resilio._bulkhead import Bulkhead
from resilio._hedge import Hedge, hedge
from resilio.testing import FakeClock, capture_events

pytestmark = pytest.mark.anyio


class Attempts:
    """Scripted attempts: each call takes the next behaviour from the list."""

    def __init__(self, *behaviours: Any) -> None:
        self.behaviours = list(behaviours)
        self.started = 0
        self.cancelled: list[int] = []
        self.finished: list[int] = []

    async def __call__(self, key: str = "k") -> str:
        index = self.started
        self.started += 1
        behaviour = self.behaviours[index]
        try:
            if isinstance(behaviour, BaseException):
                raise behaviour
            seconds, answer = behaviour
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(index)
            raise
        self.finished.append(index)
        return f"{answer} {key}"


async def test_a_fast_primary_needs_no_hedge() -> None:
    attempts = Attempts((0, "primary"))
    with capture_events() as events:
        assert await hedge(delay=0.5)(attempts)() == "primary k"
    assert attempts.started == 1
    assert not [e for e in events if e.kind is resilio.EventKind.HEDGE]


async def test_slow_primary_loses_to_the_hedge_and_is_cancelled() -> None:
    attempts = Attempts((10, "primary"), (0, "hedge"))
    started = time.monotonic()
    with capture_events() as events:
        assert await hedge(delay=0.02)(attempts)("x") == "hedge x"
    assert time.monotonic() - started < 5
    assert attempts.cancelled == [0]
    assert attempts.finished == [1]
    hedges = [e for e in events if e.kind is resilio.EventKind.HEDGE]
    assert [e.attempt for e in hedges] == [2]


async def test_primary_may_still_win() -> None:
    attempts = Attempts((0.05, "primary"), (10, "hedge"))
    assert await hedge(delay=0.01)(attempts)() == "primary k"
    assert attempts.cancelled == [1]


async def test_the_delay_is_slept_on_the_clock() -> None:
    clock = FakeClock()
    gate = anyio.Event()
    calls = 0

    async def stuck_then_fast() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()  # never set: only the hedge can answer
        return f"attempt {calls}"

    assert await hedge(delay=3.0, clock=clock)(stuck_then_fast)() == "attempt 2"
    assert clock.sleeps == [3.0]


async def test_a_failure_starts_the_next_attempt_at_once() -> None:
    attempts = Attempts(OSError("reset"), (0, "second"))
    with anyio.fail_after(5):  # far less than the hedging delay
        assert await hedge(delay=60.0)(attempts)() == "second k"
    assert attempts.started == 2


async def test_all_failures_raise_the_primary_failure() -> None:
    primary = OSError("primary down")
    attempts = Attempts(primary, ConnectionError("hedge down"), TimeoutError("third"))
    with pytest.raises(OSError, match="primary down") as caught:
        await hedge(delay=0.01, attempts=3)(attempts)()
    assert caught.value is primary
    assert attempts.started == 3


async def test_unhandled_exceptions_are_answers() -> None:
    attempts = Attempts(KeyError("bad request"), (10, "never"))
    with pytest.raises(KeyError, match="bad request"):
        await hedge(delay=0.5, on=OSError)(attempts)()
    assert attempts.started == 1


async def test_results_can_count_as_failures() -> None:
    calls = 0

    async def status() -> int:
        nonlocal calls
        calls += 1
        return 503 if calls == 1 else 200

    def unavailable(outcome: resilio.Outcome[Any]) -> bool:
        return outcome.result == 503

    assert await hedge(delay=5.0, on=unavailable)(status)() == 200
    assert calls == 2


async def test_parallel_mode_starts_every_attempt_at_once() -> None:
    attempts = Attempts((10, "a"), (10, "b"), (0, "c"))
    assert await hedge(delay=0, attempts=3)(attempts)() == "c k"
    assert sorted(attempts.cancelled) == [0, 1]


async def test_never_more_than_attempts() -> None:
    attempts = Attempts((0.2, "a"), (0.2, "b"), (0.2, "c"))
    result = await hedge(delay=0.01, attempts=2)(attempts)()
    assert result in {"a k", "b k"}
    assert attempts.started == 2


async def test_cancelling_the_caller_cancels_every_attempt() -> None:
    attempts = Attempts((10, "a"), (10, "b"))
    with anyio.move_on_after(0.1) as scope:
        await hedge(delay=0.01)(attempts)()
    assert scope.cancelled_caught
    assert sorted(attempts.cancelled) == [0, 1]


class Abort(BaseException):
    """Stands for KeyboardInterrupt and SystemExit, which event loops treat specially."""


async def test_base_exceptions_in_an_attempt_come_out_as_themselves() -> None:
    abort = Abort()
    attempts = Attempts(abort, (10, "never"))
    with pytest.raises(Abort) as caught:
        await hedge(delay=0.01, on=lambda outcome: True)(attempts)()
    assert caught.value is abort


async def test_each_attempt_passes_through_inner_strategies() -> None:
    bulkhead = Bulkhead(max_concurrent=1)
    attempts = Attempts((0.2, "primary"), (0, "hedge"))
    policy = resilio.Pipeline(hedge(delay=0.01), bulkhead)
    # The hedge is refused by the bulkhead (a failure), so the primary answers.
    assert await policy(attempts)() == "primary k"
    assert attempts.started == 1
    assert bulkhead.in_use == 0


async def test_keeps_the_signature() -> None:
    async def fetch(key: str, *, fresh: bool = False) -> str:
        """Fetch."""
        return key

    wrapped = hedge(delay=0.1)(fetch)
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert inspect.iscoroutinefunction(wrapped)
    assert wrapped.__doc__ == "Fetch."
    assert await wrapped("k") == "k"


def test_refuses_sync_functions_at_decoration() -> None:
    def fetch() -> str:
        return "x"

    with pytest.raises(TypeError, match="async functions only"):
        hedge(delay=0.1)(fetch)
    with pytest.raises(TypeError, match="async functions only"):
        resilio.Pipeline(resilio.timeout(1.0), hedge(delay=0.1))(fetch)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"delay": -1}, ValueError),
        ({"delay": float("inf")}, ValueError),
        ({"delay": "1"}, TypeError),
        ({"delay": 1, "attempts": 1}, ValueError),
        ({"delay": 1, "attempts": 11}, ValueError),
        ({"delay": 1, "attempts": 2.0}, TypeError),
        ({"delay": 1, "on": SystemExit}, ValueError),
        ({"delay": 1, "clock": "now"}, TypeError),
    ],
)
def test_rejects_bad_configuration(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Hedge(**options)


async def test_a_per_attempt_timeout_inside_starts_the_next_attempt() -> None:
    attempts = Attempts((10, "hung"), (0, "fresh"))
    policy = resilio.Pipeline(hedge(delay=30.0), resilio.timeout(0.02))
    with anyio.fail_after(5):
        assert await policy(attempts)() == "fresh k"
    assert attempts.cancelled == [0]
