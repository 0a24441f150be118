"""resilio.testing helpers and the event registry."""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import pytest

import resilio
from resilio._clock import SystemClock, runtime
from resilio.testing import FakeClock, capture_events, disable_retries, disable_waits, use_clock


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=5.0)
    assert clock.now() == 5.0
    clock.advance(1.5)
    clock.sleep(2.0)
    assert clock.now() == 8.5
    assert clock.sleeps == [2.0]
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


@pytest.mark.parametrize(
    ("act", "error"),
    [
        (lambda: FakeClock(start=math.nan), ValueError),
        (lambda: FakeClock(start=math.inf), ValueError),
        (lambda: FakeClock(start=-math.inf), ValueError),
        (lambda: FakeClock(start="0"), TypeError),
        (lambda: FakeClock().advance(math.nan), ValueError),
        (lambda: FakeClock().advance(math.inf), ValueError),
        (lambda: FakeClock().advance(-1.0), ValueError),
        (lambda: FakeClock().advance(True), TypeError),
        (lambda: FakeClock().sleep(math.nan), ValueError),
        (lambda: FakeClock().sleep(-1.0), ValueError),
        (lambda: FakeClock().sleep(math.inf), ValueError),
    ],
)
def test_fake_clock_refuses_times_that_would_poison_it(act: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        act()


@pytest.mark.anyio
async def test_fake_clock_async_sleep_advances_and_checkpoints() -> None:
    clock = FakeClock()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clock.sleep_async(3.0)  # a checkpoint: the cancellation lands here
        pytest.fail("the fake sleep must be a cancellation point")
    assert clock.sleeps == [3.0]
    assert clock.now() == 3.0


def test_switches_restore_previous_values() -> None:
    clock = FakeClock()
    with use_clock(clock):
        assert runtime.clock is clock
        with disable_waits(), disable_retries():
            assert not runtime.waits_enabled
            assert not runtime.retries_enabled
    assert isinstance(runtime.clock, SystemClock)
    assert runtime.waits_enabled
    assert runtime.retries_enabled
    with pytest.raises(TypeError, match="now"), use_clock(object()):  # type: ignore[arg-type]
        pass


def test_capture_events_and_global_listeners(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: resilio.Event) -> None:
        raise RuntimeError("listener bug")

    resilio.add_listener(broken)
    try:
        with capture_events() as events, use_clock(FakeClock()):

            @resilio.retry(on=KeyError, attempts=2, backoff=resilio.backoff.constant(1.0))
            def fail() -> None:
                raise KeyError("k")

            with pytest.raises(KeyError), caplog.at_level(logging.ERROR, logger="resilio"):
                fail()
    finally:
        resilio.remove_listener(broken)
    assert [e.kind for e in events] == [resilio.EventKind.RETRY, resilio.EventKind.GAVE_UP]
    assert "listener bug" in caplog.text
    with pytest.raises(ValueError):  # noqa: PT011 - list.remove's own message
        resilio.remove_listener(broken)
    with pytest.raises(TypeError, match="callable"):
        resilio.add_listener("not callable")  # type: ignore[arg-type]


def test_per_policy_listeners_hear_only_their_policy() -> None:
    heard: list[str] = []
    a = resilio.retry(
        on=KeyError,
        attempts=2,
        backoff=resilio.backoff.none(),
        listeners=[lambda e: heard.append(e.source)],
        name="a",
    )
    b = resilio.retry(on=KeyError, attempts=2, backoff=resilio.backoff.none(), name="b")

    def fail() -> None:
        raise KeyError

    for policy in (a, b):
        with pytest.raises(KeyError):
            policy(fail)()
    assert heard == ["a", "a"]
    with pytest.raises(TypeError, match="listeners"):
        resilio.retry(on=KeyError, listeners=[1])  # type: ignore[list-item]


def test_listeners_added_and_removed_by_many_threads_at_once_all_count() -> None:
    import sys
    import threading

    from resilio import _events

    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(300):
                with capture_events():
                    pass
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show at once
    try:
        threads = [threading.Thread(target=churn) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert _events.global_listeners == ()
