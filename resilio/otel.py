"""OpenTelemetry metrics, span events and attempt spans for what resilio decides.

`instrument` registers one process-wide listener that turns resilio's events
into OpenTelemetry measurements::

    import resilio.otel

    resilio.otel.instrument()   # the global providers: a no-op until an SDK is set up

It depends only on ``opentelemetry-api``. Until the application installs an
SDK every call is a no-op, and instruments created before the SDK is set up
start recording once it is. Attributes stay low-cardinality: strategy names,
outcomes, ``error.type``, breaker states and give-up reasons. Rate-limit keys
are recorded only with ``record_keys=True``.

See ``docs/observability.md`` for every instrument, its unit and attributes.
"""

from __future__ import annotations

try:
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "resilio.otel needs the opentelemetry-api package: "
        "install it with pip install 'resilio[otel]'"
    ) from exc

import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, ParamSpec, TypeVar

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ._breaker import CircuitState
from ._context import current_attempt
from ._events import Event, EventKind, add_listener, remove_listener
from ._strategy import Strategy

__all__ = [
    "ATTEMPT_DURATION",
    "BREAKER_STATE",
    "DURATION_BUCKETS",
    "EVENTS",
    "LIMITER_REQUESTS",
    "LIMITER_WAIT_DURATION",
    "PIPELINE_DURATION",
    "SCOPE",
    "Instrumentation",
    "instrument",
    "trace_attempts",
]

P = ParamSpec("P")
T = TypeVar("T")

#: The meter and tracer name (the instrumentation scope).
SCOPE: Final = "resilio"
#: Counter ``{event}``: every event resilio emits except ATTEMPT and CALL.
EVENTS: Final = "resilio.events"
#: Histogram ``s``: each attempt of a retry policy.
ATTEMPT_DURATION: Final = "resilio.attempt.duration"
#: Histogram ``s``: each call through a retry policy, attempts and waits included.
PIPELINE_DURATION: Final = "resilio.pipeline.duration"
#: Observable gauge ``{state}``: 1 for each breaker's current state, 0 for the others.
BREAKER_STATE: Final = "resilio.circuit_breaker.state"
#: Counter ``{request}``: rate-limiter decisions by result.
LIMITER_REQUESTS: Final = "resilio.rate_limiter.requests"
#: Histogram ``s``: how long admitted requests waited in a rate limiter's line.
LIMITER_WAIT_DURATION: Final = "resilio.rate_limiter.wait.duration"

#: Histogram bucket boundaries in seconds, from 1 ms to a minute, given as advice to
#: the SDK: its default boundaries suit milliseconds and would put almost every
#: duration resilio records in the first bucket.
DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)

_LIMITER_RESULTS: Final = {
    EventKind.LIMITER_ALLOWED: "allowed",
    EventKind.LIMITER_WAITED: "waited",
    EventKind.LIMITER_REJECTED: "rejected",
}
# Events that become span events on the current span: decisions a reader of a
# trace wants to see next to the call they changed. Routine per-call events
# (admitted, counted) stay out of traces.
_SPAN_EVENTS: Final = frozenset(
    {
        EventKind.RETRY,
        EventKind.GAVE_UP,
        EventKind.TIMEOUT,
        EventKind.BREAKER_REJECTED,
        EventKind.BREAKER_STATE_CHANGED,
        EventKind.LIMITER_REJECTED,
        EventKind.LIMITER_WAITED,
        EventKind.BULKHEAD_REJECTED,
        EventKind.FALLBACK,
        EventKind.HEDGE,
        EventKind.CHAOS_FAULT,
        EventKind.CHAOS_LATENCY,
        EventKind.CHAOS_OUTCOME,
    }
)
_BREAKER_KINDS: Final = frozenset(
    {
        EventKind.BREAKER_SUCCESS,
        EventKind.BREAKER_FAILURE,
        EventKind.BREAKER_IGNORED,
        EventKind.BREAKER_REJECTED,
        EventKind.BREAKER_STATE_CHANGED,
    }
)


def _value(state: object) -> str:
    """Return an enum member's value, or ``str(state)``."""
    value = getattr(state, "value", state)
    return value if isinstance(value, str) else str(value)


def _error_type(event: Event) -> str | None:
    outcome = event.outcome
    if outcome is None or outcome.exception is None:
        return None
    return type(outcome.exception).__qualname__


