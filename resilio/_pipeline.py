"""`resilio.Pipeline`: strategies composed into one, outermost first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from . import _events
from ._clock import runtime
from ._context import pipeline_var
from ._events import Event, EventKind, emit_timing
from ._outcome import Outcome
from ._strategy import Strategy, checked_name

__all__ = ["Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")


class Pipeline(Strategy):
    """Several strategies applied as one, listed outermost first.

    ``Pipeline(a, b, c)`` wraps a function the way stacked decorators would::

        @a
        @b
        @c
        def f(): ...

    For example ``Pipeline(timeout(10), retry(on=OSError), breaker, timeout(2))``
    gives a 10 s budget for the whole call, retries, a breaker, and a 2 s limit
    per attempt. The composition happens once, at decoration time, so a
    pipeline costs no more per call than the strategies in it.

    Compositions that cannot work are refused here: a timeout inside another
    one must be shorter, or it could never fire.

    A *named* pipeline is also observable as a whole: every event emitted
    inside it carries its name (`resilio.Event.pipeline`), and while a timing
    listener is registered (``add_listener(..., timings=True)``, which
    `resilio.otel` uses) each call emits a ``CALL`` event with its duration.
    This costs a context variable per call; an unnamed pipeline costs nothing.

    Args:
        *strategies: Strategies (pipelines included), outermost first.
        name: Names the pipeline in events and metrics; None (the default)
            leaves it anonymous and free.
    """

    __slots__ = ("_named", "name", "strategies")

    def __init__(self, *strategies: Strategy, name: str | None = None) -> None:
        for position, strategy in enumerate(strategies):
            if not isinstance(strategy, Strategy):
                raise TypeError(
                    f"Pipeline takes resilio strategies; item {position} is {strategy!r}"
                )
        self.strategies: tuple[Strategy, ...] = strategies
        self.name = "pipeline" if name is None else checked_name(name)
        self._named = name is not None
        self._check_timeouts()

    def _flat(self) -> Iterator[Strategy]:
        for strategy in self.strategies:
            if isinstance(strategy, Pipeline):
                yield from strategy._flat()
            else:
                yield strategy

    def _check_timeouts(self) -> None:
        outer: tuple[float, Strategy] | None = None
        for strategy in self._flat():
            seconds = strategy._timeout_seconds()
            if seconds is None:
                continue
            if outer is not None and seconds > outer[0]:
                raise ValueError(
                    f"{strategy!r} sits inside {outer[1]!r}, which gives up after "
                    f"{outer[0]:g} s: the inner timeout ({seconds:g} s) could never fire. "
                    "Make the inner timeout shorter than the outer one, or drop it."
                )
            if outer is None or seconds < outer[0]:
                outer = (seconds, strategy)

    def _check_target(self, is_async: bool) -> None:
        for strategy in self.strategies:
            strategy._check_target(is_async)

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        for strategy in reversed(self.strategies):
            fn = strategy._wrap_sync(fn)
        return self._named_sync(fn) if self._named else fn

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        for strategy in reversed(self.strategies):
            fn = strategy._wrap_async(fn)
        return self._named_async(fn) if self._named else fn

    def _ended(self, started: float, result: object, error: Exception | None) -> None:
        """Emit the ``CALL`` event of one call through this named pipeline."""
        now = runtime.clock.now()
        outcome: Outcome[Any] = Outcome(result, error)
        event = Event(EventKind.CALL, self.name, now, outcome=outcome, duration=now - started)
        event.pipeline = self.name
        emit_timing(event)

    def _named_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        name, events, ended = self.name, _events, self._ended

        def piped(*args: P.args, **kwargs: P.kwargs) -> T:
            token = pipeline_var.set(name)
            try:
                if not events.timing_listeners:
                    return fn(*args, **kwargs)
                started = runtime.clock.now()
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    ended(started, None, exc)
                    raise
                ended(started, result, None)
                return result
            finally:
                pipeline_var.reset(token)

        return piped

    def _named_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        name, events, ended = self.name, _events, self._ended

        async def piped(*args: P.args, **kwargs: P.kwargs) -> T:
            token = pipeline_var.set(name)
            try:
                if not events.timing_listeners:
                    return await fn(*args, **kwargs)
                started = runtime.clock.now()
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    ended(started, None, exc)
                    raise
                ended(started, result, None)
                return result
            finally:
                pipeline_var.reset(token)

        return piped

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.strategies)
        return f"Pipeline({inner})"
