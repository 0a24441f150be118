"""Chaos injection inside the process: faults, latency and fake outcomes, on purpose.

Chaos platforms break pods and networks to prove a system degrades
gracefully; these strategies do the same to single calls, in your tests or in
a staging process. Each is a decorator for ``def`` and ``async def`` and a
`resilio.Pipeline` strategy:

- `fault` raises an exception instead of running the call;
- `latency` delays the call, by a fixed time or one drawn from a distribution
  (`uniform`, `exponential`, `normal`), then runs it;
- `outcome` returns a value instead of running the call (an HTTP 503 response,
  an empty list...).

`ChaosTransport` and `AsyncChaosTransport` do it to outgoing ``httpx``
requests (connect errors, timeouts, latency, 5xx answers, bodies cut short);
they need httpx, which is imported only when you use them. Clock skew for
tests lives in `resilio.testing.SkewedClock`.

Nothing is injected unless you say how often: ``injection_rate=`` has no
default. Each strategy also takes ``enabled=`` (a bool, or a callable over the
call's `ChaosContext`) and ``seed=`` (the same seed and the same calls give
the same injections). One switch turns every injection off at once:
`set_enabled` (or `disabled` for a block), and the environment variable
``RESILIO_CHAOS=off`` turns it off from the start.

Put chaos innermost, right around the call it stands in for, so the resilience
strategies outside it handle what it injects.

Example:
    ```python
    from resilio import chaos

    flaky = resilio.Pipeline(
        resilio.retry(on=ConnectionError, attempts=3),
        chaos.fault(injection_rate=0.3, error=ConnectionError, seed=7),
        chaos.latency(injection_rate=1.0, seconds=chaos.exponential(0.05), seed=7),
    )
    ```
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from ._clock import Clock, runtime
from ._events import Event, EventKind, Listener, emit, listening, validate_listeners
from ._outcome import Outcome
from ._strategy import Strategy, checked_name

if TYPE_CHECKING:
    from ._chaos_httpx import AsyncChaosTransport, ChaosTransport

__all__ = [
    "ChaosContext",
    "ChaosStrategy",
    "FaultInjection",
    "LatencyInjection",
    "OutcomeInjection",
    "fault",
    "latency",
    "outcome",
    "uniform",
    "exponential",
    "normal",
    "set_enabled",
    "is_enabled",
    "disabled",
    "ChaosTransport",
    "AsyncChaosTransport",
]

P = ParamSpec("P")
T = TypeVar("T")

#: A delay in seconds drawn from the strategy's seeded random source.
Distribution = Callable[[random.Random], float]


@dataclass(frozen=True, slots=True)
class ChaosContext:
    """What an ``enabled=`` or ``injection_rate=`` callable knows about the call.

    Attributes:
        name: The name of the chaos strategy or transport deciding.
        args: The call's positional arguments (empty for requests and clocks).
        kwargs: The call's keyword arguments.
        request: The ``httpx.Request`` about to be sent, for the chaos transports.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    request: Any = None


# -- the global switch -----------------------------------------------------------


class _Switch:
    __slots__ = ("on",)

    def __init__(self) -> None:
        setting = os.environ.get("RESILIO_CHAOS", "").strip().lower()
        self.on = setting not in {"0", "off", "false", "no"}


_switch = _Switch()


