"""The event model: what resilio decided, delivered to listeners.

A listener is a callable taking one `Event`. Listeners registered on an object
(``listeners=``) hear that object's events; listeners registered with
`add_listener` hear every event in the process. A listener that raises is
logged and changes nothing for the caller. When nobody listens, emitting costs
one check.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._clock import runtime
from ._context import pipeline_var
from ._core.retry import GiveUpReason
from ._outcome import Outcome

__all__ = [
    "Event",
    "EventKind",
    "GiveUpReason",
    "Listener",
    "add_listener",
    "remove_listener",
]

logger = logging.getLogger("resilio")


class EventKind(str, enum.Enum):
    """The kinds of `Event`."""

    RETRY = "retry"
    """A retry was scheduled; ``delay`` says when it will start."""
    GAVE_UP = "gave_up"
    """A retry policy wanted to retry but stopped; ``reason`` says why."""
    TIMEOUT = "timeout"
    """A call ran past its timeout."""
    BREAKER_SUCCESS = "breaker_success"
    """A call admitted by a breaker counted as a success."""
    BREAKER_FAILURE = "breaker_failure"
    """A call admitted by a breaker counted as a failure."""
    BREAKER_IGNORED = "breaker_ignored"
    """A call admitted by a breaker ended with an ignored outcome."""
    BREAKER_REJECTED = "breaker_rejected"
    """A breaker refused a call."""
    BREAKER_STATE_CHANGED = "breaker_state_changed"
    """A breaker moved from ``previous_state`` to ``state``."""
    LIMITER_ALLOWED = "limiter_allowed"
    """A rate limiter admitted a request without waiting."""
    LIMITER_REJECTED = "limiter_rejected"
    """A rate limiter refused a request; ``delay`` is its retry-after in seconds."""
    LIMITER_WAITED = "limiter_waited"
    """A rate limiter admitted a request after it waited ``delay`` seconds."""
    BULKHEAD_REJECTED = "bulkhead_rejected"
    """A bulkhead refused a call: its queue was full, or the wait ran out."""
    BULKHEAD_LIMIT_CHANGED = "bulkhead_limit_changed"
    """An adaptive bulkhead moved its limit from ``previous_state`` to ``state``."""
    FALLBACK = "fallback"
    """A fallback replaced a handled ``outcome``."""
    HEDGE = "hedge"
    """A hedging policy started another attempt, number ``attempt``."""
    CHAOS_FAULT = "chaos_fault"
    """Chaos raised the exception in ``outcome`` instead of running the call."""
    CHAOS_LATENCY = "chaos_latency"
    """Chaos delayed a call by ``delay`` seconds."""
    CHAOS_OUTCOME = "chaos_outcome"
    """Chaos returned the result in ``outcome`` instead of running the call."""
    ATTEMPT = "attempt"
    """An attempt made by a retry policy ended: number ``attempt`` ran ``duration``
    seconds and produced ``outcome``; ``handled`` says whether ``on`` matched it.
    Delivered only to listeners added with ``add_listener(..., timings=True)``."""
    CALL = "call"
    """A call through a retry policy ended after ``attempt`` attempts: ``duration``
    seconds from the start of the first attempt to the final ``outcome``, waits
    included; ``handled`` says whether ``on`` matched that outcome (the policy gave
    up on it). Delivered only to listeners added with ``add_listener(..., timings=True)``."""


@dataclass(slots=True)
class Event:
    """One decision resilio made.

    A plain record (not frozen: a frozen dataclass costs six times as much to
    build, and events are built on every decision someone listens to). Treat it
    as read-only; the same object reaches every listener.

    Attributes:
        kind: What happened.
        source: The name of the policy or breaker that decided.
        time: When, in seconds on the deciding policy's clock.
        attempt: The attempt number, for retry events.
        delay: Seconds until the next attempt, for ``RETRY``.
        outcome: The outcome that led to the decision, when there is one.
        reason: Why a retry policy gave up, for ``GAVE_UP``.
        state: The breaker's state after the event, for breaker events.
        previous_state: The breaker's state before a ``BREAKER_STATE_CHANGED``.
        timeout: The timeout in seconds, for ``TIMEOUT``.
        duration: Seconds the attempt or call took, for ``ATTEMPT`` and ``CALL``.
        handled: Whether the retry policy's ``on`` matched the outcome, for
            ``ATTEMPT`` and ``CALL`` (True: a failure it retried or gave up on).
        key: The rate-limit key, for limiter events (may identify a user:
            keep it out of metrics unless you mean to record it).
        pipeline: The name of the innermost named `resilio.Pipeline` the
            decision was made in, if any (filled in when the event is emitted).
    """

    kind: EventKind
    source: str
    time: float
    attempt: int | None = None
    delay: float | None = None
    outcome: Outcome[Any] | None = None
    reason: GiveUpReason | None = None
    state: Any = None
    previous_state: Any = None
    timeout: float | None = None
    duration: float | None = None
    handled: bool | None = None
    key: str | None = None
    pipeline: str | None = None


Listener = Callable[[Event], object]

# Process-wide listeners. Tuples, replaced on change, so readers never lock;
# writers do, so that two changes at once both count.
global_listeners: tuple[Listener, ...] = ()
_changing = threading.Lock()
# The subset that also hears ATTEMPT and CALL. Timing attempts costs clock readings
# on every call, so retry policies pay it only while this is not empty.
timing_listeners: tuple[Listener, ...] = ()


def add_listener(listener: Listener, *, timings: bool = False) -> None:
    """Register ``listener`` to hear every event resilio emits in this process.

    Args:
        listener: A callable taking one `Event`.
        timings: Also deliver ``ATTEMPT`` and ``CALL`` events, the durations
            of attempts and calls of retry policies. While any such listener is
            registered, every call through a retry policy reads the clock
            before and after each attempt.
    """
    global global_listeners, timing_listeners
    if not callable(listener):
        raise TypeError(f"a listener must be callable, got {listener!r}")
    with _changing:
        global_listeners = (*global_listeners, listener)
        if timings:
            timing_listeners = (*timing_listeners, listener)
        runtime.changed()


def remove_listener(listener: Listener) -> None:
    """Unregister a listener added with `add_listener`; unknown ones raise ValueError."""
    global global_listeners, timing_listeners
    with _changing:
        items = list(global_listeners)
        items.remove(listener)
        global_listeners = tuple(items)
        # A listener added twice, once with timings, keeps them until its last removal.
        if timing_listeners.count(listener) > global_listeners.count(listener):
            timed = list(timing_listeners)
            timed.remove(listener)
            timing_listeners = tuple(timed)
        runtime.changed()


def validate_listeners(listeners: Iterable[Listener] | None) -> tuple[Listener, ...]:
    """Return ``listeners`` as a tuple after checking that each is callable."""
    if listeners is None:
        return ()
    items = tuple(listeners)
    for item in items:
        if not callable(item):
            raise TypeError(f"listeners= takes callables, got {item!r}")
    return items


def emit(event: Event, listeners: tuple[Listener, ...]) -> None:
    """Deliver ``event`` to ``listeners`` and the global ones; never raises."""
    if event.pipeline is None:
        event.pipeline = pipeline_var.get()
    for listener in (*listeners, *global_listeners):
        try:
            listener(event)
        except Exception:  # noqa: PERF203 - each listener is isolated from the others
            logger.exception("resilio listener %r failed on %s", listener, event.kind.value)


def emit_timing(event: Event) -> None:
    """Deliver an ``ATTEMPT`` or ``CALL`` event to the timing listeners; never raises."""
    if event.pipeline is None:
        event.pipeline = pipeline_var.get()
    for listener in timing_listeners:
        try:
            listener(event)
        except Exception:  # noqa: PERF203 - each listener is isolated from the others
            logger.exception("resilio listener %r failed on %s", listener, event.kind.value)


def listening(listeners: tuple[Listener, ...]) -> bool:
    """Return whether emitting would reach anybody."""
    return bool(listeners or global_listeners)