class Instrumentation:
    """The listener `instrument` registers: resilio events in, OpenTelemetry out.

    Build it with `instrument`, which also registers it; `uninstrument`
    unregisters it. The object itself is a listener, so it may also be passed
    to one policy's ``listeners=`` (then only ``ATTEMPT`` and ``CALL``, which
    go to process-wide timing listeners, are missing).

    Args:
        meter_provider: Where the instruments come from; None for the global
            provider.
        tracer_provider: Where `trace_attempts` gets its tracer; None for the
            global provider. Span events go to whatever span is current.
        record_keys: Add the rate-limit key (``resilio.rate_limiter.key``) to
            limiter measurements and span events. Keys often name users or
            addresses: every distinct key becomes a separate time series.
    """

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        record_keys: bool = False,
    ) -> None:
        from . import __version__

        self.meter_provider = meter_provider
        self.tracer_provider = tracer_provider
        self.record_keys = bool(record_keys)
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self._events = meter.create_counter(
            EVENTS, unit="{event}", description="Decisions resilio made, by kind."
        )
        self._attempts = meter.create_histogram(
            ATTEMPT_DURATION,
            unit="s",
            description="Duration of each attempt made by a retry policy, in seconds.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._calls = meter.create_histogram(
            PIPELINE_DURATION,
            unit="s",
            description=(
                "Duration of each call through a retry policy, from the start of the first "
                "attempt to the final outcome, waits included, in seconds."
            ),
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._limiter_requests = meter.create_counter(
            LIMITER_REQUESTS,
            unit="{request}",
            description="Rate-limiter decisions: allowed at once, allowed after a wait, rejected.",
        )
        self._limiter_waits = meter.create_histogram(
            LIMITER_WAIT_DURATION,
            unit="s",
            description="Time admitted requests waited in a rate limiter's line, in seconds.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # Breaker name -> state value, learned from breaker events.
        self._breakers: dict[str, str] = {}
        self._breaker_lock = threading.Lock()
        meter.create_observable_gauge(
            BREAKER_STATE,
            callbacks=[self._observe_breakers],
            unit="{state}",
            description="1 for the state each circuit breaker is in, 0 for the other states.",
        )
        self._registered = False

    def __repr__(self) -> str:
        state = "registered" if self._registered else "not registered"
        return f"<resilio.otel.Instrumentation {state}, record_keys={self.record_keys}>"

    @property
    def registered(self) -> bool:
        """Whether this instrumentation is hearing process-wide events."""
        return self._registered

    def uninstrument(self) -> None:
        """Stop listening; instruments stay, and record nothing more. Safe to call twice."""
        global _active
        with _lock:
            if self._registered:
                remove_listener(self)
                self._registered = False
            if _active is self:
                _active = None

    # -- the listener --------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Record ``event``: a resilio `Listener`."""
        kind = event.kind
        attributes: dict[str, AttributeValue] = {"resilio.strategy.name": event.source}
        if event.pipeline is not None:
            attributes["resilio.pipeline.name"] = event.pipeline
        error_type = _error_type(event)
        if error_type is not None:
            attributes["error.type"] = error_type
        if kind is EventKind.ATTEMPT:
            attributes["resilio.attempt.handled"] = bool(event.handled)
            self._attempts.record(event.duration or 0.0, attributes)
            return
        if kind is EventKind.CALL:
            failed = error_type is not None or bool(event.handled)
            attributes["resilio.outcome"] = "failure" if failed else "success"
            self._calls.record(event.duration or 0.0, attributes)
            return
        if kind in _BREAKER_KINDS and event.state is not None:
            with self._breaker_lock:
                self._breakers[event.source] = _value(event.state)
            attributes["resilio.circuit_breaker.state"] = _value(event.state)
        elif kind is EventKind.GAVE_UP and event.reason is not None:
            attributes["resilio.retry.give_up_reason"] = _value(event.reason)
        result = _LIMITER_RESULTS.get(kind)
        if result is not None:
            limiter: dict[str, AttributeValue] = {"resilio.strategy.name": event.source}
            if self.record_keys and event.key is not None:
                limiter["resilio.rate_limiter.key"] = event.key
                attributes["resilio.rate_limiter.key"] = event.key
            self._limiter_requests.add(1, {**limiter, "resilio.rate_limiter.result": result})
            if kind is EventKind.LIMITER_WAITED:
                self._limiter_waits.record(event.delay or 0.0, limiter)
        self._events.add(1, {**attributes, "resilio.event.name": kind.value})
        if kind in _SPAN_EVENTS:
            self._add_span_event(event, attributes)

    def _add_span_event(self, event: Event, attributes: dict[str, AttributeValue]) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        if event.attempt is not None:
            attributes["resilio.attempt"] = event.attempt
        if event.delay is not None:
            attributes["resilio.delay"] = event.delay
        if event.timeout is not None:
            attributes["resilio.timeout"] = event.timeout
        if event.previous_state is not None:
            attributes["resilio.circuit_breaker.previous_state"] = _value(event.previous_state)
        span.add_event(f"resilio.{event.kind.value}", attributes)

    def _observe_breakers(self, options: CallbackOptions) -> Iterator[Observation]:
        with self._breaker_lock:
            known = list(self._breakers.items())
        for name, current in known:
            for state in CircuitState:
                attributes = {"resilio.strategy.name": name, BREAKER_STATE: state.value}
                yield Observation(1 if state.value == current else 0, attributes)


# Guards `_active`; re-entrant because `instrument` unregisters the old one while holding it.
_lock = threading.RLock()
_active: Instrumentation | None = None


def instrument(
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    *,
    record_keys: bool = False,
) -> Instrumentation:
    """Record what resilio decides, in this whole process, with OpenTelemetry.

    Registers an `Instrumentation` as a process-wide timing listener (see
    `resilio.add_listener`). Calling it again with the same arguments returns
    the instrumentation already registered; with other arguments, the old
    one is unregistered and a new one takes its place.

    Args:
        meter_provider: The meter provider; None for the global one.
        tracer_provider: The tracer provider for `trace_attempts` spans;
            None for the global one.
        record_keys: Put rate-limit keys in limiter attributes (high
            cardinality: off by default).

    Returns:
        The registered `Instrumentation`; call ``.uninstrument()`` to stop.
    """
    global _active
    with _lock:
        current = _active
        if current is not None:
            if (
                current.meter_provider is meter_provider
                and current.tracer_provider is tracer_provider
                and current.record_keys == bool(record_keys)
            ):
                return current
            current.uninstrument()
        made = Instrumentation(meter_provider, tracer_provider, record_keys=record_keys)
        add_listener(made, timings=True)
        made._registered = True
        _active = made
    return made


# -- attempt spans -------------------------------------------------------------


class _TracedAttempts(Strategy):
    """A strategy that runs each call it wraps in a span of its own (see `trace_attempts`)."""

    __slots__ = ("_tracer", "_tracer_provider", "name")

    def __init__(self, name: str, tracer_provider: trace.TracerProvider | None) -> None:
        self.name = name
        self._tracer_provider = tracer_provider
        self._tracer: trace.Tracer | None = None

    def __repr__(self) -> str:
        return f"trace_attempts(name={self.name!r})"

    def _get_tracer(self) -> trace.Tracer:
        # Resolved at the first call, so an SDK set up after decoration is used.
        if self._tracer is None:
            from . import __version__

            provider = self._tracer_provider
            if provider is None and _active is not None:
                provider = _active.tracer_provider
            self._tracer = trace.get_tracer(SCOPE, __version__, provider)
        return self._tracer

    def _start(self, args: tuple[Any, ...]) -> tuple[str, SpanKind, dict[str, AttributeValue]]:
        attempt = current_attempt()
        attributes: dict[str, AttributeValue] = {"resilio.attempt": attempt or 1}
        request = args[0] if args else None
        method = getattr(request, "method", None)
        url = getattr(request, "url", None)
        if not isinstance(method, str) or url is None or not hasattr(request, "extensions"):
            return self.name, SpanKind.INTERNAL, attributes
        # An httpx request: an HTTP client span, one per physical send.
        attributes["http.request.method"] = method
        attributes["url.full"] = str(url)
        host = getattr(url, "host", None)
        if host:
            attributes["server.address"] = host
        port = getattr(url, "port", None)
        if isinstance(port, int):
            attributes["server.port"] = port
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        return method, SpanKind.CLIENT, attributes

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        def traced(*args: P.args, **kwargs: P.kwargs) -> T:
            name, kind, attributes = self._start(args)
            with self._get_tracer().start_as_current_span(
                name, kind=kind, attributes=attributes, record_exception=True
            ) as span:
                result = fn(*args, **kwargs)
                _finish(span, kind, result)
                return result

        return traced

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        async def traced(*args: P.args, **kwargs: P.kwargs) -> T:
            name, kind, attributes = self._start(args)
            with self._get_tracer().start_as_current_span(
                name, kind=kind, attributes=attributes, record_exception=True
            ) as span:
                result = await fn(*args, **kwargs)
                _finish(span, kind, result)
                return result

        return traced


def _finish(span: trace.Span, kind: SpanKind, result: object) -> None:
    """Mark an HTTP client span with the response status (4xx and 5xx are errors)."""
    status = getattr(result, "status_code", None)
    if kind is SpanKind.CLIENT and isinstance(status, int):
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))


