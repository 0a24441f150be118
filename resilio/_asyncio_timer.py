"""Cheap timeouts on asyncio: one timer per timeout and loop instead of one per call.

``asyncio.timeout`` and anyio's cancel scopes arm and disarm an event-loop
timer on every call, which costs several microseconds. Calls through one
`resilio.timeout` all have the same duration, so their deadlines arrive in the
order the calls started. A `Lane` keeps the running calls of one timeout on
one loop in an insertion-ordered dict and arms a single timer for the oldest;
when it fires it cancels the calls that are due and re-arms for the next. A
call that ends simply leaves the dict. The cancellation itself follows
``asyncio.timeout``: the task is cancelled, and the cancellation becomes a
timeout only if no one else asked for one meanwhile (``Task.uncancel``).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

__all__ = ["Call", "Lane", "lane_for"]


class Call:
    """One running call: its task, deadline (loop time) and whether it expired."""

    __slots__ = ("deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False


class Lane:
    """The running calls of timeouts of ``seconds`` on one event loop, served by one timer.

    It refers to its loop weakly, so a closed loop and its lanes can go.
    """

    __slots__ = ("calls", "handle", "loop_ref", "seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop_ref = weakref.ref(loop)
        self.seconds = seconds
        self.calls: dict[Call, None] = {}
        self.handle: asyncio.TimerHandle | None = None

    def enter(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> Call:
        """Register a call starting now on ``loop``; arm the timer if none is armed."""
        call = Call(task, loop.time() + self.seconds)
        self.calls[call] = None
        if self.handle is None:
            self.handle = loop.call_at(call.deadline, self._fire, loop)
        return call

    def leave(self, call: Call) -> None:
        """Forget a call that ended (the timer, if armed for it, re-arms itself)."""
        self.calls.pop(call, None)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handle = None
        now = loop.time()
        calls = self.calls
        while calls:
            call = next(iter(calls))
            if call.deadline > now:
                self.handle = loop.call_at(call.deadline, self._fire, loop)
                return
            del calls[call]
            call.expired = True
            call.task.cancel()


_lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Lane]] = (
    weakref.WeakKeyDictionary()
)
_lanes_lock = threading.Lock()


def lane_for(loop: asyncio.AbstractEventLoop, seconds: float) -> Lane:
    """Return the lane of timeouts of ``seconds`` on ``loop``, creating it once."""
    with _lanes_lock:
        per_loop = _lanes.get(loop)
        if per_loop is None:
            per_loop = _lanes[loop] = {}
        lane = per_loop.get(seconds)
        if lane is None:
            lane = per_loop[seconds] = Lane(loop, seconds)
        return lane
