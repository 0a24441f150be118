"""Retry, timeout and circuit-breaker cases: the success path and the reject path.

Every case builds a decorated function the way its library documents, once;
the harness times calling it. The wrapped function returns its argument at
once, so the figures are the decorators' own cost. Each builder imports its
library when called, so a missing anchor only drops its own cases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from harness import Case, Unavailable

__all__ = ["overhead_cases", "reject_cases"]

HOUR = 3600


def work(x: int) -> int:
    return x


async def awork(x: int) -> int:
    return x


def fail(x: int) -> int:
    raise OSError("down")


async def afail(x: int) -> int:
    raise OSError("down")


# -- success path ------------------------------------------------------------------------


def _resilio_retry(fn: Any) -> Any:
    import resilio

    return resilio.retry(on=OSError, attempts=3)(fn)


def _resilio_timeout(fn: Any) -> Any:
    import resilio

    return resilio.timeout(10.0)(fn)


def _resilio_breaker(fn: Any) -> Any:
    import resilio

    return resilio.CircuitBreaker(name="bench", failure_threshold=5, recovery_time=30.0)(fn)


def _resilio_pipeline(fn: Any) -> Any:
    import resilio

    return resilio.Pipeline(
        resilio.timeout(10.0),
        resilio.retry(on=OSError, attempts=3),
        resilio.CircuitBreaker(name="bench-pipeline", failure_threshold=5, recovery_time=30.0),
    )(fn)


def _tenacity(fn: Any) -> Any:
    import tenacity

    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        retry=tenacity.retry_if_exception_type(OSError),
        reraise=True,
    )(fn)


def _stamina(fn: Any) -> Any:
    import stamina

    return stamina.retry(on=OSError, attempts=3)(fn)


def _backoff(fn: Any) -> Any:
    import backoff

    return backoff.on_exception(backoff.expo, OSError, max_tries=3)(fn)


def _pybreaker(fn: Any) -> Any:
    import inspect

    import pybreaker

    if inspect.iscoroutinefunction(fn):
        raise Unavailable("pybreaker's async support needs Tornado")
    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(fn)


def _circuitbreaker(fn: Any) -> Any:
    import circuitbreaker

    return circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(fn)


def _aiobreaker(fn: Any) -> Any:
    import datetime

    import aiobreaker

    breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=datetime.timedelta(seconds=30))
    return breaker(fn)


def _purgatory(fn: Any) -> Any:
    import inspect

    import purgatory

    if inspect.iscoroutinefunction(fn):
        return purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)("bench")(
            fn
        )
    return purgatory.SyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)("bench")(fn)


STRATEGIES: list[tuple[str, str, Callable[[Any], Any], str]] = [
    ("resilio", "retry", _resilio_retry, "resilio.retry(on=OSError, attempts=3)"),
    ("resilio", "timeout", _resilio_timeout, "resilio.timeout(10.0)"),
    (
        "resilio",
        "breaker",
        _resilio_breaker,
        "resilio.CircuitBreaker(failure_threshold=5, recovery_time=30.0)",
    ),
    (
        "resilio",
        "pipeline",
        _resilio_pipeline,
        "resilio.Pipeline(timeout(10.0), retry(on=OSError, attempts=3), CircuitBreaker(...))",
    ),
    (
        "tenacity",
        "retry",
        _tenacity,
        "tenacity.retry(stop=stop_after_attempt(3), retry=retry_if_exception_type(OSError),"
        " reraise=True)",
    ),
    ("stamina", "retry", _stamina, "stamina.retry(on=OSError, attempts=3)"),
    ("backoff", "retry", _backoff, "backoff.on_exception(backoff.expo, OSError, max_tries=3)"),
    ("pybreaker", "breaker", _pybreaker, "pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)"),
    (
        "circuitbreaker",
        "breaker",
        _circuitbreaker,
        "circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)",
    ),
    (
        "aiobreaker",
        "breaker",
        _aiobreaker,
        "aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))",
    ),
    (
        "purgatory",
        "breaker",
        _purgatory,
        "purgatory.{Sync,Async}CircuitBreakerFactory(default_threshold=5, default_ttl=30)('bench')",
    ),
]


def overhead_cases(anchors: bool) -> list[Case]:
    """Return the success-path cases: a plain call, then each strategy around it."""
    cases = []
    for mode, fn in (("sync", work), ("async", awork)):
        plain = "def work(x): return x" if mode == "sync" else "async def work(x): return x"
        cases.append(Case(f"none/{mode}/plain", "plain", mode, lambda fn=fn: fn, setup=plain))
        for library, strategy, decorate, setup in STRATEGIES:
            if library != "resilio" and not anchors:
                continue
            cases.append(
                Case(
                    f"{strategy}/{mode}/{library}",
                    library,
                    mode,
                    lambda decorate=decorate, fn=fn: decorate(fn),  # type: ignore[misc]
                    setup=setup,
                    tags={"strategy": strategy},
                )
            )
    return cases


# -- reject path: a call to an open breaker ---------------------------------------------


def _open_sync(decorated: Callable[[int], Any]) -> Callable[[int], Any]:
    for _ in range(10):
        with contextlib.suppress(Exception):  # the failures, then the rejections
            decorated(1)
    return decorated


async def _open_async(decorated: Callable[[int], Awaitable[Any]]) -> Callable[[int], Any]:
    for _ in range(10):
        with contextlib.suppress(Exception):
            await decorated(1)
    return decorated


def _opened(decorate: Callable[[Any], Any], mode: str) -> Any:
    if mode == "sync":
        return _open_sync(decorate(fail))
    return _open_async(decorate(afail))


def _resilio_open(fn: Any) -> Any:
    import resilio

    return resilio.CircuitBreaker(name="bench-open", failure_threshold=5, recovery_time=HOUR)(fn)


def _pybreaker_open(fn: Any) -> Any:
    import inspect

    import pybreaker

    if inspect.iscoroutinefunction(fn):
        raise Unavailable("pybreaker's async support needs Tornado")
    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=HOUR)(fn)


def _circuitbreaker_open(fn: Any) -> Any:
    import circuitbreaker

    return circuitbreaker.circuit(failure_threshold=5, recovery_timeout=HOUR)(fn)


def _aiobreaker_open(fn: Any) -> Any:
    import datetime

    import aiobreaker

    return aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=datetime.timedelta(seconds=HOUR))(
        fn
    )


def _purgatory_open(fn: Any) -> Any:
    import inspect

    import purgatory

    factory: Any = (
        purgatory.AsyncCircuitBreakerFactory
        if inspect.iscoroutinefunction(fn)
        else purgatory.SyncCircuitBreakerFactory
    )
    return factory(default_threshold=5, default_ttl=HOUR)("bench-open")(fn)


_OPEN: list[tuple[str, Callable[[Any], Any]]] = [
    ("resilio", _resilio_open),
    ("pybreaker", _pybreaker_open),
    ("circuitbreaker", _circuitbreaker_open),
    ("aiobreaker", _aiobreaker_open),
    ("purgatory", _purgatory_open),
]


def reject_cases(anchors: bool) -> list[Case]:
    """Return calls to an open breaker, each caught by the loop (its rejection error)."""
    cases = []
    for mode in ("sync", "async"):
        for library, decorate in _OPEN:
            if library != "resilio" and not anchors:
                continue
            cases.append(
                Case(
                    f"breaker-open/{mode}/{library}",
                    library,
                    mode,
                    lambda decorate=decorate, mode=mode: _opened(decorate, mode),  # type: ignore[misc]
                    setup="opened by 5 failures; recovery time 1 hour",
                    raises=Exception,
                    tags={"strategy": "breaker"},
                )
            )
    return cases
