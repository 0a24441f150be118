"""Clocks, sleeps and the process-wide switches that ``resilio.testing`` flips.

Every time-dependent decision in resilio reads time from a `Clock`. The
default is the monotonic clock with real sleeps; tests swap it globally (see
`resilio.testing`) or per policy (the ``clock=`` option).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "runtime"]


@runtime_checkable
class Clock(Protocol):
    """Where resilio reads the time and how it waits.

    Durations are seconds on a monotonic scale; only differences matter.
    """

    def now(self) -> float:
        """Return the current time in seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.sleep`` and ``anyio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep with ``time.sleep``."""
        time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        """Sleep with ``anyio.sleep`` (asyncio or trio)."""
        import anyio

        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class _Runtime:
    """Process-wide settings, read on the slow paths only.

    Attributes:
        clock: The clock used by every policy without a ``clock=`` of its own.
        waits_enabled: When false, retry and limiter waits are skipped
            (the delays are still computed and reported).
        retries_enabled: When false, every retry policy makes one attempt.
        version: Grows by one whenever any setting here or the set of global
            event listeners changes, after the change: what was read after
            reading a version is at least that recent.
    """

    __slots__ = ("_changing", "clock", "retries_enabled", "version", "waits_enabled")

    _changing: threading.Lock
    version: int

    def __init__(self) -> None:
        object.__setattr__(self, "_changing", threading.Lock())
        object.__setattr__(self, "version", 0)
        self.clock: Clock = SystemClock()
        self.waits_enabled = True
        self.retries_enabled = True

    def __setattr__(self, name: str, value: object) -> None:
        # Every change counts, so the hottest paths can cache what they read here
        # and look again only when `version` moved (see `changed`).
        object.__setattr__(self, name, value)
        self.changed()

    def changed(self) -> None:
        """Count a change of a process-wide setting (the clock, global listeners...)."""
        with self._changing:  # two changes at once both count
            object.__setattr__(self, "version", self.version + 1)


runtime = _Runtime()
