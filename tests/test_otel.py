"""resilio.otel against the OpenTelemetry SDK's in-memory reader and exporter."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import resilio
import resilio.httpx
import resilio.otel
from resilio import Event, EventKind, TokenBucket, _events
from resilio.httpx import ResilientTransport
from resilio.testing import FakeClock


@dataclass
class Telemetry:
    instrumentation: resilio.otel.Instrumentation
    reader: InMemoryMetricReader
    spans: InMemorySpanExporter
    tracer_provider: TracerProvider

    def metrics(self) -> dict[str, Any]:
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "resilio"
                assert scope.scope.version == resilio.__version__
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)

    def count(self, name: str, **attributes: object) -> float:
        """Sum of counter points (or histogram counts) whose attributes include ``attributes``."""
        total = 0.0
        for point in self.points(name):
            wanted = {key.replace("__", "."): value for key, value in attributes.items()}
            if all(point.attributes.get(k) == v for k, v in wanted.items()):
                amount: Any = getattr(point, "value", None)
                total += getattr(point, "count", 0) if amount is None else amount
        return total


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    instrumentation = resilio.otel.instrument(
        MeterProvider(metric_readers=[reader]), tracer_provider
    )
    try:
        yield Telemetry(instrumentation, reader, spans, tracer_provider)
    finally:
        instrumentation.uninstrument()
    assert _events.global_listeners == ()
    assert _events.timing_listeners == ()


def flaky(clock: FakeClock, failures: int, cost: float = 0.25) -> Any:
    calls = [0]

    def call() -> str:
        calls[0] += 1
        clock.advance(cost)
        if calls[0] <= failures:
            raise ConnectionError("down")
        return "ok"

    return call


def retry(clock: FakeClock, attempts: int = 3) -> resilio.Retry:
    return resilio.retry(
        on=ConnectionError,
        attempts=attempts,
        backoff=resilio.backoff.constant(0.5),
        clock=clock,
        name="fetch",
    )


def test_retries_count_as_events_and_every_attempt_is_measured(telemetry: Telemetry) -> None:
    clock = FakeClock()
    assert retry(clock)(flaky(clock, failures=2))() == "ok"

    events = telemetry.metrics()[resilio.otel.EVENTS]
    assert events.unit == "{event}"
    assert (
        telemetry.count(
            resilio.otel.EVENTS,
            resilio__event__name="retry",
            resilio__strategy__name="fetch",
            error__type="ConnectionError",
        )
        == 2
    )

    attempts = telemetry.metrics()[resilio.otel.ATTEMPT_DURATION]
    assert attempts.unit == "s"
    handled = [p for p in attempts.data.data_points if p.attributes["resilio.attempt.handled"]]
    clean = [p for p in attempts.data.data_points if not p.attributes["resilio.attempt.handled"]]
    assert (handled[0].count, handled[0].sum) == (2, 0.5)
    assert handled[0].attributes["error.type"] == "ConnectionError"
    assert (clean[0].count, clean[0].sum) == (1, 0.25)
    assert "error.type" not in clean[0].attributes
    assert tuple(handled[0].explicit_bounds) == resilio.otel.DURATION_BUCKETS

    (call,) = telemetry.points(resilio.otel.PIPELINE_DURATION)
    assert call.count == 1
    assert call.sum == pytest.approx(1.75)
    assert dict(call.attributes) == {"resilio.strategy.name": "fetch", "resilio.outcome": "success"}


def test_a_give_up_is_a_failed_call_with_its_reason(telemetry: Telemetry) -> None:
    clock = FakeClock()
    with pytest.raises(ConnectionError):
        retry(clock, attempts=2)(flaky(clock, failures=9))()
    assert (
        telemetry.count(
            resilio.otel.EVENTS,
            resilio__event__name="gave_up",
            resilio__retry__give_up_reason="attempts",
        )
        == 1
    )
    (call,) = telemetry.points(resilio.otel.PIPELINE_DURATION)
    assert call.attributes["resilio.outcome"] == "failure"
    assert call.attributes["error.type"] == "ConnectionError"


def test_breaker_state_is_a_gauge_and_transitions_are_events(telemetry: Telemetry) -> None:
    clock = FakeClock()
    breaker = resilio.CircuitBreaker(name="payments", failure_threshold=1, clock=clock)
    down = breaker(flaky(clock, failures=9))
    with pytest.raises(ConnectionError):
        down()
    with pytest.raises(resilio.CircuitOpenError):
        down()

    gauge = {
        p.attributes[resilio.otel.BREAKER_STATE]: p.value
        for p in telemetry.points(resilio.otel.BREAKER_STATE)
        if p.attributes["resilio.strategy.name"] == "payments"
    }
    assert gauge == {"closed": 0, "open": 1, "half_open": 0, "isolated": 0}
    assert (
        telemetry.count(
            resilio.otel.EVENTS,
            resilio__event__name="breaker_state_changed",
            resilio__circuit_breaker__state="open",
        )
        == 1
    )
    assert telemetry.count(resilio.otel.EVENTS, resilio__event__name="breaker_rejected") == 1

    breaker.reset()
    gauge = {
        p.attributes[resilio.otel.BREAKER_STATE]: p.value
        for p in telemetry.points(resilio.otel.BREAKER_STATE)
    }
    assert gauge["closed"] == 1
    assert gauge["open"] == 0


def test_limiter_decisions_and_waits(telemetry: Telemetry) -> None:
    clock = FakeClock()
    limiter = TokenBucket(rate=1, per=1.0, capacity=1, name="api", clock=clock)
    assert limiter.try_acquire("user:42").allowed
    assert not limiter.try_acquire("user:42").allowed
    # A wait: the fake clock's sleep advances time.
    limiter.acquire("user:42", timeout=5.0)

    requests = telemetry.metrics()[resilio.otel.LIMITER_REQUESTS]
    assert requests.unit == "{request}"
    results = {
        result: telemetry.count(resilio.otel.LIMITER_REQUESTS, resilio__rate_limiter__result=result)
        for result in ("allowed", "rejected", "waited")
    }
    assert results == {"allowed": 1, "rejected": 1, "waited": 1}
    (wait,) = telemetry.points(resilio.otel.LIMITER_WAIT_DURATION)
    assert wait.count == 1
    assert wait.sum == pytest.approx(1.0, abs=1e-3)
    # Keys stay out of metrics unless asked for.
    for metric in telemetry.metrics().values():
        for point in metric.data.data_points:
            assert "user:42" not in point.attributes.values()
            assert "resilio.rate_limiter.key" not in point.attributes


def test_record_keys_puts_limiter_keys_in_attributes() -> None:
    reader = InMemoryMetricReader()
    instrumentation = resilio.otel.Instrumentation(
        MeterProvider(metric_readers=[reader]), record_keys=True
    )
    instrumentation(Event(EventKind.LIMITER_REJECTED, "api", 0.0, delay=1.0, key="user:7"))
    instrumentation(Event(EventKind.LIMITER_REJECTED, "api", 0.0, delay=1.0))
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    keys = sorted(
        str((p.attributes or {}).get("resilio.rate_limiter.key"))
        for p in metrics[resilio.otel.LIMITER_REQUESTS].data.data_points
    )
    assert keys == ["None", "user:7"]
    assert not instrumentation.registered


def test_a_real_limiter_reports_its_key_only_when_asked() -> None:
    clock = FakeClock()
    limiter = TokenBucket(rate=1, capacity=1, clock=clock, name="api")
    for record_keys in (False, True):
        reader = InMemoryMetricReader()
        instrumentation = resilio.otel.instrument(
            MeterProvider(metric_readers=[reader]), record_keys=record_keys
        )
        try:
            limiter.reset("user:9")
            assert limiter.try_acquire("user:9").allowed
            assert not limiter.try_acquire("user:9").allowed
        finally:
            instrumentation.uninstrument()
        data = reader.get_metrics_data()
        assert data is not None
        metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
        keys = {
            (p.attributes or {}).get("resilio.rate_limiter.key")
            for p in metrics[resilio.otel.LIMITER_REQUESTS].data.data_points
        }
        assert keys == ({"user:9"} if record_keys else {None})


def test_retries_and_rejections_are_span_events_on_the_current_span(
    telemetry: Telemetry,
) -> None:
    clock = FakeClock()
    breaker = resilio.CircuitBreaker(name="db", failure_threshold=1, clock=clock)
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler"):
        assert retry(clock)(flaky(clock, failures=1))() == "ok"
        with pytest.raises(ConnectionError):
            breaker(flaky(clock, failures=9))()
        with pytest.raises(resilio.CircuitOpenError):
            breaker(lambda: None)()
    (span,) = telemetry.spans.get_finished_spans()
    names = [event.name for event in span.events]
    assert names == ["resilio.retry", "resilio.breaker_state_changed", "resilio.breaker_rejected"]
    retry_event = span.events[0]
    assert retry_event.attributes is not None
    assert retry_event.attributes["resilio.attempt"] == 1
    assert retry_event.attributes["resilio.delay"] == 0.5
    assert retry_event.attributes["error.type"] == "ConnectionError"
    opened = span.events[1].attributes
    assert opened is not None
    assert opened["resilio.circuit_breaker.state"] == "open"
    assert opened["resilio.circuit_breaker.previous_state"] == "closed"


def test_no_span_events_without_a_recording_span(telemetry: Telemetry) -> None:
    clock = FakeClock()
    assert retry(clock)(flaky(clock, failures=1))() == "ok"
    assert telemetry.spans.get_finished_spans() == ()
    assert telemetry.count(resilio.otel.EVENTS, resilio__event__name="retry") == 1


def test_instrument_is_idempotent_and_uninstrument_stops_recording(telemetry: Telemetry) -> None:
    same = resilio.otel.instrument(
        telemetry.instrumentation.meter_provider, telemetry.instrumentation.tracer_provider
    )
    assert same is telemetry.instrumentation
    assert _events.global_listeners == (same,)
    assert _events.timing_listeners == (same,)
    assert same.registered
    assert "registered" in repr(same)

    same.uninstrument()
    same.uninstrument()
    assert not telemetry.instrumentation.registered
    clock = FakeClock()
    retry(clock)(flaky(clock, failures=1))()
    assert telemetry.points(resilio.otel.EVENTS) == []
    assert telemetry.points(resilio.otel.PIPELINE_DURATION) == []


def test_instrument_with_other_options_replaces_the_registered_one(telemetry: Telemetry) -> None:
    other = resilio.otel.instrument(telemetry.instrumentation.meter_provider, record_keys=True)
    try:
        assert other is not telemetry.instrumentation
        assert not telemetry.instrumentation.registered
        assert _events.global_listeners == (other,)
        assert other.record_keys
    finally:
        other.uninstrument()


def test_global_providers_are_a_no_op_until_an_sdk_is_installed() -> None:
    instrumentation = resilio.otel.instrument()
    try:
        assert instrumentation.meter_provider is None
        clock = FakeClock()
        assert retry(clock)(flaky(clock, failures=1))() == "ok"
        assert _events.timing_listeners == (instrumentation,)
    finally:
        instrumentation.uninstrument()
    assert len(_events.timing_listeners) == 0


def http_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def test_trace_attempts_gives_each_http_send_a_span_with_its_resend_count(
    telemetry: Telemetry,
) -> None:
    statuses = iter([503, 503, 200])
    mock = httpx.MockTransport(lambda request: httpx.Response(next(statuses)))
    pipeline = resilio.Pipeline(
        resilio.httpx.http_retry(attempts=3, backoff=resilio.backoff.none()),
        resilio.otel.trace_attempts(),
    )
    tracer = telemetry.tracer_provider.get_tracer("app")
    transport = ResilientTransport(mock, pipeline=pipeline)
    with httpx.Client(transport=transport) as client, tracer.start_as_current_span("h") as parent:
        assert client.get("http://api.example:8080/items").status_code == 200
    spans = http_spans(telemetry.spans)
    assert [s.name for s in spans] == ["GET", "GET", "GET"]
    attributes = [s.attributes or {} for s in spans]
    assert [a.get("http.request.resend_count") for a in attributes] == [None, 1, 2]
    assert [a["resilio.attempt"] for a in attributes] == [1, 2, 3]
    assert [a["http.response.status_code"] for a in attributes] == [503, 503, 200]
    assert attributes[0]["url.full"] == "http://api.example:8080/items"
    assert attributes[0]["server.address"] == "api.example"
    assert attributes[0]["server.port"] == 8080
    assert attributes[0]["error.type"] == "503"
    assert [s.status.status_code for s in spans] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    parent_id = parent.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == parent_id for s in spans)


@pytest.mark.anyio
async def test_trace_attempts_on_plain_async_functions(telemetry: Telemetry) -> None:
    clock = FakeClock()
    calls = [0]

    async def work() -> int:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("first")
        return 7

    traced = resilio.Pipeline(
        retry(clock), resilio.otel.trace_attempts(tracer_provider=telemetry.tracer_provider)
    )
    assert await traced(work)() == 7
    spans = telemetry.spans.get_finished_spans()
    assert [(s.name, s.kind) for s in spans] == [
        ("resilio.attempt", SpanKind.INTERNAL),
        ("resilio.attempt", SpanKind.INTERNAL),
    ]
    assert spans[0].status.status_code is StatusCode.ERROR
    assert [e.name for e in spans[0].events] == ["exception"]
    assert [(s.attributes or {}).get("resilio.attempt") for s in spans] == [1, 2]
    assert "trace_attempts" in repr(resilio.otel.trace_attempts())


def test_without_opentelemetry_the_import_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "resilio.otel")
    with pytest.raises(ImportError, match=r"resilio\[otel\]"):
        importlib.import_module("resilio.otel")


# -- the example configurations in docs/ use names resilio really exports ----------------

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples" / "k8s"


def prometheus_vocabulary() -> tuple[set[str], set[str]]:
    """Return the Prometheus metric and label names of every instrument, from real data."""
    reader = InMemoryMetricReader()
    instrumentation = resilio.otel.Instrumentation(
        MeterProvider(metric_readers=[reader]), record_keys=True
    )
    failure: resilio.Outcome[None] = resilio.Outcome(exception=ConnectionError("down"))
    for event in (
        Event(EventKind.ATTEMPT, "p", 0.0, 1, outcome=failure, duration=0.1, handled=True),
        Event(EventKind.CALL, "p", 0.0, 1, outcome=failure, duration=0.1, handled=True),
        Event(EventKind.GAVE_UP, "p", 0.0, 1, outcome=failure, reason=resilio.GiveUpReason.BUDGET),
        Event(EventKind.BREAKER_STATE_CHANGED, "b", 0.0, state=resilio.CircuitState.OPEN),
        Event(EventKind.LIMITER_WAITED, "l", 0.0, delay=0.1, key="k"),
    ):
        instrumentation(event)
    data = reader.get_metrics_data()
    assert data is not None
    metrics: set[str] = set()
    labels: set[str] = set()
    for metric in data.resource_metrics[0].scope_metrics[0].metrics:
        base = metric.name.replace(".", "_") + ("_seconds" if metric.unit == "s" else "")
        if isinstance(metric.data, Histogram):
            metrics |= {base, f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        elif isinstance(metric.data, Sum) and metric.data.is_monotonic:
            metrics.add(f"{base}_total")
        else:
            metrics.add(base)
        for point in metric.data.data_points:
            labels |= {key.replace(".", "_") for key in point.attributes or {}}
    return metrics, labels


@pytest.mark.parametrize(
    "name", ["prometheus-rules.yaml", "keda-scaledobject.yaml", "hpa-prometheus-adapter.yaml"]
)
def test_example_configurations_use_real_metric_and_label_names(name: str) -> None:
    path = EXAMPLES / name
    metrics, labels = prometheus_vocabulary()
    assert "resilio_rate_limiter_requests_total" in metrics
    assert "resilio_pipeline_duration_seconds_bucket" in metrics
    text = path.read_text()
    # Names the file itself defines (prometheus-adapter aliases) are not resilio's.
    aliases = set(re.findall(r'as: "(resilio_[a-z_]+)"', text))
    used = set(re.findall(r"\bresilio_[a-z_]+\b", text)) - aliases
    assert len(used) >= 2, f"{name} uses no resilio metric"
    assert used <= metrics | labels, used - metrics - labels
    events = {kind.value for kind in EventKind}
    for value in re.findall(r'resilio_event_name="([a-z_]+)"', text):
        assert value in events, value
    for value in re.findall(r'resilio_rate_limiter_result="([a-z_]+)"', text):
        assert value in {"allowed", "waited", "rejected"}, value
    states = {state.value for state in resilio.CircuitState}
    for pattern in re.findall(r'resilio_circuit_breaker_state=~?"([a-z_|]+)"', text):
        assert set(pattern.split("|")) <= states, pattern


def test_named_pipelines_label_metrics_and_get_a_duration() -> None:
    reader = InMemoryMetricReader()
    instrumentation = resilio.otel.instrument(MeterProvider(metric_readers=[reader]))
    clock = FakeClock()
    policy = resilio.Pipeline(
        resilio.retry(on=KeyError, attempts=2, backoff=resilio.backoff.none(), clock=clock),
        name="checkout",
    )
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("once")
        return "ok"

    try:
        assert policy(flaky)() == "ok"
    finally:
        instrumentation.uninstrument()
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    retry_points = [
        p
        for p in metrics[resilio.otel.EVENTS].data.data_points
        if (p.attributes or {}).get("resilio.event.name") == "retry"
    ]
    assert [(p.attributes or {}).get("resilio.pipeline.name") for p in retry_points] == ["checkout"]
    durations = {
        (p.attributes or {}).get("resilio.strategy.name")
        for p in metrics[resilio.otel.PIPELINE_DURATION].data.data_points
    }
    assert "checkout" in durations  # the pipeline's own CALL, beside the retry's
