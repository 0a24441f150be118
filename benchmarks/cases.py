"""What `run.py` measures: the success path of one call through each strategy.

Every case builds a decorated function the way its library documents, once,
and the harness times calling it. The wrapped function returns its argument
at once, so the figures are the decorators' own cost. Each case imports its
library only when built, so a worker process loads just what it measures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ASYNC_CASES", "SYNC_CASES", "Case"]


def work(x: int) -> int:
    return x


async def awork(x: int) -> int:
    return x


@dataclass(frozen=True)
class Case:
    """One benchmark.

    Attributes:
        name: The benchmark name, such as ``sync/resilio.retry``.
        library: ``resilio``, ``plain`` or the anchor library's name.
        strategy: ``none``, ``retry``, ``timeout``, ``breaker`` or ``pipeline``.
        build: Returns the callable to time.
        setup: How the callable is built, shown in the docs.
    """

    name: str
    library: str
    strategy: str
    build: Callable[[], Callable[[int], Any]]
    setup: str


# -- resilio ------------------------------------------------------------------


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


# -- anchors --------------------------------------------------------------------


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
    import pybreaker

    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(fn)


def _circuitbreaker(fn: Any) -> Any:
    import circuitbreaker

    return circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(fn)


_STRATEGIES: list[tuple[str, str, Callable[[Any], Any], str]] = [
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
    (
        "pybreaker",
        "breaker",
        _pybreaker,
        "pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)",
    ),
    (
        "circuitbreaker",
        "breaker",
        _circuitbreaker,
        "circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)",
    ),
]

# pybreaker's async support needs Tornado; its decorator does not handle coroutines.
_SYNC_ONLY = {"pybreaker"}


_RESILIO_NAMES = {
    "retry": "resilio.retry",
    "timeout": "resilio.timeout",
    "breaker": "resilio.CircuitBreaker",
    "pipeline": "resilio.Pipeline",
}


def _name(mode: str, library: str, strategy: str) -> str:
    return f"{mode}/{_RESILIO_NAMES[strategy] if library == 'resilio' else library}"


def _cases(mode: str, fn: Callable[[int], Any] | Callable[[int], Awaitable[Any]]) -> list[Case]:
    plain_setup = "def work(x): return x" if mode == "sync" else "async def work(x): return x"
    cases = [Case(f"{mode}/plain", "plain", "none", lambda: fn, plain_setup)]
    for library, strategy, decorate, setup in _STRATEGIES:
        if mode == "async" and library in _SYNC_ONLY:
            continue
        cases.append(
            Case(
                _name(mode, library, strategy),
                library,
                strategy,
                lambda decorate=decorate: decorate(fn),  # type: ignore[misc]
                setup,
            )
        )
    return cases


SYNC_CASES = _cases("sync", work)
ASYNC_CASES = _cases("async", awork)
