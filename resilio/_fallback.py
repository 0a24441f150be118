"""`resilio.fallback`: answer with something else when a call fails in a handled way."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar, cast

from ._clock import runtime
from ._errors import RejectedError, TimeoutExceeded
from ._events import Event, EventKind, Listener, emit, listening, validate_listeners
from ._outcome import Classifier, ExceptionSpec, Outcome, matches
from ._strategy import Strategy, checked_name

__all__ = ["Fallback", "fallback"]

P = ParamSpec("P")
T = TypeVar("T")

_MISSING: Any = object()

#: What a fallback handles unless told otherwise: resilio's own refusals
#: (open breakers, rate limits, full bulkheads) and its timeouts.
DEFAULT_ON: tuple[type[Exception], ...] = (RejectedError, TimeoutExceeded)


class Fallback(Strategy):
    """Replaces a handled failure with a value, or with what a function returns.

    Build it with ``resilio.fallback(value=...)`` or
    ``resilio.fallback(func=...)``: a decorator for ``def`` and ``async def``
    and a pipeline strategy. Only outcomes that match ``on`` are replaced;
    every other exception propagates unchanged. Cancellation,
    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` are never
    handled. Put it outermost in a pipeline, so it sees what every other
    strategy gave up on.

    Example:
        ```python
        @resilio.fallback(func=lambda outcome, user_id: cache.get(user_id))
        @resilio.timeout(0.5)
        async def profile(user_id: str) -> Profile: ...
        ```

    Args:
        value: Returned as is in place of a handled outcome.
        func: Called as ``func(outcome, *args, **kwargs)`` with the handled
            `resilio.Outcome` and the call's own arguments; what it returns (or,
            for async calls, what its awaitable gives) is the answer. It may
            raise to fail the call after all.
        on: What the fallback handles: exception types, or a predicate over a
            `resilio.Outcome` that sees results too (for example an HTTP 503).
            Default: `resilio.RejectedError` (open breakers, rate limits, full
            bulkheads) and `resilio.TimeoutExceeded`.
        listeners: Callables that receive this fallback's events.
        name: The name in events and error messages.

    Raises:
        TypeError: When neither or both of ``value`` and ``func`` are given.
    """

    __slots__ = ("_func", "_is_async_func", "_listeners", "_on", "_value", "name")

    def __init__(
        self,
        *,
        value: object = _MISSING,
        func: Callable[..., object] | None = None,
        on: ExceptionSpec = DEFAULT_ON,
        listeners: Iterable[Listener] | None = None,
        name: str = "fallback",
    ) -> None:
        if (value is _MISSING) == (func is None):
            raise TypeError(
                "fallback takes exactly one of value= (returned as is) or func= "
                "(called with the outcome and the call's arguments)"
            )
        if func is not None and not callable(func):
            raise TypeError(f"func= must be callable, got {func!r}")
        self._value = value
        self._func = func
        self._is_async_func = func is not None and inspect.iscoroutinefunction(func)
        self._on = Classifier(on, "on")
        self._listeners = validate_listeners(listeners)
        self.name = checked_name(name)

    def __repr__(self) -> str:
        what = f"func={self._func!r}" if self._func is not None else f"value={self._value!r}"
        return f"Fallback({what}, name={self.name!r})"

    def _check_target(self, is_async: bool) -> None:
        if not is_async and self._is_async_func:
            raise TypeError(
                "fallback(func=...) is async but the decorated function is sync: it could "
                "not be awaited. Use a sync func=, or decorate an async function."
            )

    def _announce(self, outcome: Outcome[Any]) -> None:
        if listening(self._listeners):
            now = runtime.clock.now()
            emit(Event(EventKind.FALLBACK, self.name, now, outcome=outcome), self._listeners)

    def _replace(self, outcome: Outcome[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._announce(outcome)
        if self._func is None:
            return self._value
        return self._func(outcome, *args, **kwargs)

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        on = self._on
        replace = self._replace

        def with_fallback(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not matches(on.exception(exc)):
                    raise
                outcome: Outcome[Any] = Outcome(exception=exc)
            else:
                if not on.checks_results or not matches(on.result(result)):
                    return result
                outcome = Outcome(result=result)
            return cast("T", replace(outcome, args, kwargs))

        return with_fallback

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        on = self._on
        replace = self._replace

        async def with_fallback(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if not matches(on.exception(exc)):
                    raise
                outcome: Outcome[Any] = Outcome(exception=exc)
            else:
                if not on.checks_results or not matches(on.result(result)):
                    return result
                outcome = Outcome(result=result)
            value = replace(outcome, args, kwargs)
            if inspect.isawaitable(value):
                value = await value
            return cast("T", value)

        return with_fallback


#: ``resilio.fallback(value=...)`` or ``resilio.fallback(func=...)`` builds a `Fallback`.
fallback = Fallback
