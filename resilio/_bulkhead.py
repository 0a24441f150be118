"""`resilio.Bulkhead`: a concurrency limiter with a bounded FIFO queue.

One lock guards a few counters and the queue; it is never held while a user
function runs. A slot is handed from the caller that leaves straight to the
waiter at the head of the queue, so nobody can overtake the queue. A waiter
that gives up (its wait ran out, or it was cancelled or interrupted) leaves
the queue at once, and if a slot was handed to it in the meantime it passes
the slot on: no slot is ever lost to an abandoned waiter.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import NoReturn, ParamSpec, TypeVar

import anyio

from ._clock import Clock, runtime
from ._context import time_remaining
from ._core.adaptive import AdaptiveLimit, LimitAlgorithm
from ._errors import RejectedError
from ._events import Event, EventKind, Listener, emit, listening, validate_listeners
from ._outcome import Classifier, ExceptionSpec, matches
from ._strategy import Strategy, checked_name
from ._waiting import TaskWaiter, ThreadWaiter

__all__ = ["Bulkhead", "BulkheadFullError"]

P = ParamSpec("P")
T = TypeVar("T")


class BulkheadFullError(RejectedError):
    """A bulkhead refused a call: every slot was busy and the queue full, or the wait ran out.

    Attributes:
        bulkhead: The name of the bulkhead that refused the call.
        retry_after: Always 0: a slot may free up at any moment.
    """

    def __init__(self, message: str, *, bulkhead: str) -> None:
        super().__init__(message, retry_after=0.0)
        self.bulkhead = bulkhead


class _ThreadSlot(ThreadWaiter):
    __slots__ = ("granted",)

    def __init__(self) -> None:
        super().__init__(1, math.inf)
        self.granted = False


class _TaskSlot(TaskWaiter):
    __slots__ = ("granted",)

    def __init__(self) -> None:
        super().__init__(1, math.inf)
        self.granted = False


_Slot = _ThreadSlot | _TaskSlot


def _count(value: object, option: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option}= must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{option}= must be at least {minimum}, got {value}")
    return value


class Bulkhead(Strategy):
    """Lets at most ``max_concurrent`` calls run at once; up to ``max_queue`` more wait in line.

    A call that finds every slot busy joins a FIFO queue; when the queue is
    full it is rejected at once with `BulkheadFullError` (a
    `resilio.RejectedError`). A queued call that waits longer than
    ``max_wait`` is rejected the same way. Threads and tasks (asyncio or
    trio) may share one bulkhead. Cancelling or interrupting a queued caller
    takes it out of the queue; a caller that holds a slot always gives it back,
    whatever ends its call.

    With ``adaptive=`` the limit moves with observed latency (`AIMD` or
    `Gradient`), starting at ``max_concurrent``: slow calls and overload
    signals (``overload_on``) lower it, fast ones raise it.

    Args:
        max_concurrent: How many calls may run at once (the starting limit when
            adaptive).
        max_queue: How many calls may wait for a slot; 0 rejects at once when
            every slot is busy.
        max_wait: Seconds a queued call waits before it is rejected; ``None``
            waits as long as it takes. Measured on the real clock.
        adaptive: An `AIMD` or `Gradient` algorithm that moves the limit.
        overload_on: Outcomes an adaptive limit treats as overload (default:
            timeouts): exception types or a predicate over a `resilio.Outcome`.
        listeners: Callables that receive this bulkhead's `resilio.Event` objects.
        clock: Where an adaptive limit reads call durations; default the
            process clock.
        name: The name in events and error messages.

    Example:
        ```python
        database = resilio.Bulkhead(max_concurrent=10, max_queue=20, max_wait=1.0)

        @database
        async def query(sql: str) -> list[Row]: ...
        ```
    """

    __slots__ = (
        "_adaptive",
        "_clock",
        "_in_use",
        "_limit",
        "_listeners",
        "_lock",
        "_overload",
        "_queue",
        "_waiting",
        "max_queue",
        "max_wait",
        "name",
    )

    def __init__(
        self,
        *,
        max_concurrent: int,
        max_queue: int = 0,
        max_wait: float | None = None,
        adaptive: LimitAlgorithm | None = None,
        overload_on: ExceptionSpec = TimeoutError,
        listeners: Iterable[Listener] | None = None,
        clock: Clock | None = None,
        name: str = "bulkhead",
    ) -> None:
        self._limit = _count(max_concurrent, "max_concurrent", 1)
        self.max_queue = _count(max_queue, "max_queue", 0)
        if max_wait is not None:
            if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)):
                raise TypeError(f"max_wait= must be seconds (a number) or None, got {max_wait!r}")
            if not (0 < max_wait < math.inf):
                raise ValueError(
                    f"max_wait= must be a finite number of seconds above 0 (or None), "
                    f"got {max_wait}"
                )
            if self.max_queue == 0:
                raise ValueError(
                    "max_wait= applies to queued calls, but max_queue=0 queues none; "
                    "set max_queue= or drop max_wait="
                )
            max_wait = float(max_wait)
        self.max_wait = max_wait
        self._adaptive: AdaptiveLimit | None = None
        if adaptive is not None:
            if not isinstance(adaptive, LimitAlgorithm):
                raise TypeError(
                    f"adaptive= takes resilio.AIMD(...) or resilio.Gradient(...), got {adaptive!r}"
                )
            if not adaptive.min_limit <= max_concurrent <= adaptive.max_limit:
                raise ValueError(
                    f"max_concurrent={max_concurrent} is the starting limit and must lie "
                    f"within min_limit={adaptive.min_limit} and max_limit={adaptive.max_limit}"
                )
            self._adaptive = adaptive.start(max_concurrent)
        self._overload = Classifier(overload_on, "overload_on")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock= must have now(), sleep() and sleep_async(), got {clock!r}")
        self._clock = clock
        self._listeners = validate_listeners(listeners)
        self.name = checked_name(name)
        self._lock = threading.Lock()
        self._in_use = 0
        # Queued callers, oldest first. May hold departed ones (`gone`); they are skipped.
        self._queue: deque[_Slot] = deque()
        self._waiting = 0

    # -- public state --------------------------------------------------------

    @property
    def limit(self) -> int:
        """How many calls may run at once now (it moves when adaptive)."""
        return self._limit

    @property
    def in_use(self) -> int:
        """How many calls hold a slot now."""
        return self._in_use

    @property
    def queued(self) -> int:
        """How many calls wait for a slot now."""
        return self._waiting

    def __repr__(self) -> str:
        return (
            f"Bulkhead(name={self.name!r}, limit={self._limit}, in_use={self._in_use}, "
            f"queued={self._waiting}, max_queue={self.max_queue})"
        )

    # -- slots ---------------------------------------------------------------

    def _enter(self, make: Callable[[], _Slot]) -> _Slot | None:
        """Take a slot (return None) or a place in the queue (return the waiter)."""
        with self._lock:
            if self._in_use < self._limit and self._waiting == 0:
                self._in_use += 1
                return None
            if self._waiting < self.max_queue:
                waiter = make()
                self._queue.append(waiter)
                self._waiting += 1
                return waiter
        self._reject(f"all {self._limit} slots are busy and the queue is full")

    def _reject(self, detail: str) -> NoReturn:
        if listening(self._listeners):
            now = (self._clock or runtime.clock).now()
            emit(Event(EventKind.BULKHEAD_REJECTED, self.name, now), self._listeners)
        raise BulkheadFullError(f"bulkhead {self.name!r}: {detail}", bulkhead=self.name)

    def _hand_on(self) -> list[_Slot]:
        """Give free slots to the oldest waiters; call with the lock held."""
        woken: list[_Slot] = []
        queue = self._queue
        while queue and self._in_use < self._limit:
            waiter = queue.popleft()
            if waiter.gone:
                continue
            waiter.granted = True
            self._in_use += 1
            self._waiting -= 1
            woken.append(waiter)
        return woken

    def _abandon(self, waiter: _Slot) -> bool:
        """Take a waiter that gave up out of the queue; return whether it holds a slot."""
        with self._lock:
            if waiter.granted:
                return True
            waiter.gone = True
            self._waiting -= 1
            queue = self._queue
            while queue and queue[0].gone:
                queue.popleft()
            if len(queue) > 2 * self._waiting + 16:
                self._queue = deque(w for w in queue if not w.gone)
        return False

    def _leave(self, started: float | None, overloaded: bool) -> None:
        """Give a slot back; ``started`` is None when the call taught nothing about latency."""
        change: tuple[int, int] | None = None
        with self._lock:
            adaptive = self._adaptive
            if adaptive is not None and started is not None:
                previous = self._limit
                rtt = (self._clock or runtime.clock).now() - started
                self._limit = adaptive.update(rtt, self._in_use, overloaded)
                if self._limit != previous:
                    change = (previous, self._limit)
            self._in_use -= 1
            woken = self._hand_on()
        for waiter in woken:
            waiter.wake()
        if change is not None and listening(self._listeners):
            now = (self._clock or runtime.clock).now()
            event = Event(
                EventKind.BULKHEAD_LIMIT_CHANGED,
                self.name,
                now,
                state=change[1],
                previous_state=change[0],
            )
            emit(event, self._listeners)

    def _acquire_sync(self) -> None:
        waiter = self._enter(_ThreadSlot)
        if waiter is None:
            return
        assert isinstance(waiter, _ThreadSlot)
        # An enclosing resilio.timeout is a cooperative deadline: never wait past it.
        wait, why = self.max_wait, f"within {self.max_wait} s"
        remaining = time_remaining()
        if remaining is not None and (wait is None or remaining < wait):
            wait, why = remaining, "before the enclosing timeout expired"
        try:
            waiter.event.wait(wait)
        except BaseException:
            if self._abandon(waiter):
                self._leave(None, False)
            raise
        if not self._abandon(waiter):
            self._reject(f"no slot freed up {why}")

    async def _acquire_async(self) -> None:
        waiter = self._enter(_TaskSlot)
        if waiter is None:
            return
        assert isinstance(waiter, _TaskSlot)
        try:
            with anyio.move_on_after(math.inf if self.max_wait is None else self.max_wait):
                await waiter.event.wait()
        except BaseException:
            if self._abandon(waiter):
                self._leave(None, False)
            raise
        if not self._abandon(waiter):
            self._reject(f"no slot freed up within {self.max_wait:g} s")

    def _overloaded(self, exc: Exception) -> bool:
        return matches(self._overload.exception(exc))

    # -- drivers -------------------------------------------------------------

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        acquire = self._acquire_sync
        leave = self._leave

        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            acquire()
            started = (self._clock or runtime.clock).now() if self._adaptive else None
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                leave(started, self._overloaded(exc))
                raise
            except BaseException:
                leave(None, False)
                raise
            leave(started, self._overload.checks_results and matches(self._overload.result(result)))
            return result

        return guarded

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        acquire = self._acquire_async
        leave = self._leave

        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            await acquire()
            started = (self._clock or runtime.clock).now() if self._adaptive else None
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                leave(started, self._overloaded(exc))
                raise
            except BaseException:
                leave(None, False)
                raise
            leave(started, self._overload.checks_results and matches(self._overload.result(result)))
            return result

        return guarded
