"""Outcomes of calls and the ``on=`` / ``ignore=`` classifiers built from user options."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._callables import is_async_callable

__all__ = [
    "Classifier",
    "ExceptionSpec",
    "Outcome",
    "OutcomePredicate",
    "delay_override",
    "matches",
]

T = TypeVar("T")


class Outcome(Generic[T]):
    """What one call produced: either a result or an exception.

    Predicates given as ``on=`` or ``ignore=`` receive an `Outcome`.

    Attributes:
        result: The returned value, or ``None`` when the call raised.
        exception: The raised exception, or ``None`` when the call returned.
        attempt: The attempt number (from 1) when the outcome comes from a
            retry policy, else 0.
    """

    __slots__ = ("attempt", "exception", "result")

    def __init__(
        self, result: T | None = None, exception: Exception | None = None, attempt: int = 0
    ) -> None:
        self.result = result
        self.exception = exception
        self.attempt = attempt

    @property
    def failed(self) -> bool:
        """Whether the call raised."""
        return self.exception is not None

    def unwrap(self) -> T:
        """Return the result, or raise the exception."""
        if self.exception is not None:
            raise self.exception
        return self.result  # type: ignore[return-value]

    def __repr__(self) -> str:
        if self.exception is not None:
            return f"Outcome(exception={self.exception!r}, attempt={self.attempt})"
        return f"Outcome(result={self.result!r}, attempt={self.attempt})"


#: A predicate over an outcome. For retries it may return a delay in seconds
#: that overrides the backoff for the next wait.
OutcomePredicate = Callable[[Outcome[Any]], object]
#: What ``on=`` and ``ignore=`` accept.
ExceptionSpec = type[Exception] | tuple[type[Exception], ...] | OutcomePredicate


def _exception_types(spec: object, option: str) -> tuple[type[Exception], ...] | None:
    """Return ``spec`` as a tuple of exception types, or None if it is not one."""
    types = spec if isinstance(spec, tuple) else (spec,)
    if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        if isinstance(spec, (tuple, type)):
            # A class that is no exception would be "called" as a predicate: refuse it.
            raise TypeError(
                f"{option}= takes exception types or one predicate over an Outcome, "
                f"got {spec!r}, which is not an exception type"
            )
        return None
    for t in types:
        if not issubclass(t, Exception):
            raise ValueError(
                f"{option}={t.__name__} cannot be handled: resilio never retries or counts "
                "cancellation, KeyboardInterrupt, SystemExit or GeneratorExit; "
                "use Exception (or a subclass) instead"
            )
    if not types:
        raise ValueError(f"{option}=() matches nothing; pass at least one exception type")
    return types


class Classifier:
    """Decides whether an outcome matches an ``on=``/``ignore=`` option.

    Exception types match exceptions only. A predicate sees every outcome
    (results too) but never a ``BaseException`` that is not an ``Exception``:
    those always propagate untouched.
    """

    __slots__ = ("checks_results", "predicate", "types")

    def __init__(self, spec: ExceptionSpec, option: str) -> None:
        self.types = _exception_types(spec, option)
        if self.types is None:
            if not callable(spec):
                raise TypeError(
                    f"{option}= takes exception types or a predicate over an Outcome, got {spec!r}"
                )
            if is_async_callable(spec):
                raise TypeError(
                    f"{option}= takes a plain function, not the async predicate {spec!r}: "
                    "it would be called without being awaited, and its coroutine would "
                    "count as a match; decide from the Outcome without awaiting"
                )
            self.predicate: OutcomePredicate | None = spec
        else:
            self.predicate = None
        self.checks_results = self.predicate is not None

    def exception(self, exc: Exception, attempt: int = 0) -> object:
        """Return a truthy value (or a delay) when ``exc`` matches."""
        if self.types is not None:
            return isinstance(exc, self.types)
        assert self.predicate is not None
        try:
            return self.predicate(Outcome(exception=exc, attempt=attempt))
        except Exception as error:
            # Raised while judging ``exc``: keep it in the traceback.
            if error.__context__ is None and error is not exc:
                error.__context__ = exc
            raise

    def result(self, value: object, attempt: int = 0) -> object:
        """Return a truthy value (or a delay) when the result ``value`` matches."""
        if self.predicate is None:
            return False
        return self.predicate(Outcome(result=value, attempt=attempt))


def matches(verdict: object) -> bool:
    """Return whether a classifier's verdict means "this outcome matches".

    Booleans mean what they say; any number (0 included) is a delay and so a
    match; other values count by their truth.
    """
    if isinstance(verdict, bool):
        return verdict
    if isinstance(verdict, (int, float)):
        return True
    return bool(verdict)


def delay_override(verdict: object) -> float | None:
    """Return the delay a predicate asked for, or None to use the backoff.

    ``True`` means "use the backoff"; a number (not a bool) that is finite and
    not negative is a delay in seconds. Anything else falls back to the backoff.
    """
    if isinstance(verdict, bool) or not isinstance(verdict, (int, float)):
        return None
    try:
        delay = float(verdict)
    except OverflowError:  # an int beyond any float: as good as infinite
        return None
    if math.isnan(delay) or delay < 0 or math.isinf(delay):
        return None
    return delay
