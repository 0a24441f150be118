"""The chaos httpx transports: connect errors, timeouts, latency, 5xx answers and cut bodies."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

import resilio
from resilio import chaos
from resilio.testing import FakeClock, capture_events

BODY = b"0123456789" * 10


def upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=BODY)


def client(**options: Any) -> httpx.Client:
    transport = chaos.ChaosTransport(httpx.MockTransport(upstream), **options)
    return httpx.Client(transport=transport, base_url="http://service")


def async_client(**options: Any) -> httpx.AsyncClient:
    transport = chaos.AsyncChaosTransport(httpx.MockTransport(upstream), **options)
    return httpx.AsyncClient(transport=transport, base_url="http://service")


def outcome_of(http: httpx.Client) -> str:
    try:
        response = http.get("/")
    except httpx.ConnectError:
        return "connect"
    except httpx.ReadTimeout:
        return "timeout"
    except httpx.RemoteProtocolError:
        return "dropped"
    return str(response.status_code)


def test_no_rates_no_faults() -> None:
    with client() as http:
        response = http.get("/")
    assert response.status_code == 200
    assert response.content == BODY


def test_connect_errors_send_nothing() -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    transport = chaos.ChaosTransport(httpx.MockTransport(record), connect_error_rate=1.0)
    with (
        capture_events() as events,
        httpx.Client(transport=transport) as http,
        pytest.raises(httpx.ConnectError, match="injected") as caught,
    ):
        http.get("http://service/")
    assert sent == []
    assert caught.value.request.url == "http://service/"
    assert [e.kind for e in events] == [resilio.EventKind.CHAOS_FAULT]


def test_timeouts_wait_the_request_timeout_on_the_clock(fake_clock: FakeClock) -> None:
    with client(timeout_rate=1.0) as http, pytest.raises(httpx.ReadTimeout):
        http.get("/", timeout=httpx.Timeout(5.0, read=2.5))
    assert fake_clock.sleeps == [2.5]
    with client(timeout_rate=1.0, timeout_after=0.75) as http, pytest.raises(httpx.ReadTimeout):
        http.get("/")
    assert fake_clock.sleeps == [2.5, 0.75]


def test_latency_delays_then_sends(fake_clock: FakeClock) -> None:
    with client(latency_rate=1.0, latency=0.3) as http:
        response = http.get("/")
    assert response.content == BODY
    assert fake_clock.sleeps == [0.3]


def test_status_answers_carry_headers() -> None:
    with client(status_rate=1.0, status_code=503, status_headers={"Retry-After": "2"}) as http:
        response = http.get("/")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert b"injected" in response.content


def test_dropped_bodies_fail_while_reading() -> None:
    with client(drop_rate=1.0) as http, http.stream("GET", "/") as response:
        assert response.status_code == 200
        received = bytearray()

        def read_all() -> None:
            for chunk in response.iter_bytes():
                received.extend(chunk)

        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            read_all()
    assert 0 < len(received) < len(BODY)
    assert BODY.startswith(bytes(received))


def test_mixed_rates_roughly_honoured_and_repeatable() -> None:
    options = {
        "connect_error_rate": 0.1,
        "timeout_rate": 0.1,
        "timeout_after": 0.0,
        "status_rate": 0.1,
        "drop_rate": 0.1,
        "seed": 11,
    }

    def run() -> list[str]:
        with client(**options) as http:
            return [outcome_of(http) for _ in range(1000)]

    first = run()
    assert first == run()
    counts = Counter(first)
    assert set(counts) == {"connect", "timeout", "503", "dropped", "200"}
    assert 0.55 < counts["200"] / 1000 < 0.75  # about 0.9 * 0.9 * 0.9 * 0.9


def test_enabled_sees_the_request() -> None:
    def only_payments(context: chaos.ChaosContext) -> bool:
        return isinstance(context.request, httpx.Request) and context.request.url.path == "/pay"

    with client(connect_error_rate=1.0, enabled=only_payments) as http:
        assert http.get("/search").status_code == 200
        with pytest.raises(httpx.ConnectError):
            http.get("/pay")


def test_global_switch_turns_the_transport_off() -> None:
    with client(connect_error_rate=1.0) as http, chaos.disabled():
        assert http.get("/").status_code == 200


def test_transport_options_are_validated() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        chaos.ChaosTransport(connect_error_rate=2.0)
    with pytest.raises(ValueError, match="HTTP status"):
        chaos.ChaosTransport(status_code=42)
    with pytest.raises(TypeError, match="BaseTransport"):
        chaos.ChaosTransport(httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncBaseTransport"):
        chaos.AsyncChaosTransport(httpx.HTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        chaos.ChaosTransport(clock=object())  # type: ignore[arg-type]


def test_resilio_retry_rides_out_the_faults() -> None:
    def retryable(outcome: resilio.Outcome[Any]) -> bool:
        exc = outcome.exception
        if exc is not None:
            return isinstance(exc, httpx.TransportError)
        assert isinstance(outcome.result, httpx.Response)
        return outcome.result.status_code >= 500

    policy = resilio.retry(on=retryable, attempts=8, backoff=resilio.backoff.constant(0))
    with client(connect_error_rate=0.2, status_rate=0.2, drop_rate=0.1, seed=3) as http:

        @policy
        def fetch() -> httpx.Response:
            response = http.get("/")
            response.read()
            return response

        assert all(fetch().content == BODY for _ in range(50))


# -- async ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_transport_injects_every_fault(fake_clock: FakeClock) -> None:
    async with async_client(connect_error_rate=1.0) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")
    async with async_client(timeout_rate=1.0, timeout_after=1.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/")
    assert fake_clock.sleeps == [1.5]
    async with async_client(latency_rate=1.0, latency=0.2, status_rate=1.0) as http:
        assert (await http.get("/")).status_code == 503
    assert fake_clock.sleeps == [1.5, 0.2]
    async with async_client(drop_rate=1.0) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")
    async with async_client() as http:
        assert (await http.get("/")).content == BODY


@pytest.mark.anyio
async def test_async_transport_closes_what_it_wraps() -> None:
    closed: list[bool] = []

    class Inner(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200)

        async def aclose(self) -> None:
            closed.append(True)

    async with httpx.AsyncClient(transport=chaos.AsyncChaosTransport(Inner())) as http:
        assert (await http.get("http://service/")).status_code == 200
    assert closed == [True]
