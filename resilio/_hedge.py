"""`resilio.hedge`: when a call is slow, start another and keep whichever succeeds first.

Hedging is async only. Losing attempts must be stopped, and only tasks can be
cancelled: a losing thread would keep running, holding its connection and its
slot in every limiter, which is the load hedging must not add. Decorating a
``def`` function raises TypeError.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar, cast

import anyio

from ._clock import Clock, runtime
from ._events import Event, EventKind, Listener, emit, listening, validate_listeners
from ._outcome import Classifier, ExceptionSpec, Outcome, matches
from ._strategy import Strategy, checked_name

__all__ = ["Hedge", "hedge"]

P = ParamSpec("P")
T = TypeVar("T")

_TICK = -1  # the index the delay timer reports under


class Hedge(Strategy):
    """Starts another attempt when a call is slow; the first good outcome wins.

    Build it with ``resilio.hedge(delay=...)``: a decorator for ``async def``
    functions and a pipeline strategy. The first attempt starts at once.
    Each time ``delay`` seconds pass without a good outcome, another one
    starts, up to ``attempts`` in all; an attempt that fails starts the next
    one at once. The first outcome that ``on`` does not reject is the answer:
    the other attempts are cancelled, and the call returns once they have
    stopped. If every attempt fails, the first attempt's failure is raised.

    Put strategies that protect the dependency (a breaker, a bulkhead, a rate
    limiter) and a per-attempt timeout *inside* the hedge, so each attempt
    passes through them and hedging cannot add load to a struggling
    dependency.

    Example:
        ```python
        @resilio.hedge(delay=0.2, attempts=3)
        async def quote(symbol: str) -> float: ...
        ```

    Args:
        delay: Seconds to wait for a good outcome before starting another
            attempt; 0 starts all attempts at once. Slept on the clock.
        attempts: How many attempts may run, the first included (2 to 10).
        on: What counts as a failed attempt: exception types, or a predicate
            over a `resilio.Outcome` that sees results too. Exceptions that do
            not match are answers, and are raised at once.
        listeners: Callables that receive a ``HEDGE`` event per extra attempt.
        clock: The clock to sleep on; default the process clock.
        name: The name in events and error messages.

    Raises:
        TypeError: When it decorates a ``def`` function.
    """

    __slots__ = ("_clock", "_listeners", "_on", "attempts", "delay", "name")

    def __init__(
        self,
        *,
        delay: float,
        attempts: int = 2,
        on: ExceptionSpec = Exception,
        listeners: Iterable[Listener] | None = None,
        clock: Clock | None = None,
        name: str = "hedge",
    ) -> None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise TypeError(f"delay= must be seconds (a number), got {delay!r}")
        if not (0 <= delay < math.inf):
            raise ValueError(
                f"delay= must be a finite number of seconds, 0 or more (0 starts every "
                f"attempt at once), got {delay}"
            )
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"attempts= must be an int, got {attempts!r}")
        if not 2 <= attempts <= 10:
            raise ValueError(
                f"attempts= counts every attempt, the first included, and must be between "
                f"2 and 10, got {attempts}"
            )
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock= must have now(), sleep() and sleep_async(), got {clock!r}")
        self.delay = float(delay)
        self.attempts = attempts
        self._on = Classifier(on, "on")
        self._listeners = validate_listeners(listeners)
        self._clock = clock
        self.name = checked_name(name)

    def __repr__(self) -> str:
        return f"Hedge(delay={self.delay}, attempts={self.attempts}, name={self.name!r})"

    def _check_target(self, is_async: bool) -> None:
        if not is_async:
            raise TypeError(
                "hedge() works on async functions only: a losing attempt must be cancelled, "
                "and a thread cannot be. Decorate an async def function."
            )

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        self._check_target(False)  # raises: hedging is async only
        return fn  # pragma: no cover

    def _failed(self, outcome: Outcome[Any]) -> bool:
        if outcome.exception is not None:
            return matches(self._on.exception(outcome.exception))
        return self._on.checks_results and matches(self._on.result(outcome.result))

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        async def hedged(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                outcome = await self._race(fn, args, kwargs)
            except BaseException as exc:
                # An attempt raised what no attempt may swallow (KeyboardInterrupt...);
                # the task group wrapped it in a group: hand it on as itself.
                inner = getattr(exc, "exceptions", None)
                if not isinstance(exc, Exception) and isinstance(inner, tuple) and len(inner) == 1:
                    raise inner[0] from None
                raise
            return cast("T", outcome.unwrap())

        return hedged

    async def _race(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Outcome[Any]:
        """Run the attempts; return the winning outcome, or the primary's failure."""
        clock = self._clock or runtime.clock
        send, receive = anyio.create_memory_object_stream[tuple[int, Outcome[Any]]](
            self.attempts * 2
        )
        started = 0
        running = 0
        primary: Outcome[Any] | None = None
        final: Outcome[Any] | None = None

        async def attempt(index: int) -> None:
            try:
                outcome: Outcome[Any] = Outcome(result=await fn(*args, **kwargs))
            except Exception as exc:
                outcome = Outcome(exception=exc)
            send.send_nowait((index, outcome))

        async def timer(generation: int) -> None:
            await clock.sleep_async(self.delay)
            send.send_nowait((_TICK, Outcome(result=generation)))

        with send, receive:
            async with anyio.create_task_group() as group:

                def start() -> None:
                    nonlocal started, running
                    if started and listening(self._listeners):
                        event = Event(EventKind.HEDGE, self.name, clock.now(), attempt=started + 1)
                        emit(event, self._listeners)
                    group.start_soon(attempt, started)
                    started += 1
                    running += 1
                    if started < self.attempts and self.delay > 0:
                        group.start_soon(timer, started)

                start()
                while self.delay == 0 and started < self.attempts:
                    start()
                while final is None:
                    index, outcome = await receive.receive()
                    if index == _TICK:
                        # Only the timer of the newest attempt counts; older ones are stale.
                        if outcome.result == started and started < self.attempts:
                            start()
                        continue
                    running -= 1
                    if index == 0:
                        primary = outcome
                    if not self._failed(outcome):
                        final = outcome
                    elif started < self.attempts:
                        start()  # a failure starts the next attempt without waiting
                    elif running == 0:
                        assert primary is not None
                        final = primary
                group.cancel_scope.cancel()
        assert final is not None
        return final


#: ``resilio.hedge(delay=...)`` builds a `Hedge`.
hedge = Hedge