def trace_attempts(
    *, name: str = "resilio.attempt", tracer_provider: trace.TracerProvider | None = None
) -> Strategy:
    """A strategy that runs every call it wraps in its own span; innermost, one per attempt.

    Put it last in a `resilio.Pipeline` (innermost) and every attempt of the
    retry outside it gets a span, a child of the caller's span, with the
    attempt number in ``resilio.attempt``. When the wrapped function's first
    argument is an httpx request (as in `resilio.httpx.ResilientTransport`),
    the span is an HTTP CLIENT span named after the method, with
    ``http.request.method``, ``url.full``, ``server.address``,
    ``server.port``, ``http.response.status_code`` and, on a resend,
    ``http.request.resend_count``: resilio owns these spans, so it can set
    what OpenTelemetry's HTTP conventions ask of each resent request. Do not
    also enable the httpx instrumentation for the same client, or each send
    gets two CLIENT spans.

    Example:
        ```python
        from resilio.httpx import ResilientTransport, standard_pipeline

        pipeline = resilio.Pipeline(standard_pipeline(), resilio.otel.trace_attempts())
        client = httpx.Client(transport=ResilientTransport(pipeline=pipeline))
        ```

    Args:
        name: The span name for calls that are not HTTP requests.
        tracer_provider: Where the tracer comes from; default the one given
            to `instrument`, else the global provider.
    """
    return _TracedAttempts(name, tracer_provider)
