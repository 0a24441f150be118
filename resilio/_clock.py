"""Clocks, sleeps and the process-wide switches that ``resilio.testing`` flips.

Every time-dependent decision in resilio reads time from a `Clock`. The
default is the monotonic clock with real sleeps; tests swap it globally (see
`resilio.testing`) or per policy (the ``clock=`` option).
"""

from __future__ import annotations

import threading
import time
import weakref
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
    """

    __slots__ = ("_changing", "_watchers", "clock", "retries_enabled", "waits_enabled")

    _changing: threading.RLock
    _watchers: weakref.WeakSet[Watcher]

    def __init__(self) -> None:
        object.__setattr__(self, "_changing", threading.RLock())
        object.__setattr__(self, "_watchers", weakref.WeakSet())
        self.clock: Clock = SystemClock()
        self.waits_enabled = True
        self.retries_enabled = True

    def __setattr__(self, name: str, value: object) -> None:
        with self._changing:
            object.__setattr__(self, name, value)
            self.changed()

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher._runtime_changed()`` now and after every change, while it lives.

        So the hottest paths may fix what they read here (the clock, whether
        anybody listens) instead of reading it on every call.
        """
        with self._changing:
            self._watchers.add(watcher)
            watcher._runtime_changed()

    def held(self) -> threading.RLock:
        """The lock that changes take: hold it to read settings and act on them as one step."""
        return self._changing

    def changed(self) -> None:
        """Tell every watcher that a process-wide setting changed (the clock, global listeners...).

        Changes are told one at a time and in order, so the last a watcher
        hears of is the latest.
        """
        with self._changing:
            for watcher in list(self._watchers):
                watcher._runtime_changed()


class Watcher(Protocol):
    """What `_Runtime.watch` takes: an object that follows process-wide settings."""

    def _runtime_changed(self) -> None: ...


runtime = _Runtime()
