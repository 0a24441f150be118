"""The concrete rate limiters: token and leaky buckets, windows, and AllOf.

Each class only validates its options and builds its algorithm from
``resilio._core.limiters``; `RateLimiter` does the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

from ._clock import Clock
from ._core.limiters import (
    US,
    Algorithm,
    FixedWindowAlgorithm,
    GcraAlgorithm,
    LeakyAlgorithm,
    SlidingLogAlgorithm,
    SlidingWindowAlgorithm,
    parse_limit,
)
from ._events import Listener
from ._limiter import RateLimiter, _duration_us, _positive_int, _positive_number
from ._strategy import checked_name
from .stores import Store

__all__ = [
    "AllOf",
    "FixedWindow",
    "LeakyBucket",
    "SlidingWindow",
    "SlidingWindowLog",
    "TokenBucket",
]


# The largest integer below which every integer is a double: the Lua scripts'
# only number type. Counts and the algorithms' products stay below it.
_EXACT: Final = 2**53
# Time spans are added to the time, which on Redis is the server's clock in µs
# since 1970 (2**50.6 in 2026, 2**52 in 2112): below this, the sums stay exact.
_SPAN: Final = 2**52


def _exactly(owner: str, what: str, microseconds: int, advice: str) -> None:
    if microseconds >= _SPAN:
        raise ValueError(
            f"{owner}: {what} comes to {microseconds / US / 31_557_600:.3g} years, beyond "
            f"the 2**52 microseconds (about 143 years) that limiters add to the time "
            f"exactly; {advice}"
        )


def _split_rate(
    spec: str | None,
    first: float | int | None,
    period: float | None,
    what: tuple[str, str],
    default_period: float | None = None,
) -> tuple[float, float]:
    if spec is not None:
        if not isinstance(spec, str):
            raise TypeError(
                f"the positional argument is a limit string like '10/second', got {spec!r}"
            )
        for given, option in ((first, what[0]), (period, what[1])):
            if given is not None:
                raise TypeError(
                    f"give either a limit string or {option}=, not both: the string "
                    f"{spec!r} already says how many and per how long"
                )
        count, seconds = parse_limit(spec)
        return float(count), seconds
    if period is None:
        period = default_period
    if first is None or period is None:
        raise TypeError(
            f"{what[0]}= and {what[1]}= are required (or a limit string like '10/second')"
        )
    return first, period


class _BucketLimiter(RateLimiter):
    """The shared constructor of the bucket limiters: ``rate`` units per ``per`` seconds."""

    __slots__ = ()

    _algorithm: type[GcraAlgorithm | LeakyAlgorithm]
    #: Whether ``capacity`` also bounds the cost waiting in the queue.
    _capacity_bounds_queue = False

    def __init__(
        self,
        limit: str | None = None,
        /,
        *,
        rate: float | None = None,
        per: float | None = None,
        capacity: int | None = None,
        name: str | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        listeners: Iterable[Listener] | None = None,
        timeout: float | None = 0.0,
    ) -> None:
        rate_, per_ = _split_rate(limit, rate, per, ("rate", "per"), default_period=1.0)
        rate_ = _positive_number("rate", rate_)
        per_us = _duration_us("per", per_)
        capacity = math.ceil(rate_) if capacity is None else _positive_int("capacity", capacity)
        if per_us < rate_:
            raise ValueError(
                f"{type(self).__name__}: {rate_:g} per {per_us / US:g} s is more than one "
                "admission per microsecond, the resolution of the limiters; count in larger "
                "units (cost) or use a longer per="
            )
        interval = math.ceil(per_us / rate_)
        _exactly(
            type(self).__name__,
            "capacity x per / rate (the time a whole burst takes to refill or drain)",
            interval * capacity,
            "lower the capacity or raise the rate",
        )
        super().__init__(
            [self._algorithm(interval, capacity, _limit_name(name))],
            name=name,
            store=store,
            clock=clock,
            listeners=listeners,
            timeout=timeout,
            max_queued=capacity if self._capacity_bounds_queue else None,
        )


class TokenBucket(_BucketLimiter):
    """A token bucket: bursts up to ``capacity``, refilled at ``rate`` per ``per`` seconds.

    Implemented as GCRA (one timestamp per key, exact, O(1) memory). The
    emission interval ``per / rate`` is rounded up to a whole microsecond, so
    the rate is never exceeded.

    Args:
        limit: Optional limit string such as ``"10/second"`` instead of
            ``rate`` and ``per``.
        rate: Tokens added per period.
        per: The period, in seconds; 1 by default.
        capacity: The bucket size, the largest burst; defaults to ``rate``
            (rounded up).
        name: Names this limiter's state in its store (limiters with the same
            name and store share state); defaults to one derived from the
            algorithm and its parameters.
        store: Where the state lives; defaults to a new `MemoryStore`.
        clock: The clock to read and sleep on; defaults to ``runtime.clock``.
        listeners: Callables that receive this limiter's events.
        timeout: Seconds the decorator, pipeline and ``with`` forms wait for
            admission: ``0`` (the default) rejects at once with
            `RateLimitExceeded`, ``None`` waits as long as it takes.
    """

    __slots__ = ()

    _algorithm = GcraAlgorithm


class LeakyBucket(_BucketLimiter):
    """A leaky bucket as a shaper: admissions leave at a constant rate, with no burst.

    A request is admitted only when the previous one has drained (``cost``
    intervals of ``per / rate`` seconds each). Callers that `acquire` wait in
    a FIFO queue holding at most ``capacity`` units of cost; beyond it they
    are rejected at once. `try_acquire` never queues.

    Args:
        limit: Optional limit string such as ``"10/second"``.
        rate: Units admitted per period.
        per: The period, in seconds; 1 by default.
        capacity: The most cost allowed to wait in the queue (per key); also
            the largest cost of one request. Defaults to ``rate`` (rounded up).
        name: Names this limiter's state in its store (limiters with the same
            name and store share state); defaults to one derived from the
            algorithm and its parameters.
        store: Where the state lives; defaults to a new `MemoryStore`.
        clock: The clock to read and sleep on; defaults to ``runtime.clock``.
        listeners: Callables that receive this limiter's events.
        timeout: Seconds the decorator, pipeline and ``with`` forms wait for
            admission: ``0`` (the default) rejects at once with
            `RateLimitExceeded`, ``None`` waits as long as it takes.
    """

    __slots__ = ()

    _algorithm = LeakyAlgorithm
    _capacity_bounds_queue = True


def _window_init(
    cls: type[Algorithm],
    limit_spec: str | None,
    limit: int | None,
    window: float | None,
) -> tuple[int, int]:
    if limit_spec is not None:
        count, seconds = _split_rate(limit_spec, limit, window, ("limit", "window"))
        return int(count), _duration_us("window", seconds)
    if limit is None or window is None:
        raise TypeError(
            f"{cls.__name__}: limit= and window= are required (or a limit string like '100/minute')"
        )
    return _positive_int("limit", limit), _duration_us("window", window)


class _WindowLimiter(RateLimiter):
    __slots__ = ()

    _algorithm: type[FixedWindowAlgorithm | SlidingWindowAlgorithm | SlidingLogAlgorithm]

    def __init__(
        self,
        limit_spec: str | None = None,
        /,
        *,
        limit: int | None = None,
        window: float | None = None,
        name: str | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        listeners: Iterable[Listener] | None = None,
        timeout: float | None = 0.0,
    ) -> None:
        count, window_us = _window_init(self._algorithm, limit_spec, limit, window)
        owner = type(self).__name__
        _exactly(owner, "the window", window_us, "use a shorter window")
        if count >= _EXACT:
            raise ValueError(
                f"{owner}: a limit of {count} is 2**53 or more, beyond what limiters count "
                "exactly (on Redis, in a double); lower it, or count in larger units (cost)"
            )
        algorithm = self._algorithm(count, window_us, _limit_name(name))
        super().__init__(
            [algorithm], name=name, store=store, clock=clock, listeners=listeners, timeout=timeout
        )


class FixedWindow(_WindowLimiter):
    """At most ``limit`` units per window of ``window`` seconds.

    Windows are aligned on multiples of ``window`` on the clock, so every
    key's windows start together. Cheap and predictable, but up to
    ``2 * limit`` units can pass within ``window`` seconds around a boundary.

    Args:
        limit_spec: Optional limit string such as ``"100/minute"``.
        limit: Units admitted per window.
        window: The window length, in seconds.
        name: Names this limiter's state in its store (limiters with the same
            name and store share state); defaults to one derived from the
            algorithm and its parameters.
        store: Where the state lives; defaults to a new `MemoryStore`.
        clock: The clock to read and sleep on; defaults to ``runtime.clock``.
        listeners: Callables that receive this limiter's events.
        timeout: Seconds the decorator, pipeline and ``with`` forms wait for
            admission: ``0`` (the default) rejects at once with
            `RateLimitExceeded`, ``None`` waits as long as it takes.
    """

    __slots__ = ()
    _algorithm = FixedWindowAlgorithm


class SlidingWindow(_WindowLimiter):
    """The sliding-window counter: ``limit`` units per ``window`` seconds, estimated.

    Keeps this window's and the previous window's counts and weights the
    previous one by how much of it still overlaps the sliding window. O(1)
    memory. Exact for evenly spread traffic; in the worst case (the previous
    window's hits all at its very end) up to ``2 * limit`` units can pass
    within one sliding window, though never more than ``limit`` in one
    aligned window.

    Args:
        limit_spec: Optional limit string such as ``"100/minute"``.
        limit: Units admitted per window.
        window: The window length, in seconds.
        name: Names this limiter's state in its store (limiters with the same
            name and store share state); defaults to one derived from the
            algorithm and its parameters.
        store: Where the state lives; defaults to a new `MemoryStore`.
        clock: The clock to read and sleep on; defaults to ``runtime.clock``.
        listeners: Callables that receive this limiter's events.
        timeout: Seconds the decorator, pipeline and ``with`` forms wait for
            admission: ``0`` (the default) rejects at once with
            `RateLimitExceeded`, ``None`` waits as long as it takes.
    """

    __slots__ = ()
    _algorithm = SlidingWindowAlgorithm


class SlidingWindowLog(_WindowLimiter):
    """The exact sliding window: at most ``limit`` units in any ``window`` seconds.

    Keeps a log of admissions (one entry per distinct admission time), so
    memory per key grows up to ``limit`` entries.

    Args:
        limit_spec: Optional limit string such as ``"100/minute"``.
        limit: Units admitted in any window.
        window: The window length, in seconds.
        name: Names this limiter's state in its store (limiters with the same
            name and store share state); defaults to one derived from the
            algorithm and its parameters.
        store: Where the state lives; defaults to a new `MemoryStore`.
        clock: The clock to read and sleep on; defaults to ``runtime.clock``.
        listeners: Callables that receive this limiter's events.
        timeout: Seconds the decorator, pipeline and ``with`` forms wait for
            admission: ``0`` (the default) rejects at once with
            `RateLimitExceeded`, ``None`` waits as long as it takes.
    """

    __slots__ = ()
    _algorithm = SlidingLogAlgorithm


class AllOf(RateLimiter):
    """Several limits as one: a request is admitted only if every limit admits it.

    A rejected request consumes nothing in any of them. Each part may be a
    limiter or a limit string, which becomes a `SlidingWindow` (or
    ``algorithm``). A part's algorithm and parameters are used, and so are its
    ``store=``, ``clock=`` and listeners: a part built on a Redis store makes
    the whole decision run on that store. Parts given different stores or
    clocks (or ones that differ from this combinator's own) are refused with a
    ValueError, since one all-or-nothing decision happens in one place.

    Example:
        ``AllOf("10/second", "1000/hour")`` or
        ``AllOf(TokenBucket(rate=10, capacity=20), FixedWindow(limit=1000, window=3600))``.

    Args:
        *parts: The limiters or limit strings to combine.
        algorithm: The limiter class used for limit strings.
        name: What events and errors call this combination; defaults to its
            parts' names joined by ``+``. The state is kept per limit,
            under the parts' names, in this combination's store: the parts
            and other combinations of them share it only when they were all
            given that store (a part built without ``store=`` keeps its own
            state apart, in a store of its own).
        store: Where the state lives; defaults to the store the parts were
            given, else a new `MemoryStore`.
        clock: The clock to read and sleep on; defaults to ``runtime.clock``.
        listeners: Callables that receive this limiter's events.
        timeout: Seconds the decorator, pipeline and ``with`` forms wait for
            admission: ``0`` (the default) rejects at once with
            `RateLimitExceeded`, ``None`` waits as long as it takes.
    """

    __slots__ = ()

    def __init__(
        self,
        *parts: RateLimiter | str,
        algorithm: type[TokenBucket | LeakyBucket | _WindowLimiter] | None = None,
        name: str | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        listeners: Iterable[Listener] | None = None,
        timeout: float | None = 0.0,
    ) -> None:
        if not parts:
            raise ValueError("AllOf needs at least one limit")
        if algorithm is not None and not (
            isinstance(algorithm, type) and issubclass(algorithm, (_BucketLimiter, _WindowLimiter))
        ):
            raise TypeError(
                "algorithm= takes the limiter class that reads AllOf's limit strings, such as "
                f"resilio.TokenBucket or resilio.SlidingWindow, got {algorithm!r}"
            )
        factory = SlidingWindow if algorithm is None else algorithm
        limits: list[Algorithm] = []
        queued: list[int] = []
        limiters: list[RateLimiter] = []
        for part in parts:
            if isinstance(part, str):
                part = factory(part)
            if not isinstance(part, RateLimiter):
                raise TypeError(f"AllOf takes rate limiters or limit strings, got {part!r}")
            limiters.append(part)
            limits.extend(part._limits)
            if part._max_queued is not None:
                queued.append(part._max_queued)
        # The same limit twice ("2/s" and "2/second") is that limit once; two different
        # limits under one name are refused by RateLimiter.
        same = {(limit.name, limit.kind, limit.params): limit for limit in limits}
        limits = list(same.values())
        # One decision runs in one store on one clock: the parts' own choices carry
        # over, and parts that disagree (with each other or with AllOf) are refused.
        store = _shared("store", store, [p._store for p in limiters if p._own_store])
        clock = _shared("clock", clock, [p._clock for p in limiters if p._clock is not None])
        heard = [*(listeners or ()), *(x for p in limiters for x in p._listeners)]
        super().__init__(
            limits,
            name=name,
            store=store,
            clock=clock,
            listeners=list(dict.fromkeys(heard)),
            timeout=timeout,
            max_queued=min(queued) if queued else None,
        )


def _limit_name(name: object) -> str:
    """The name a limiter gives its limit: ``name`` checked, or "" for the default one."""
    return "" if name is None else checked_name(name)


def _shared(option: str, given: Any, from_parts: list[Any]) -> Any:
    """Return the one ``store``/``clock`` that AllOf and its parts agree on."""
    choices = list({id(x): x for x in ([given] if given is not None else []) + from_parts}.values())
    if len(choices) > 1:
        raise ValueError(
            f"AllOf decides all its limits at once, in one {option}, but its parts (or its "
            f"{option}=) name different ones: give every part the same {option}=, or give "
            f"{option}= to AllOf only"
        )
    return choices[0] if choices else None
