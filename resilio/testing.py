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

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from ._clock import Clock, runtime
from ._events import Event, add_listener, remove_listener

if TYPE_CHECKING:
    from .chaos import ChaosContext

__all__ = [
    "FakeClock",
    "SkewedClock",
    "skew_clock",
    "capture_events",
    "disable_retries",
    "disable_waits",
    "use_clock",
]


def _seconds(value: object, what: str, *, at_least: float = 0.0) -> float:
    """``value`` as a finite number of seconds, at least ``at_least``, or raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} takes a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} takes a finite number of seconds, got {value}")
    if value < at_least:
        raise ValueError(f"a fake clock cannot go back: {what} got {value} seconds")
    return float(value)


class FakeClock:
    """A clock that only moves when told to, or when something sleeps on it.

    Sleeping on it returns at once, advances the time by the sleep and records
    it in `sleeps`. The async sleep also yields to the event loop once, so
    cancellation still reaches a sleeping task.

    Args:
        start: The initial time in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = _seconds(start, "start", at_least=-math.inf)  # any finite time
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the fake time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backward)."""
        self._now += _seconds(seconds, "advance()")

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance time by it, without waiting."""
        seconds = _seconds(seconds, "sleep()")
        self.sleeps.append(seconds)
        self._now += seconds

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


class SkewedClock:
    """A clock that reads wrong on purpose: clock-skew chaos for tests.

    It reads ``base`` and adds ``offset`` seconds plus ``drift`` seconds for
    every second that passed since it was made: ``now() = base.now() + offset
    + drift * elapsed``. Sleeping is left to ``base``. Like every chaos
    strategy it has an injection rate (the share of readings that are skewed;
    1 by default, the whole point of installing it), an ``enabled`` switch and
    a seed, and the global switch of `resilio.chaos` turns it off. A rate
    below 1 gives a clock that jumps back and forth between true and skewed
    readings.

    Args:
        base: The clock to skew; default the process clock at construction.
        offset: Seconds added to every skewed reading (negative: behind).
        drift: Seconds gained per second (0.01 runs 1 % fast, -0.01 slow).
        injection_rate: The share of readings that are skewed, 0 to 1.
        enabled: Whether to skew at all: a bool, or a callable over a
            `resilio.chaos.ChaosContext`.
        seed: Seeds the random source behind ``injection_rate``.
    """

    def __init__(
        self,
        base: Clock | None = None,
        *,
        offset: float = 0.0,
        drift: float = 0.0,
        injection_rate: float = 1.0,
        enabled: bool | Callable[[ChaosContext], bool] = True,
        seed: int | None = None,
    ) -> None:
        from .chaos import Trigger

        if base is None:
            base = runtime.clock
        elif not isinstance(base, Clock):
            raise TypeError(f"base must have now(), sleep() and sleep_async(), got {base!r}")
        for option, value in (("offset", offset), ("drift", drift)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{option}= must be a number of seconds, got {value!r}")
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"{option}= must be finite, got {value}")
        if not drift > -1:
            raise ValueError(f"drift={drift} would make the clock stop or run backwards")
        self.base = base
        self.offset = float(offset)
        self.drift = float(drift)
        self._trigger = Trigger("clock_skew", injection_rate, enabled, seed)
        self._start = base.now()

    def now(self) -> float:
        """Return the base clock's time, skewed when the injection fires."""
        now = self.base.now()
        if not self._trigger.fires():
            return now
        return now + self.offset + self.drift * (now - self._start)

    def sleep(self, seconds: float) -> None:
        """Sleep on the base clock."""
        self.base.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Sleep on the base clock."""
        await self.base.sleep_async(seconds)

    def __repr__(self) -> str:
        return f"SkewedClock({self.base!r}, offset={self.offset}, drift={self.drift})"


@contextmanager
def skew_clock(
    *,
    offset: float = 0.0,
    drift: float = 0.0,
    injection_rate: float = 1.0,
    enabled: bool | Callable[[ChaosContext], bool] = True,
    seed: int | None = None,
) -> Iterator[SkewedClock]:
    """Skew the process clock while the block runs (see `SkewedClock` for the options).

    Example:
        ```python
        with use_clock(FakeClock()), skew_clock(offset=-30.0):
            ...  # every policy now reads a clock 30 s behind the fake one
        ```
    """
    clock = SkewedClock(
        offset=offset, drift=drift, injection_rate=injection_rate, enabled=enabled, seed=seed
    )
    with use_clock(clock):
        yield clock
