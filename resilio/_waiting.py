"""FIFO lines of callers waiting for a rate limiter, per key.

Only the caller at the head of a line talks to the store and sleeps (until
the store's ``retry_after``); everybody behind it waits on its own event and
is woken when it becomes the head. A waiter that leaves (admitted, timed out
or cancelled) wakes the next one, so nobody behind a departed waiter is left
blocked. Threads and tasks (asyncio or trio) may wait in the same line: a
task is woken through its own event loop when the waker runs elsewhere.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections import deque
from collections.abc import Callable

import anyio

__all__ = ["Line", "Lines", "TaskWaiter", "ThreadWaiter", "Waiter", "lines_for"]


class Waiter:
    """One caller in a line: what it asks for and until when it may wait."""

    __slots__ = ("cost", "deadline", "gone")

    def __init__(self, cost: int, deadline: float) -> None:
        self.cost = cost
        self.deadline = deadline
        # Set when the waiter left from the middle of its line; skipped later,
        # so leaving costs O(1) however long the line is.
        self.gone = False

    def wake(self) -> None:
        """Make the waiter look at the line again; safe from any thread."""
        raise NotImplementedError


class ThreadWaiter(Waiter):
    """A waiting thread."""

    __slots__ = ("event",)

    def __init__(self, cost: int, deadline: float) -> None:
        super().__init__(cost, deadline)
        self.event = threading.Event()

    def wake(self) -> None:
        """Set the thread's event."""
        self.event.set()


class TaskWaiter(Waiter):
    """A waiting task; must be created inside the task's event loop."""

    __slots__ = ("_call_soon", "_thread", "event")

    def __init__(self, cost: int, deadline: float) -> None:
        super().__init__(cost, deadline)
        self.event = anyio.Event()
        self._thread = threading.get_ident()
        self._call_soon = _loop_scheduler()

    def renew(self) -> None:
        """Replace a consumed event (anyio events cannot be cleared)."""
        self.event = anyio.Event()

    def _set(self) -> None:
        self.event.set()

    def wake(self) -> None:
        """Set the task's event, through its loop when called from another thread."""
        if threading.get_ident() == self._thread:
            self.event.set()
        else:
            self._call_soon(self._set)


def _loop_scheduler() -> Callable[[Callable[[], None]], object]:
    """Return a thread-safe 'run soon in the current event loop' function."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:
        pass
    # Not asyncio: anyio's only other backend is trio, an optional dependency.
    import trio

    return trio.lowlevel.current_trio_token().run_sync_soon


class Line:
    """The waiters of one key, in arrival order, with their number and total cost.

    ``waiters`` may hold departed waiters (``gone``) behind the head; the head
    itself is always present.
    """

    __slots__ = ("cost", "live", "waiters")

    def __init__(self) -> None:
        self.waiters: deque[Waiter] = deque()
        self.cost = 0
        self.live = 0


class Lines:
    """Every key's line for one limiter. A key with nobody waiting has no line."""

    __slots__ = ("_lock", "lines")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lines: dict[str, Line] = {}

    def queued_cost(self, key: str) -> int:
        """The total cost waiting on ``key``."""
        line = self.lines.get(key)
        return 0 if line is None else line.cost

    def join(self, key: str, waiter: Waiter) -> None:
        """Put ``waiter`` at the back of ``key``'s line."""
        with self._lock:
            line = self.lines.get(key)
            if line is None:
                line = self.lines[key] = Line()
            line.waiters.append(waiter)
            line.cost += waiter.cost
            line.live += 1

    def is_head(self, key: str, waiter: Waiter) -> bool:
        """Whether ``waiter`` is first in ``key``'s line."""
        line = self.lines.get(key)
        return line is not None and line.waiters[0] is waiter

    def leave(self, key: str, waiter: Waiter) -> None:
        """Take ``waiter`` out of ``key``'s line, waking the next head if it changed."""
        wake = None
        with self._lock:
            line = self.lines.get(key)
            if line is None or waiter.gone:
                return
            line.cost -= waiter.cost
            line.live -= 1
            if line.live == 0:
                del self.lines[key]
                return
            waiters = line.waiters
            if waiters[0] is not waiter:
                waiter.gone = True
                return
            waiters.popleft()
            while waiters[0].gone:
                waiters.popleft()
            wake = waiters[0]
        wake.wake()

    def wake_expired(self, key: str, now: float) -> float:
        """Wake the waiters whose deadline has passed, so they can leave; return the next deadline.

        Waiters time out on their own in real time; on a clock other than the
        system's, time may move only when the head sleeps (a test's fake
        clock), so the head calls this before each sleep and sleeps no longer
        than until the deadline returned (``math.inf`` when nobody waits for
        one), and a waiter behind it leaves when its own timeout ends.
        """
        with self._lock:
            line = self.lines.get(key)
            waiting = [] if line is None else [w for w in line.waiters if not w.gone]
        soonest = math.inf
        for waiter in waiting:
            if waiter.deadline <= now:
                waiter.wake()
            elif waiter.deadline < soonest:
                soonest = waiter.deadline
        return soonest


_shared: weakref.WeakKeyDictionary[object, dict[tuple[str, ...], Lines]] = (
    weakref.WeakKeyDictionary()
)
_shared_lock = threading.Lock()


def lines_for(store: object, names: tuple[str, ...]) -> Lines:
    """The lines of every limiter that applies the limits named ``names`` on ``store``.

    Limiters that apply the same limits on one store share their state, so
    their callers wait in one FIFO line per key in this process, however
    many limiter objects there are. A store that cannot be weakly referenced
    gets no registry: each limiter on it then has lines of its own.
    """
    with _shared_lock:
        try:
            by_names = _shared.setdefault(store, {})
        except TypeError:
            return Lines()
        lines = by_names.get(names)
        if lines is None:
            lines = by_names[names] = Lines()
        return lines
