"""Helpers for testing code that uses resilio: a fake clock, waits off, retries off, events.

Example:
    ```python
    from resilio.testing import FakeClock, use_clock

    def test_backs_off() -> None:
        clock = FakeClock()
        with use_clock(clock):
            ...  # every policy without its own clock= now runs on `clock`
        assert clock.sleeps == [1.0, 2.0, 4.0]
    ```
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import anyio
import anyio.lowlevel

from ._clock import Clock, runtime
from ._events import Event, add_listener, remove_listener

__all__ = [
    "FakeClock",
    "capture_events",
    "disable_retries",
    "disable_waits",
    "use_clock",
]


class FakeClock:
    """A clock that only moves when told to, or when something sleeps on it.

    Sleeping on it returns at once, advances the time by the sleep and records
    it in `sleeps`. The async sleep also yields to the event loop once, so
    cancellation still reaches a sleeping task.

    Args:
        start: The initial time in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the fake time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backward)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back; got {seconds} seconds")
        self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance time by it, without waiting."""
        self.sleeps.append(seconds)
        self._now += max(0.0, seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Record the sleep, advance time by it and yield to the loop once."""
        self.sleep(seconds)
        await anyio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Make ``clock`` the clock of every policy that has no ``clock=`` of its own."""
    if not isinstance(clock, Clock):
        raise TypeError(f"clock must have now(), sleep() and sleep_async(), got {clock!r}")
    previous = runtime.clock
    runtime.clock = clock
    try:
        yield clock
    finally:
        runtime.clock = previous


@contextmanager
def _switched_off(switch: str) -> Iterator[None]:
    previous = getattr(runtime, switch)
    setattr(runtime, switch, False)
    try:
        yield
    finally:
        setattr(runtime, switch, previous)


def disable_waits() -> AbstractContextManager[None]:
    """Skip every retry wait (the delays are still computed, reported and hooked)."""
    return _switched_off("waits_enabled")


def disable_retries() -> AbstractContextManager[None]:
    """Make every retry policy stop after the first attempt (reason ``"disabled"``)."""
    return _switched_off("retries_enabled")


@contextmanager
def capture_events() -> Iterator[list[Event]]:
    """Collect every event resilio emits while the block runs, in order."""
    events: list[Event] = []
    add_listener(events.append)
    try:
        yield events
    finally:
        remove_listener(events.append)