def set_enabled(enabled: bool) -> None:
    """Turn every chaos injection in this process on or off (the global kill switch).

    Off wins over every strategy's own ``enabled=``. It starts on, unless the
    environment variable ``RESILIO_CHAOS`` is ``0``, ``off``, ``false`` or ``no``.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"set_enabled takes True or False, got {enabled!r}")
    _switch.on = enabled


def is_enabled() -> bool:
    """Return whether the global chaos switch is on."""
    return _switch.on


@contextmanager
def disabled() -> Iterator[None]:
    """Turn every chaos injection off while the block runs."""
    previous = _switch.on
    _switch.on = False
    try:
        yield
    finally:
        _switch.on = previous


# -- distributions ----------------------------------------------------------------


def _number(value: object, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{option} must be a number of seconds, got {value!r}")
    if not (0 <= value < math.inf):
        raise ValueError(f"{option} must be a finite number of seconds, 0 or more, got {value}")
    return float(value)


def uniform(low: float, high: float) -> Distribution:
    """Delays spread evenly between ``low`` and ``high`` seconds."""
    low, high = _number(low, "low"), _number(high, "high")
    if low > high:
        raise ValueError(f"uniform(low={low}, high={high}): low is above high")
    return lambda rng: rng.uniform(low, high)


def exponential(mean: float) -> Distribution:
    """Delays drawn from the exponential distribution of mean ``mean`` seconds: a long tail."""
    mean = _number(mean, "mean")
    if mean == 0:
        raise ValueError(
            "exponential(mean=0) is always 0; use latency(seconds=0) or a mean above 0"
        )
    return lambda rng: rng.expovariate(1.0 / mean)


def normal(mean: float, stddev: float) -> Distribution:
    """Delays around ``mean`` seconds with spread ``stddev`` seconds, never below 0."""
    mean, stddev = _number(mean, "mean"), _number(stddev, "stddev")
    return lambda rng: max(0.0, rng.gauss(mean, stddev))


# -- the decision -----------------------------------------------------------------


def _check_rate(rate: object) -> float | Callable[[ChaosContext], float]:
    if callable(rate):
        return cast("Callable[[ChaosContext], float]", rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(
            f"injection_rate= takes a share of calls between 0 and 1, or a callable over a "
            f"ChaosContext, got {rate!r}"
        )
    if not 0 <= rate <= 1:
        raise ValueError(f"injection_rate= must be between 0 and 1, got {rate}")
    return float(rate)


def _check_enabled(enabled: object) -> bool | Callable[[ChaosContext], bool]:
    if isinstance(enabled, bool):
        return enabled
    if callable(enabled):
        return cast("Callable[[ChaosContext], bool]", enabled)
    raise TypeError(f"enabled= takes a bool or a callable over a ChaosContext, got {enabled!r}")


class Trigger:
    """Decides whether one injection happens: switch, then ``enabled``, then rate, then dice.

    Shared by the chaos strategies, the chaos transports and
    `resilio.testing.SkewedClock`.
    """

    __slots__ = ("enabled", "name", "random", "rate")

    def __init__(self, name: str, injection_rate: object, enabled: object, seed: object) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed= must be an int or None, got {seed!r}")
        self.name = checked_name(name)
        self.rate = _check_rate(injection_rate)
        self.enabled = _check_enabled(enabled)
        self.random = random.Random(seed)

    def fires(
        self,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        request: object = None,
    ) -> bool:
        """Return whether to inject into this call."""
        if not _switch.on:
            return False
        enabled, rate = self.enabled, self.rate
        context = None
        if enabled is not True:
            if enabled is False:
                return False
            context = ChaosContext(self.name, args, kwargs or {}, request)
            if not enabled(context):
                return False
        if not isinstance(rate, float):
            if context is None:
                context = ChaosContext(self.name, args, kwargs or {}, request)
            rate = min(1.0, max(0.0, float(rate(context))))
        if rate >= 1.0:
            return True
        return rate > 0.0 and self.random.random() < rate

    def draw(self, seconds: float | Distribution) -> float:
        """Return a delay in seconds: ``seconds`` itself, or a draw from it."""
        if isinstance(seconds, float):
            return seconds
        return max(0.0, float(seconds(self.random)))


def check_seconds(seconds: object, option: str) -> float | Distribution:
    """Validate a fixed delay or a distribution of delays."""
    if callable(seconds):
        return cast("Distribution", seconds)
    return _number(seconds, option)


# -- strategies -------------------------------------------------------------------


class ChaosStrategy(Strategy):
    """What every chaos strategy shares: the trigger, listeners, clock and name."""

    __slots__ = ("_clock", "_listeners", "_trigger", "name")

    def __init__(
        self,
        *,
        injection_rate: float | Callable[[ChaosContext], float],
        enabled: bool | Callable[[ChaosContext], bool],
        seed: int | None,
        listeners: Iterable[Listener] | None,
        clock: Clock | None,
        name: str,
    ) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock= must have now(), sleep() and sleep_async(), got {clock!r}")
        self._trigger = Trigger(name, injection_rate, enabled, seed)
        self._listeners = validate_listeners(listeners)
        self._clock = clock
        self.name = self._trigger.name

    def _emit(self, kind: EventKind, *, delay: float | None = None, **outcome: Any) -> None:
        if listening(self._listeners):
            now = (self._clock or runtime.clock).now()
            injected = Outcome(**outcome) if outcome else None
            event = Event(kind, self.name, now, delay=delay, outcome=injected)
            emit(event, self._listeners)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(injection_rate={self._trigger.rate!r}, name={self.name!r})"


class FaultInjection(ChaosStrategy):
    """Raises an exception instead of running a share of calls.

    Build it with ``chaos.fault(injection_rate=..., error=...)``.

    Example:
        ```python
        @chaos.fault(injection_rate=0.3, error=ConnectionError, seed=1)
        def fetch() -> bytes: ...
        ```

    Args:
        injection_rate: The share of calls that fail, 0 to 1, or a callable over
            the call's `ChaosContext` returning one (clamped to 0 to 1).
        error: An exception type (made with the message "injected by <name>"),
            an exception (copied for each injection), or a callable over a
            `ChaosContext` returning the exception to raise.
        enabled: Whether to inject at all: a bool, or a callable over the
            call's `ChaosContext` (per tenant, per environment...).
        seed: Seeds this strategy's random source, so runs repeat.
        listeners: Callables that receive a ``CHAOS_FAULT`` event per injection.
        clock: The clock that stamps events; default the process clock.
        name: The name in events and messages.
    """

    __slots__ = ("_error",)

    def __init__(
        self,
        *,
        injection_rate: float | Callable[[ChaosContext], float],
        error: type[Exception] | Exception | Callable[[ChaosContext], Exception],
        enabled: bool | Callable[[ChaosContext], bool] = True,
        seed: int | None = None,
        listeners: Iterable[Listener] | None = None,
        clock: Clock | None = None,
        name: str = "chaos.fault",
    ) -> None:
        super().__init__(
            injection_rate=injection_rate,
            enabled=enabled,
            seed=seed,
            listeners=listeners,
            clock=clock,
            name=name,
        )
        if isinstance(error, type):
            if not issubclass(error, Exception):
                raise ValueError(
                    f"error={error.__name__} is not an Exception: resilio never injects "
                    "cancellation, KeyboardInterrupt, SystemExit or GeneratorExit"
                )
            try:
                error(f"injected by {name}")
            except Exception as exc:
                raise TypeError(
                    f"error={error.__name__} cannot be made from a message alone ({exc}); "
                    "pass an instance, or a callable that returns one"
                ) from None
        elif not isinstance(error, Exception) and not callable(error):
            raise TypeError(
                f"error= takes an exception type, an exception, or a callable over a "
                f"ChaosContext that returns one, got {error!r}"
            )
        self._error = error

    def _make(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
        error = self._error
        if isinstance(error, type):
            made: object = error(f"injected by {self.name}")
        elif isinstance(error, Exception):
            # A fresh copy each time, so tracebacks do not pile up on one object;
            # exceptions that cannot be copied are raised afresh, traceback cleared.
            try:
                made = copy.copy(error)
            except Exception:
                made = error.with_traceback(None)
        else:
            made = error(ChaosContext(self.name, args, kwargs))
        if not isinstance(made, Exception):
            raise TypeError(f"{self.name}: error= returned {made!r}, not an Exception")
        self._emit(EventKind.CHAOS_FAULT, exception=made)
        return made

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        fires = self._trigger.fires

        def faulty(*args: P.args, **kwargs: P.kwargs) -> T:
            if fires(args, kwargs):
                raise self._make(args, kwargs)
            return fn(*args, **kwargs)

        return faulty

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        fires = self._trigger.fires

        async def faulty(*args: P.args, **kwargs: P.kwargs) -> T:
            if fires(args, kwargs):
                raise self._make(args, kwargs)
            return await fn(*args, **kwargs)

        return faulty


class LatencyInjection(ChaosStrategy):
    """Delays a share of calls, then runs them.

    Build it with ``chaos.latency(injection_rate=..., seconds=...)``. The
    delay is a sleep on the clock (``clock=`` or the process clock), so a
    `resilio.testing.FakeClock` records it instead of waiting, and an async
    `resilio.timeout` around it cancels it like a slow network.

    Example:
        ```python
        slow = chaos.latency(injection_rate=0.5, seconds=chaos.exponential(0.1), seed=1)
        ```

    Args:
        injection_rate: The share of calls delayed, 0 to 1, or a callable over
            the call's `ChaosContext`.
        seconds: The delay in seconds, or a distribution to draw it from
            (`uniform`, `exponential`, `normal`, or any callable taking a
            ``random.Random`` and returning seconds).
        enabled: Whether to inject at all: a bool, or a callable over the
            call's `ChaosContext` (per tenant, per environment...).
        seed: Seeds this strategy's random source, so runs repeat.
        listeners: Callables that receive a ``CHAOS_LATENCY`` event per injection.
        clock: The clock to sleep on; default the process clock.
        name: The name in events and messages.
    """

    __slots__ = ("seconds",)

    def __init__(
        self,
        *,
        injection_rate: float | Callable[[ChaosContext], float],
        seconds: float | Distribution,
        enabled: bool | Callable[[ChaosContext], bool] = True,
        seed: int | None = None,
        listeners: Iterable[Listener] | None = None,
        clock: Clock | None = None,
        name: str = "chaos.latency",
    ) -> None:
        super().__init__(
            injection_rate=injection_rate,
            enabled=enabled,
            seed=seed,
            listeners=listeners,
            clock=clock,
            name=name,
        )
        self.seconds = check_seconds(seconds, "seconds=")

    def _delay(self) -> float:
        delay = self._trigger.draw(self.seconds)
        self._emit(EventKind.CHAOS_LATENCY, delay=delay)
        return delay

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        fires = self._trigger.fires

        def delayed(*args: P.args, **kwargs: P.kwargs) -> T:
            if fires(args, kwargs):
                (self._clock or runtime.clock).sleep(self._delay())
            return fn(*args, **kwargs)

        return delayed

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        fires = self._trigger.fires

        async def delayed(*args: P.args, **kwargs: P.kwargs) -> T:
            if fires(args, kwargs):
                await (self._clock or runtime.clock).sleep_async(self._delay())
            return await fn(*args, **kwargs)

        return delayed


_MISSING: Any = object()


class OutcomeInjection(ChaosStrategy):
    """Returns a value instead of running a share of calls.

    Build it with ``chaos.outcome(injection_rate=..., value=...)``. Use it for
    answers that are failures only to the caller: an HTTP 503 response, an
    empty result. To raise, use `fault`.

    Example:
        ```python
        unavailable = chaos.outcome(
            injection_rate=0.1,
            factory=lambda ctx: httpx.Response(503, headers={"Retry-After": "1"}),
        )
        ```

    Args:
        injection_rate: The share of calls replaced, 0 to 1, or a callable over
            the call's `ChaosContext`.
        value: The value to return, the same object every time.
        factory: Instead of ``value``: called with the `ChaosContext` for a
            fresh value per injection.
        enabled: Whether to inject at all: a bool, or a callable over the
            call's `ChaosContext` (per tenant, per environment...).
        seed: Seeds this strategy's random source, so runs repeat.
        listeners: Callables that receive a ``CHAOS_OUTCOME`` event per injection.
        clock: The clock that stamps events; default the process clock.
        name: The name in events and messages.
    """

    __slots__ = ("_factory", "_value")

    def __init__(
        self,
        *,
        injection_rate: float | Callable[[ChaosContext], float],
        value: object = _MISSING,
        factory: Callable[[ChaosContext], object] | None = None,
        enabled: bool | Callable[[ChaosContext], bool] = True,
        seed: int | None = None,
        listeners: Iterable[Listener] | None = None,
        clock: Clock | None = None,
        name: str = "chaos.outcome",
    ) -> None:
        super().__init__(
            injection_rate=injection_rate,
            enabled=enabled,
            seed=seed,
            listeners=listeners,
            clock=clock,
            name=name,
        )
        if (value is _MISSING) == (factory is None):
            raise TypeError(
                "outcome takes exactly one of value= (returned as is) or factory= "
                "(called with a ChaosContext for a fresh value each time)"
            )
        if factory is not None and not callable(factory):
            raise TypeError(f"factory= must be callable, got {factory!r}")
        if isinstance(value, BaseException):
            raise TypeError("outcome returns values; to raise an exception use chaos.fault(...)")
        self._value = value
        self._factory = factory

    def _make(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._factory is None:
            value = self._value
        else:
            value = self._factory(ChaosContext(self.name, args, kwargs))
        self._emit(EventKind.CHAOS_OUTCOME, result=value)
        return value

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        fires = self._trigger.fires

        def replaced(*args: P.args, **kwargs: P.kwargs) -> T:
            if fires(args, kwargs):
                return cast("T", self._make(args, kwargs))
            return fn(*args, **kwargs)

        return replaced

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        fires = self._trigger.fires

        async def replaced(*args: P.args, **kwargs: P.kwargs) -> T:
            if fires(args, kwargs):
                return cast("T", self._make(args, kwargs))
            return await fn(*args, **kwargs)

        return replaced


#: ``chaos.fault(injection_rate=..., error=...)`` builds a `FaultInjection`.
fault = FaultInjection
#: ``chaos.latency(injection_rate=..., seconds=...)`` builds a `LatencyInjection`.
latency = LatencyInjection
#: ``chaos.outcome(injection_rate=..., value=...)`` builds an `OutcomeInjection`.
outcome = OutcomeInjection


def __getattr__(name: str) -> Any:
    # The httpx transports load httpx only when first used.
    if name in {"ChaosTransport", "AsyncChaosTransport"}:
        try:
            from . import _chaos_httpx
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"resilio.chaos.{name} needs httpx: pip install 'resilio[httpx]'"
            ) from exc
        return getattr(_chaos_httpx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
