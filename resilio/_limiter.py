"""The rate limiter interface and its drivers: deciding, waiting for admission, decorating.

The algorithms live in ``resilio._core.limiters``, the state in a
`resilio.stores.Store`, and the concrete limiters in ``resilio._limits``;
this module only reads the clock, asks the store, sleeps in FIFO order when
asked to wait, and emits events.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Literal, ParamSpec, TypeVar

import anyio

from . import _events, _inline
from ._clock import Clock, SystemClock, runtime
from ._context import deadline_var
from ._core.limiters import (
    US,
    Algorithm,
    Decision,
    make_decision,
    to_us,
)
from ._errors import RateLimitExceeded
from ._events import Event, EventKind, Listener, emit, validate_listeners
from ._strategy import Strategy, checked_name
from ._waiting import TaskWaiter, ThreadWaiter, Waiter, lines_for
from .stores import MemoryStore, Store

__all__ = ["LimitedCall", "RateLimiter"]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")

KeyArg = str | Callable[..., str]
CostArg = int | Callable[..., int]

_monotonic_ns = time.monotonic_ns


class _Unset(enum.Enum):
    # None means "wait as long as it takes" for a timeout, so "not given" needs its own value.
    TIMEOUT = "the limiter's timeout"

    def __repr__(self) -> str:
        return "<the limiter's timeout>"


_LIMITER_TIMEOUT: Final = _Unset.TIMEOUT
_NUMBERS = (int, float)
# The usual cost; small ints are shared objects, so an identity test skips validation.
_ONE = 1


def _positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive, finite number, got {value!r}")
    return float(value)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _duration_us(name: str, seconds: object) -> int:
    micros = to_us(_positive_number(name, seconds))
    if micros < 1:
        raise ValueError(f"{name} must be at least one microsecond, got {seconds!r} seconds")
    return micros


def _too_long(wait: float, left: float) -> bool:
    """Whether waiting ``wait`` seconds ends after ``left`` seconds, at the limiters' resolution.

    Both compare in whole microseconds: a deadline minus the time is a float
    difference of two large numbers, and its rounding error must not turn a
    wait that ends exactly at the deadline into a timeout.
    """
    return wait > left and round(wait * US) > round(left * US)


def _check_timeout(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


class RateLimiter(Strategy):
    """The interface every rate limiter shares, whatever its algorithm.

    A limiter decides per key (a user id, an IP address, a tenant): each key
    has its own state in the limiter's store. It can be asked without waiting
    (`try_acquire`, `allow`), asked to wait in FIFO order (`acquire`), used as
    a decorator (`limit`, or the limiter itself with the default key ``""``),
    as a ``with`` / ``async with`` block, or as a step of a `resilio.Pipeline`.

    Waiting is FIFO per key: a caller that has to wait queues behind those
    already waiting (nobody barges in), only the first in line sleeps, and a
    caller that times out or is cancelled consumes nothing and wakes the next.
    `try_acquire` does not queue: it answers from the store at once.

    Build one of `TokenBucket`, `LeakyBucket`, `FixedWindow`, `SlidingWindow`,
    `SlidingWindowLog` or `AllOf`; this base class takes the algorithm objects
    they make.

    Args:
        limits: The algorithms to apply, all or nothing, to every request.
        max_queued: The most cost allowed to wait per key in `acquire`, or
            ``None`` for no bound.
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

    __slots__ = (
        # A limiter of one limit in memory keeps its decision methods here (see __init__).
        "__dict__",
        "_built",
        "_clock",
        "_clock_seen",
        "_inline",
        "_limits",
        "_lines",
        "_listeners",
        "_max_cost",
        "_max_queued",
        "_memory",
        "_own_store",
        "_store",
        "_timeout",
        "name",
    )

    def __init__(
        self,
        limits: Iterable[Algorithm],
        *,
        name: str | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        listeners: Iterable[Listener] | None = None,
        timeout: float | None = 0.0,
        max_queued: int | None = None,
    ) -> None:
        self._limits = tuple(limits)
        if not self._limits:
            raise ValueError("a rate limiter needs at least one limit")
        names = [limit.name for limit in self._limits]
        if len(set(names)) != len(names):
            raise ValueError(f"limits combined in one limiter need distinct names, got {names}")
        # A protocol check costs microseconds: limiters built per request skip it for memory.
        if store is not None and type(store) is not MemoryStore and not isinstance(store, Store):
            raise TypeError(f"store= takes a resilio.stores.Store, got {store!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock= takes a resilio Clock, got {clock!r}")
        _check_timeout(timeout)
        self.name = "+".join(names) if name is None else checked_name(name)
        self._store: Store = MemoryStore() if store is None else store
        self._own_store = store is not None  # AllOf keeps a part's chosen store
        self._clock = clock
        # The clock of the latest decision.
        self._clock_seen: Clock = clock or runtime.clock
        self._listeners = validate_listeners(listeners)
        self._timeout = timeout
        self._max_cost = min(limit.capacity for limit in self._limits)
        self._max_queued = max_queued
        # Keyed by the state's names (in any order), not by self.name.
        self._lines = lines_for(self._store, tuple(sorted(names)))
        # Exactly a MemoryStore (a subclass may do anything): it never blocks, so
        # the async forms may call it directly.
        store = self._store
        self._memory = type(store) is MemoryStore
        if isinstance(store, MemoryStore):
            store._use_clock(self._limits, self._clock_seen)
        elif (check := getattr(store, "_check_limits", None)) is not None:
            check(self._limits)  # RedisStore: kinds, names and key count, refused now
        # The hottest path in resilio: one-frame decisions shadow the methods of the
        # same names (see resilio._inline), built for the process-wide settings of
        # the moment (runtime.version), and built again by the methods when those
        # changed.
        self._inline = self._memory and len(self._limits) == 1 and not self._listeners
        self._built = -1  # the runtime.version they were built at
        if self._inline:
            self._fast("allow")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _check_target(self, is_async: bool) -> None:
        if not is_async and getattr(self._store, "is_async", False):
            raise TypeError(
                f"rate limiter {self.name!r} keeps its state through an async client, so a "
                "sync function cannot wait for it: decorate an async def function, or give "
                "the store a sync client"
            )

    @property
    def store(self) -> Store:
        """The store that holds this limiter's state."""
        return self._store

    @property
    def max_cost(self) -> int:
        """The largest cost a single request may ask for."""
        return self._max_cost

    # -- helpers -----------------------------------------------------------

    def _now_us(self, clock: Clock) -> int:
        if type(clock) is SystemClock:
            return _monotonic_ns() // 1000
        return round(clock.now() * US)

    def _fast(self, method: str) -> Callable[..., Any] | None:
        """The one-frame decision for ``method``, built now if due; None while anybody listens.

        Called by the methods of a limiter entitled to one-frame decisions:
        they are built when the limiter is, and again after a change of the
        process-wide settings they depend on (a swapped clock, listeners
        added or removed), by the first decision that meets them out of date
        (they hand it to the methods). While anybody listens, the methods,
        which emit, answer.
        """
        version = runtime.version  # read first: a change meanwhile is seen next time
        if self._built == version and (fast := self.__dict__.get(method)) is not None:
            return fast  # type: ignore[no-any-return]
        for name in _inline.METHODS:
            self.__dict__.pop(name, None)
        clock = self._current_clock()  # follows a swap of the global clock
        if _events.global_listeners:
            return None
        assert isinstance(self._store, MemoryStore)
        made = _inline.decisions(self, self._store, self._limits[0], clock, version)
        self.__dict__.update(made)
        self._built = version
        return made[method]

    def __copy__(self) -> RateLimiter:
        """Another limiter object applying the same limits to the same state."""
        twin = object.__new__(type(self))
        for name in RateLimiter.__slots__:
            if name != "__dict__" and hasattr(self, name):
                setattr(twin, name, getattr(self, name))
        # The one-frame decisions belong to this object: the twin builds its own.
        methods = {
            name: value for name, value in self.__dict__.items() if name not in _inline.METHODS
        }
        twin.__dict__.update(methods)
        twin._built = -1
        return twin

    def _current_clock(self) -> Clock:
        clock = self._clock or runtime.clock
        if clock is not self._clock_seen:
            self._clock_changed(clock)
        return clock

    def _clock_changed(self, clock: Clock) -> None:
        """The global clock was swapped (`resilio.testing.use_clock`): start afresh on it.

        Times from two clocks do not compare, so what this limiter holds in a
        memory store, stamped with the old clock's times, is dropped, and the
        store's guard against time running backwards starts again. A store
        keeping its own time (Redis) has nothing to drop.
        """
        self._clock_seen = clock
        if isinstance(self._store, MemoryStore):
            self._store._use_clock(self._limits, clock)

    def _pause(self, key: str, retry_after: float, clock: Clock, real_clock: bool) -> float:
        """How long the head of ``key``'s line sleeps before it asks again.

        Until the cost fits; on a clock other than the system's, no longer
        than until the next timeout of a waiter behind it, which on a fake
        clock only the head's sleeps bring about (see `Lines.wake_expired`).
        """
        if real_clock:
            return retry_after
        now = clock.now()
        return max(0.0, min(retry_after, self._lines.wake_expired(key, now) - now))

    def _follow_clock(self, clock: Clock, started: float, waiter: Waiter) -> tuple[Clock, float]:
        """The clock a waiter goes on with, and when it started waiting, on that clock.

        A waiter on the global clock follows a swap that happens while it
        waits, keeping the time it had waited and had left to wait, so it
        never decides with the old clock's times on the new clock's state.
        """
        current = self._current_clock()
        if current is clock:
            return clock, started
        now, then = current.now(), clock.now()
        waiter.deadline = now + (waiter.deadline - then)
        return current, now - (then - started)

    def _check_request(self, key: object, cost: object) -> None:
        """Raise for a key that is not a string or a cost this limiter cannot take.

        The decision paths test the usual case inline (a str key, a cost of
        one or a small int) and call this only for the rest.
        """
        if not isinstance(key, str):
            raise TypeError(f"a rate limiter key must be a string, got {key!r}")
        self._bad_cost(cost)

    def _bad_cost(self, cost: object) -> None:
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise TypeError(f"cost must be an integer, got {cost!r}")
        if cost <= 0:
            raise ValueError(f"cost must be a positive integer, got {cost!r}")
        if cost > self._max_cost:
            raise ValueError(
                f"cost {cost} is above the capacity of {self.name!r} ({self._max_cost}): "
                "it could never be admitted; raise the capacity or split the request"
            )

    def _emit(self, kind: EventKind, clock: Clock, key: str, delay: float | None = None) -> None:
        emit(Event(kind, self.name, clock.now(), delay=delay, key=key), self._listeners)

    def _emit_admission(self, allowed: bool, clock: Clock, key: str) -> None:
        self._emit(EventKind.LIMITER_ALLOWED if allowed else EventKind.LIMITER_REJECTED, clock, key)

    def _emit_decision(self, decision: Decision, clock: Clock, key: str) -> None:
        if decision[0]:
            self._emit(EventKind.LIMITER_ALLOWED, clock, key)
        else:
            self._emit(EventKind.LIMITER_REJECTED, clock, key, decision[2])

    def _exceeded(self, key: str, cost: int, retry_after: float, clock: Clock) -> RateLimitExceeded:
        if self._listeners or _events.global_listeners:
            self._emit(EventKind.LIMITER_REJECTED, clock, key, retry_after)
        return RateLimitExceeded(
            f"rate limit {self.name!r} exceeded for key {key!r} (cost {cost}); "
            f"retry after {retry_after:.6f} s",
            retry_after=retry_after,
        )

    def _budget(self, timeout: float | None, clock: Clock) -> float:
        budget = _check_timeout(timeout)
        deadline = deadline_var.get()
        if deadline is not None and self._clock is None:
            # An enclosing resilio.timeout reads the same global clock.
            budget = min(budget, max(0.0, deadline - clock.now()))
        return budget

    # -- non-blocking ------------------------------------------------------

    def try_acquire(self, key: str = "", cost: int = 1) -> Decision:
        """Consume ``cost`` from ``key`` if it fits now; never blocks.

        Args:
            key: Whose limit to use (a user id, an IP address...).
            cost: How many units the request uses.

        Returns:
            The `Decision`; nothing is consumed when it is not ``allowed``.

        Raises:
            ValueError: ``cost`` is not positive or exceeds the capacity.
        """
        if self._inline and (fast := self._fast("try_acquire")) is not None:
            return fast(key, cost)  # type: ignore[no-any-return]
        if key.__class__ is not str or (
            cost is not _ONE and (cost.__class__ is not int or not 0 < cost <= self._max_cost)
        ):
            self._check_request(key, cost)
        clock = self._current_clock()
        decision = self._store.acquire(self._limits, key, cost, self._now_us(clock))
        if self._listeners or _events.global_listeners:
            self._emit_decision(decision, clock, key)
        return decision

    def allow(self, key: str = "", cost: int = 1) -> bool:
        """Like `try_acquire`, answering only whether the request was admitted.

        The fastest way to ask. Args and errors as for `try_acquire`.
        """
        if self._inline and (fast := self._fast("allow")) is not None:
            return fast(key, cost)  # type: ignore[no-any-return]
        if key.__class__ is not str or (
            cost is not _ONE and (cost.__class__ is not int or not 0 < cost <= self._max_cost)
        ):
            self._check_request(key, cost)
        clock = self._current_clock()
        allowed = self._store.allow(self._limits, key, cost, self._now_us(clock))
        if self._listeners or _events.global_listeners:
            self._emit_admission(allowed, clock, key)
        return allowed

    def peek(self, key: str = "", cost: int = 1) -> Decision:
        """Return the decision `try_acquire` would make now, consuming nothing.

        Args:
            key: Whose limit to inspect.
            cost: The cost to test.
        """
        if key.__class__ is not str or (
            cost is not _ONE and (cost.__class__ is not int or not 0 < cost <= self._max_cost)
        ):
            self._check_request(key, cost)
        clock = self._current_clock()
        return self._store.peek(self._limits, key, cost, self._now_us(clock))

    def reset(self, key: str = "") -> None:
        """Forget everything consumed by ``key``: it is fully available again."""
        self._store.reset(self._limits, key)

    async def try_acquire_async(self, key: str = "", cost: int = 1) -> Decision:
        """Async twin of `try_acquire` (needed with stores on async clients)."""
        if self._inline and (fast := self._fast("try_acquire_async")) is not None:
            return await fast(key, cost)  # type: ignore[no-any-return]
        if key.__class__ is not str or (
            cost is not _ONE and (cost.__class__ is not int or not 0 < cost <= self._max_cost)
        ):
            self._check_request(key, cost)
        clock = self._current_clock()
        now = self._now_us(clock)
        if self._memory:
            decision = self._store.acquire(self._limits, key, cost, now)
        else:
            decision = await self._store.acquire_async(self._limits, key, cost, now)
        if self._listeners or _events.global_listeners:
            self._emit_decision(decision, clock, key)
        return decision

    async def allow_async(self, key: str = "", cost: int = 1) -> bool:
        """Async twin of `allow`."""
        if self._inline and (fast := self._fast("allow_async")) is not None:
            return await fast(key, cost)  # type: ignore[no-any-return]
        return (await self.try_acquire_async(key, cost))[0]  # type: ignore[no-any-return]

    async def peek_async(self, key: str = "", cost: int = 1) -> Decision:
        """Async twin of `peek`."""
        if key.__class__ is not str or (
            cost is not _ONE and (cost.__class__ is not int or not 0 < cost <= self._max_cost)
        ):
            self._check_request(key, cost)
        clock = self._current_clock()
        return await self._store.peek_async(self._limits, key, cost, self._now_us(clock))

    async def reset_async(self, key: str = "") -> None:
        """Async twin of `reset`."""
        await self._store.reset_async(self._limits, key)

    # -- waiting -----------------------------------------------------------

    def _doomed(self, key: str, cost: int, decision: Decision, budget: float) -> bool:
        """Whether waiting is certain to fail: too long for ``budget``, or the line is full."""
        if budget == 0 or _too_long(decision[2], budget):
            return True
        return (
            self._max_queued is not None and self._lines.queued_cost(key) + cost > self._max_queued
        )

    def _line_cost(self, key: str, cost: int) -> int:
        """The cost of the line ahead plus ``cost``, capped at what one request may ask."""
        return min(self._lines.queued_cost(key) + cost, self._max_cost)

    def acquire(self, key: str = "", cost: int = 1, timeout: float | None = None) -> Decision:
        """Consume ``cost`` from ``key``, waiting in FIFO order until it fits.

        Args:
            key: Whose limit to use.
            cost: How many units the request uses.
            timeout: The most seconds to wait; ``None`` waits as long as it
                takes, ``0`` only admits at once (behind nobody). A round trip
                to a remote store is bounded by its client's own timeouts.

        Returns:
            The allowed `Decision`.

        Raises:
            RateLimitExceeded: Admission cannot happen within ``timeout``;
                raised at once when that is certain. Its ``retry_after`` says
                when the cost would fit (when it fits now but others wait
                ahead: when theirs and this one would). Nothing is consumed.
            ValueError: ``cost`` is not positive or exceeds the capacity.
        """
        if key.__class__ is not str or (
            cost is not _ONE and (cost.__class__ is not int or not 0 < cost <= self._max_cost)
        ):
            self._check_request(key, cost)
        if timeout is not None and (timeout.__class__ not in _NUMBERS or not timeout >= 0):
            _check_timeout(timeout)
        clock = self._current_clock()
        store, limits, lines = self._store, self._limits, self._lines
        if key not in lines.lines:
            decision = store.acquire(limits, key, cost, self._now_us(clock))
            if decision[0]:
                if self._listeners or _events.global_listeners:
                    self._emit(EventKind.LIMITER_ALLOWED, clock, key)
                return decision
        else:
            decision = store.peek(limits, key, cost, self._now_us(clock))
        budget = self._budget(timeout, clock)
        if self._doomed(key, cost, decision, budget):
            retry = decision[2]
            if not retry:  # the cost fits now: only the callers ahead are in the way
                retry = store.peek(limits, key, self._line_cost(key, cost), self._now_us(clock))[2]
            raise self._exceeded(key, cost, retry, clock)
        if not runtime.waits_enabled:
            return make_decision(True, 0, 0.0, decision[3], decision[4])
        start = clock.now()
        waiter = ThreadWaiter(cost, start + budget)
        real_clock = type(clock) is SystemClock
        lines.join(key, waiter)
        try:
            while True:
                if self._clock is None:  # on the global clock, which a test may swap
                    clock, start = self._follow_clock(clock, start, waiter)
                    real_clock = type(clock) is SystemClock
                if not lines.is_head(key, waiter):
                    left = waiter.deadline - clock.now()
                    if left <= 0:
                        raise self._exceeded(key, cost, decision[2], clock)
                    # Timed on any clock: one that is not the system's may still pass in
                    # real time (a skewed one); a fake one's head wakes it (see _pause).
                    waiter.event.wait(left if left != math.inf else None)
                    waiter.event.clear()
                    continue
                decision = store.acquire(limits, key, cost, self._now_us(clock))
                if decision[0]:
                    if self._listeners or _events.global_listeners:
                        self._emit(EventKind.LIMITER_WAITED, clock, key, clock.now() - start)
                    return decision
                if _too_long(decision[2], waiter.deadline - clock.now()):
                    raise self._exceeded(key, cost, decision[2], clock)
                pause = self._pause(key, decision[2], clock, real_clock)
                if real_clock or not getattr(store, "keeps_time", False):
                    clock.sleep(pause)
                else:
                    # A clock that need not pass in real time (a fake one), over a store
                    # that keeps its own time: the pause also lasts in real time, or the
                    # head would ask again at once, in a loop, until the store's time moved.
                    slept = time.monotonic()
                    clock.sleep(pause)
                    time.sleep(max(0.0, pause - (time.monotonic() - slept)))
        finally:
            lines.leave(key, waiter)

    async def acquire_async(
        self,
        key: str = "",
        cost: int = 1,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds the wait for admission
    ) -> Decision:
        """Async twin of `acquire`; cancelling the task while it waits consumes nothing.

        A decision already sent to a remote store (Redis) when the task is
        cancelled may have been made there: then its cost counts.
        """
        if key.__class__ is not str or (
            cost is not _ONE and (cost.__class__ is not int or not 0 < cost <= self._max_cost)
        ):
            self._check_request(key, cost)
        if timeout is not None and (timeout.__class__ not in _NUMBERS or not timeout >= 0):
            _check_timeout(timeout)
        clock = self._current_clock()
        store, limits, lines = self._store, self._limits, self._lines
        if key not in lines.lines:
            decision = await store.acquire_async(limits, key, cost, self._now_us(clock))
            if decision[0]:
                if self._listeners or _events.global_listeners:
                    self._emit(EventKind.LIMITER_ALLOWED, clock, key)
                return decision
        else:
            decision = await store.peek_async(limits, key, cost, self._now_us(clock))
        budget = self._budget(timeout, clock)
        if self._doomed(key, cost, decision, budget):
            retry = decision[2]
            if not retry:  # the cost fits now: only the callers ahead are in the way
                line_cost = self._line_cost(key, cost)
                retry = (await store.peek_async(limits, key, line_cost, self._now_us(clock)))[2]
            raise self._exceeded(key, cost, retry, clock)
        if not runtime.waits_enabled:
            return make_decision(True, 0, 0.0, decision[3], decision[4])
        start = clock.now()
        waiter = TaskWaiter(cost, start + budget)
        real_clock = type(clock) is SystemClock
        lines.join(key, waiter)
        try:
            while True:
                if self._clock is None:  # on the global clock, which a test may swap
                    clock, start = self._follow_clock(clock, start, waiter)
                    real_clock = type(clock) is SystemClock
                if not lines.is_head(key, waiter):
                    left = waiter.deadline - clock.now()
                    if left <= 0:
                        raise self._exceeded(key, cost, decision[2], clock)
                    with anyio.move_on_after(left):  # timed on any clock, as in acquire
                        await waiter.event.wait()
                    waiter.renew()
                    continue
                decision = await store.acquire_async(limits, key, cost, self._now_us(clock))
                if decision[0]:
                    if self._listeners or _events.global_listeners:
                        self._emit(EventKind.LIMITER_WAITED, clock, key, clock.now() - start)
                    return decision
                if _too_long(decision[2], waiter.deadline - clock.now()):
                    raise self._exceeded(key, cost, decision[2], clock)
                pause = self._pause(key, decision[2], clock, real_clock)
                if real_clock or not getattr(store, "keeps_time", False):
                    await clock.sleep_async(pause)
                else:  # as in acquire
                    slept = time.monotonic()
                    await clock.sleep_async(pause)
                    await anyio.sleep(max(0.0, pause - (time.monotonic() - slept)))
        finally:
            lines.leave(key, waiter)

    # -- decorator, with, pipeline -----------------------------------------

    def limit(
        self,
        key: KeyArg = "",
        cost: CostArg = 1,
        timeout: float | Literal[_Unset.TIMEOUT] | None = _LIMITER_TIMEOUT,
    ) -> LimitedCall:
        """Return a decorator (and ``with`` block) that admits calls through this limiter.

        Args:
            key: The key, or a function of the decorated call's arguments
                returning it, e.g. ``lambda user_id, **_: f"user:{user_id}"``.
            cost: The cost, or a function of the call's arguments returning it.
            timeout: Seconds to wait for admission; ``0`` rejects at once,
                ``None`` waits as long as it takes. Defaults to the limiter's
                ``timeout``.
        """
        return LimitedCall(
            self, key, cost, self._timeout if timeout is _LIMITER_TIMEOUT else timeout
        )

    def _default(self) -> LimitedCall:
        return LimitedCall(self, "", 1, self._timeout)

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        return self._default()._wrap_sync(fn)

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        return self._default()._wrap_async(fn)

    def __enter__(self) -> Decision:
        return self._default().__enter__()

    def __exit__(self, *exc_info: object) -> None:
        return None

    async def __aenter__(self) -> Decision:
        return await self._default().__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class LimitedCall(Strategy):
    """A limiter bound to a key, a cost and a timeout: a decorator and a ``with`` block.

    Made by `RateLimiter.limit`. As a decorator, ``key`` and ``cost`` may be
    functions of the decorated call's arguments; as a ``with`` block they must
    be plain values.
    """

    __slots__ = ("_cost", "_key", "_limiter", "_timeout", "name")

    def __init__(
        self, limiter: RateLimiter, key: KeyArg, cost: CostArg, timeout: float | None
    ) -> None:
        if not (isinstance(key, str) or callable(key)):
            raise TypeError(f"key must be a string or a function returning one, got {key!r}")
        if not callable(cost) and (cost.__class__ is not int or not 0 < cost <= limiter.max_cost):
            limiter._bad_cost(cost)
        _check_timeout(timeout)
        self._limiter = limiter
        self._key = key
        self._cost = cost
        self._timeout = timeout
        self.name = limiter.name

    def _resolve(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, int]:
        key = self._key if isinstance(self._key, str) else self._key(*args, **kwargs)
        cost = self._cost(*args, **kwargs) if callable(self._cost) else self._cost
        return key, cost

    def _static(self) -> tuple[str, int]:
        if callable(self._key) or callable(self._cost):
            raise TypeError(
                "a `with` block has no call arguments: give limit() a plain key and cost"
            )
        return self._key, self._cost

    def _check_target(self, is_async: bool) -> None:
        self._limiter._check_target(is_async)

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        acquire, resolve, timeout = self._limiter.acquire, self._resolve, self._timeout

        def limited(*args: P.args, **kwargs: P.kwargs) -> T:
            key, cost = resolve(args, kwargs)
            acquire(key, cost, timeout)
            return fn(*args, **kwargs)

        return limited

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        acquire, resolve, timeout = self._limiter.acquire_async, self._resolve, self._timeout

        async def limited(*args: P.args, **kwargs: P.kwargs) -> T:
            key, cost = resolve(args, kwargs)
            await acquire(key, cost, timeout)
            return await fn(*args, **kwargs)

        return limited

    def __enter__(self) -> Decision:
        key, cost = self._static()
        return self._limiter.acquire(key, cost, self._timeout)

    def __exit__(self, *exc_info: object) -> None:
        return None

    async def __aenter__(self) -> Decision:
        key, cost = self._static()
        return await self._limiter.acquire_async(key, cost, self._timeout)

    async def __aexit__(self, *exc_info: object) -> None:
        return None
