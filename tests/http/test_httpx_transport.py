"""ResilientTransport against a real uvicorn server with a real httpx.Client."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator

import httpx
import pytest

import resilio
from resilio import TokenBucket
from resilio.httpx import (
    ATTEMPT_EXTENSION,
    BreakerPerAuthority,
    NotReplayableError,
    ResilientTransport,
    authority,
    http_failure,
    http_retry,
    standard_pipeline,
)
from resilio.testing import FakeClock, capture_events

from .conftest import Service

BACKOFF = 0.125  # seconds: the constant backoff of these tests, told apart from any Retry-After


class Recorder(httpx.BaseTransport):
    """A real HTTPTransport that also notes the attempt number of every request it sends."""

    def __init__(self, **options: object) -> None:
        self.inner = httpx.HTTPTransport(**options)  # type: ignore[arg-type]
        self.attempts: list[int] = []
        self.timeouts: list[dict[str, float | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(request.extensions[ATTEMPT_EXTENSION])
        self.timeouts.append(dict(request.extensions["timeout"]))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def clock() -> FakeClock:
    """Records the retry waits instead of sleeping them."""
    return FakeClock()


def client(
    service: Service,
    pipeline: resilio.Strategy,
    transport: httpx.BaseTransport | None = None,
    **kw: object,
) -> httpx.Client:
    resilient = ResilientTransport(
        transport, pipeline=pipeline, read_body=bool(kw.pop("read_body", False))
    )
    return httpx.Client(transport=resilient, base_url=service.url, **kw)  # type: ignore[arg-type]


def retrying(clock: FakeClock, **options: object) -> resilio.Pipeline:
    options.setdefault("backoff", resilio.backoff.constant(BACKOFF, jitter="none"))
    return resilio.Pipeline(http_retry(clock=clock, **options))  # type: ignore[arg-type]


# -- what is retried -------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_transient_statuses_are_retried_for_get(
    service: Service, key: str, clock: FakeClock, status: int
) -> None:
    with client(service, retrying(clock)) as http:
        response = http.get(f"/status/{key}?fail=2&status={status}")
    assert response.status_code == 200
    assert response.text == "ok 3"
    assert service.hits(key) == 3
    assert response.extensions[ATTEMPT_EXTENSION] == 3
    assert clock.sleeps == [BACKOFF, BACKOFF]


@pytest.mark.parametrize("status", [400, 404, 500, 501])
def test_other_statuses_are_returned_at_once(
    service: Service, key: str, clock: FakeClock, status: int
) -> None:
    with client(service, retrying(clock)) as http:
        response = http.get(f"/status/{key}?fail=2&status={status}")
    assert response.status_code == status
    assert service.hits(key) == 1


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"])
def test_idempotent_methods_are_retried(
    service: Service, key: str, clock: FakeClock, method: str
) -> None:
    with client(service, retrying(clock)) as http:
        response = http.request(method, f"/status/{key}?fail=1")
    assert response.status_code == 200
    assert service.hits(key) == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_unsafe_methods_are_not_retried(
    service: Service, key: str, clock: FakeClock, method: str
) -> None:
    with client(service, retrying(clock)) as http:
        response = http.request(method, f"/status/{key}?fail=1", content=b"order")
    assert response.status_code == 503
    assert service.hits(key) == 1
    assert clock.sleeps == []


def test_unsafe_method_with_idempotency_key_is_retried_when_opted_in(
    service: Service, key: str, clock: FakeClock
) -> None:
    pipeline = retrying(clock, idempotency_header="Idempotency-Key")
    with client(service, pipeline) as http:
        without = http.post(f"/status/{key}-a?fail=1", content=b"x")
        keyed = http.post(f"/status/{key}-b?fail=1", content=b"x", headers={"Idempotency-Key": key})
    assert (without.status_code, service.hits(f"{key}-a")) == (503, 1)
    assert (keyed.status_code, service.hits(f"{key}-b")) == (200, 2)
    # The body was sent again, the same.
    assert service.upstream.bodies[f"{key}-b"] == [b"x", b"x"]


def test_methods_are_configurable(service: Service, key: str, clock: FakeClock) -> None:
    with client(service, retrying(clock, methods=["post"])) as http:
        post = http.post(f"/status/{key}-p?fail=1")
        get = http.get(f"/status/{key}-g?fail=1")
    assert (post.status_code, get.status_code) == (200, 503)


def test_statuses_are_configurable(service: Service, key: str, clock: FakeClock) -> None:
    with client(service, retrying(clock, statuses=[500])) as http:
        five_hundred = http.get(f"/status/{key}-a?fail=1&status=500")
        unavailable = http.get(f"/status/{key}-b?fail=1&status=503")
    assert (five_hundred.status_code, unavailable.status_code) == (200, 503)


def test_when_attempts_run_out_the_last_response_is_returned_readable(
    service: Service, key: str, clock: FakeClock
) -> None:
    with client(service, retrying(clock, attempts=2)) as http:
        response = http.get(f"/status/{key}?fail=5")
    assert response.status_code == 503
    assert response.text == "failed"
    assert service.hits(key) == 2


def test_connect_errors_are_retried_even_for_post(closed_url: str, clock: FakeClock) -> None:
    transport = ResilientTransport(pipeline=retrying(clock))
    with (
        httpx.Client(transport=transport) as http,
        capture_events() as events,
        pytest.raises(httpx.ConnectError),
    ):
        http.post(f"{closed_url}/orders", content=b"order")
    retries = [e for e in events if e.kind is resilio.EventKind.RETRY]
    assert len(retries) == 2  # nothing was sent, so even POST is safe to repeat
    assert clock.sleeps == [BACKOFF, BACKOFF]


def test_read_timeouts_are_retried_for_get_only(
    service: Service, key: str, clock: FakeClock
) -> None:
    with client(service, retrying(clock), timeout=0.2) as http:
        response = http.get(f"/slow/{key}-g?fail=1&delay=1")
        with pytest.raises(httpx.ReadTimeout):
            http.post(f"/slow/{key}-p?fail=1&delay=1")
    assert response.text == "ok 2"
    assert service.hits(f"{key}-g") == 2
    assert service.hits(f"{key}-p") == 1


# -- Retry-After ---------------------------------------------------------------------------


def test_retry_after_seconds_replaces_the_backoff(
    service: Service, key: str, clock: FakeClock
) -> None:
    with client(service, retrying(clock)) as http:
        response = http.get(f"/status/{key}?fail=1&status=429&retry_after=7")
    assert response.status_code == 200
    assert clock.sleeps == [7.0]


def test_retry_after_http_date(service: Service, key: str, clock: FakeClock) -> None:
    date = email.utils.formatdate(time.time() + 5, usegmt=True)
    with client(service, retrying(clock)) as http:
        response = http.get(f"/status/{key}?fail=1&retry_after={date}")
    assert response.status_code == 200
    [slept] = clock.sleeps
    assert 3.0 <= slept <= 5.0  # the date has whole seconds; the request took a moment


@pytest.mark.parametrize(
    "value", ["-5", "soon", "1.5", "", "%2B3", "Fri, 99 Nop 2024 00:00:00 GMT"]
)
def test_malformed_or_negative_retry_after_falls_back_to_the_backoff(
    service: Service, key: str, clock: FakeClock, value: str
) -> None:
    with client(service, retrying(clock)) as http:
        response = http.get(f"/status/{key}?fail=1&retry_after={value}")
    assert response.status_code == 200
    assert clock.sleeps == [BACKOFF]


def test_huge_retry_after_is_capped(service: Service, key: str, clock: FakeClock) -> None:
    with client(service, retrying(clock, max_retry_after=2.5)) as http:
        response = http.get(f"/status/{key}?fail=1&retry_after=99999999999999999999999")
    assert response.status_code == 200
    assert clock.sleeps == [2.5]


def test_retry_after_beyond_the_total_timeout_gives_up_at_once(service: Service, key: str) -> None:
    pipeline = standard_pipeline(total_timeout=1.0, attempt_timeout=0.5)
    with client(service, pipeline) as http:
        started = time.monotonic()
        response = http.get(f"/status/{key}?fail=1&retry_after=3600")
    assert response.status_code == 503  # waiting 30 s (the cap) cannot fit in 1 s
    assert time.monotonic() - started < 0.5
    assert service.hits(key) == 1


def test_retry_after_can_be_ignored(service: Service, key: str, clock: FakeClock) -> None:
    with client(service, retrying(clock, respect_retry_after=False)) as http:
        http.get(f"/status/{key}?fail=1&retry_after=7")
    assert clock.sleeps == [BACKOFF]


def test_ratelimit_field_is_a_hint_and_retry_after_wins(
    service: Service, key: str, clock: FakeClock
) -> None:
    hint = '"default";r=0;t=4'
    with client(service, retrying(clock)) as http:
        http.get(f"/status/{key}-a?fail=1&status=429&ratelimit={hint}")
        http.get(f"/status/{key}-b?fail=1&status=429&ratelimit={hint}&retry_after=2")
        http.get(f'/status/{key}-c?fail=1&status=429&ratelimit="default";r=5;t=4')
    assert clock.sleeps == [4.0, 2.0, BACKOFF]


# -- connections and bodies ------------------------------------------------------------------


def test_failed_responses_are_closed_before_the_next_attempt(
    service: Service, key: str, clock: FakeClock
) -> None:
    seen: list[httpx.Response] = []

    def note(event: resilio.Event) -> None:
        assert event.outcome is not None
        seen.append(event.outcome.unwrap())

    # One connection in the pool: an unclosed failed response would hold it, and the
    # next attempt would wait for the pool until it timed out.
    pool = Recorder(limits=httpx.Limits(max_connections=1))
    limits = httpx.Timeout(2.0, pool=0.5)
    pipeline = retrying(clock, attempts=4, before_sleep=note)
    with client(service, pipeline, pool, timeout=limits) as http:
        response = http.get(f"/status/{key}?fail=3")
    assert response.text == "ok 4"
    assert len(seen) == 3
    assert all(failed.is_closed for failed in seen)


def test_control_a_retry_that_leaves_responses_open_starves_the_pool(
    service: Service, key: str
) -> None:
    # The same scenario with a plain retry that knows nothing of responses.
    plain = resilio.retry(
        on=lambda outcome: getattr(outcome.result, "status_code", 0) == 503,
        attempts=4,
        backoff=resilio.backoff.none(),
    )
    pool = Recorder(limits=httpx.Limits(max_connections=1))
    with (
        client(
            service, resilio.Pipeline(plain), pool, timeout=httpx.Timeout(2.0, pool=0.5)
        ) as http,
        pytest.raises(httpx.PoolTimeout),
    ):
        http.get(f"/status/{key}?fail=3")


def test_one_shot_body_is_never_sent_twice(service: Service, key: str, clock: FakeClock) -> None:
    def body() -> Iterator[bytes]:
        yield b"part-1;"
        yield b"part-2"

    with (
        client(service, retrying(clock)) as http,
        pytest.raises(NotReplayableError, match="one-shot stream") as caught,
    ):
        http.put(f"/status/{key}?fail=1", content=body())
    assert service.hits(key) == 1
    error = caught.value
    assert error.response is not None
    assert error.response.status_code == 503
    assert error.response.is_closed
    assert error.request.method == "PUT"


def test_one_shot_body_after_a_transport_error_chains_the_cause(
    service: Service, key: str, clock: FakeClock
) -> None:
    with (
        client(service, retrying(clock), timeout=0.2) as http,
        pytest.raises(NotReplayableError) as caught,
    ):
        http.put(f"/slow/{key}?fail=1&delay=1", content=iter([b"a", b"b"]))
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert caught.value.response is None


def test_one_shot_body_that_succeeds_is_fine(service: Service, key: str, clock: FakeClock) -> None:
    with client(service, retrying(clock)) as http:
        response = http.put(f"/echo/{key}", content=iter([b"a", b"b"]))
    assert response.text == "ab"


def test_one_shot_body_on_the_last_attempt_returns_the_response(
    service: Service, key: str, clock: FakeClock
) -> None:
    with client(service, retrying(clock, attempts=1)) as http:
        response = http.put(f"/status/{key}?fail=1", content=iter([b"a"]))
    assert response.status_code == 503  # no retry was due, so no error either


def test_connection_dropped_mid_body_surfaces_when_reading(
    service: Service, key: str, clock: FakeClock
) -> None:
    with (
        client(service, retrying(clock)) as http,
        pytest.raises(httpx.RemoteProtocolError, match=r"complete message body"),
    ):
        http.get(f"/drop/{key}?fail=1")
    assert service.hits(key) == 1  # the answer had started: the attempt was over


def test_a_stalled_body_fails_by_the_attempt_timeout_instead_of_hanging(
    service: Service, key: str
) -> None:
    """With timeout=None on the client, each read of the body waits one attempt timeout."""
    pipeline = standard_pipeline(total_timeout=5.0, attempt_timeout=0.3)
    started = time.monotonic()
    with client(service, pipeline, timeout=None) as http, pytest.raises(httpx.ReadTimeout):
        http.get(f"/stall/{key}?fail=1")
    assert time.monotonic() - started < 1.5  # the stall lasts 3 s
    assert service.hits(key) == 1  # read outside the attempt: not retried


def test_a_slow_body_that_never_stalls_is_read_whole(service: Service, key: str) -> None:
    """The read bound is per read, as httpx's: a long download is not cut short."""
    pipeline = standard_pipeline(total_timeout=0.6, attempt_timeout=0.3)
    with client(service, pipeline, timeout=None) as http:
        response = http.get(f"/trickle/{key}?fail=1&every=0.02")
    assert response.content == b"x" * 60  # 1.2 s of body, longer than total_timeout


def test_read_body_retries_a_connection_dropped_mid_body(
    service: Service, key: str, clock: FakeClock
) -> None:
    with client(service, retrying(clock), read_body=True) as http:
        response = http.get(f"/drop/{key}?fail=2")
        plain = http.get(f"/status/{key}-e")
    assert response.text == "ok 3"
    assert service.hits(key) == 3
    assert (plain.status_code, plain.text) == (200, "ok 1")


# -- timeouts and attempts ----------------------------------------------------------------------


def test_attempt_number_and_shrinking_timeouts_reach_the_transport(
    service: Service, key: str
) -> None:
    recorder = Recorder()
    pipeline = resilio.Pipeline(
        resilio.timeout(5.0),
        http_retry(backoff=resilio.backoff.constant(0.01, jitter="none")),
        resilio.timeout(0.4),
    )
    with client(service, pipeline, recorder, timeout=httpx.Timeout(3.0, connect=0.1)) as http:
        response = http.get(f"/slow/{key}?fail=1&delay=2")
    assert response.text == "ok 2"
    assert recorder.attempts == [1, 2]
    for seen in recorder.timeouts:
        assert seen["connect"] == 0.1  # already shorter than what is left
        assert 0.3 < seen["read"] <= 0.4  # type: ignore[operator]
    # The client's own timeouts are back on the request afterwards.
    assert response.request.extensions["timeout"]["read"] == 3.0


def test_timeouts_none_become_the_time_left(service: Service, key: str) -> None:
    recorder = Recorder()
    pipeline = resilio.Pipeline(resilio.timeout(0.5))
    with client(service, pipeline, recorder, timeout=None) as http:
        http.get(f"/status/{key}")
    assert all(0.4 < value <= 0.5 for value in recorder.timeouts[0].values())  # type: ignore[operator]


def test_sync_attempt_timeout_bounds_a_hanging_server(service: Service, key: str) -> None:
    pipeline = standard_pipeline(total_timeout=0.8, attempt_timeout=0.3)
    with client(service, pipeline, timeout=None) as http:
        started = time.monotonic()
        with pytest.raises(resilio.TimeoutExceeded):
            http.get(f"/slow/{key}?fail=9&delay=5")
    assert time.monotonic() - started < 1.5


# -- breakers and limiters per authority ------------------------------------------------


def test_authority_fills_in_default_ports() -> None:
    assert authority("https://example.com/a") == "https://example.com:443"
    assert authority(httpx.URL("http://Example.com:8080/b")) == "http://example.com:8080"
    assert authority(httpx.Request("GET", "http://[::1]/x")) == "http://[::1]:80"


def test_breaker_per_authority_isolates_a_failing_host(
    service: Service, other_service: Service, key: str
) -> None:
    breakers = BreakerPerAuthority(
        lambda name: resilio.CircuitBreaker(
            name=name, failure_threshold=2, recovery_time=60, on=http_failure
        )
    )
    transport = ResilientTransport(pipeline=resilio.Pipeline(breakers))
    with httpx.Client(transport=transport) as http:
        for _ in range(2):
            assert http.get(f"{service.url}/status/{key}?fail=99&status=500").status_code == 500
        with pytest.raises(resilio.CircuitOpenError):
            http.get(f"{service.url}/status/{key}")
        assert http.get(f"{other_service.url}/status/{key}").status_code == 200
    assert service.hits(key) == 2  # the rejected call never reached the server
    assert breakers.breaker(service.url).state is resilio.CircuitState.OPEN
    assert breakers.breaker(other_service.url).state is resilio.CircuitState.CLOSED
    assert set(breakers.breakers) == {authority(service.url), authority(other_service.url)}


def test_standard_breaker_counts_only_server_failures() -> None:
    def outcome(status: int) -> resilio.Outcome[httpx.Response]:
        return resilio.Outcome(httpx.Response(status))

    assert [http_failure(outcome(s)) for s in (200, 404, 408, 429, 500, 503)] == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    assert http_failure(resilio.Outcome(exception=httpx.ConnectError("no")))
    assert http_failure(resilio.Outcome(exception=resilio.TimeoutExceeded("slow", timeout=1.0)))
    assert not http_failure(resilio.Outcome(exception=httpx.UnsupportedProtocol("ftp")))
    assert not http_failure(resilio.Outcome(exception=ValueError("bug")))


def test_rate_limiter_per_authority(service: Service, other_service: Service, key: str) -> None:
    limiter = TokenBucket(rate=2, per=60.0, capacity=2)
    pipeline = standard_pipeline(limiter=limiter, limiter_timeout=0)
    with httpx.Client(transport=ResilientTransport(pipeline=pipeline)) as http:
        assert http.get(f"{service.url}/status/{key}").status_code == 200
        assert http.get(f"{service.url}/status/{key}").status_code == 200
        with pytest.raises(resilio.RateLimitExceeded):
            http.get(f"{service.url}/status/{key}")
        assert http.get(f"{other_service.url}/status/{key}").status_code == 200
    assert service.hits(key) == 2


def test_limiter_counts_every_physical_attempt(service: Service, key: str) -> None:
    limiter = TokenBucket(rate=3, per=60.0, capacity=3)
    pipeline = standard_pipeline(
        retry=http_retry(backoff=resilio.backoff.none()), limiter=limiter, limiter_timeout=0
    )
    with httpx.Client(
        transport=ResilientTransport(pipeline=pipeline), base_url=service.url
    ) as http:
        assert http.get(f"/status/{key}?fail=2").status_code == 200
    assert limiter.peek(authority(service.url)).remaining == 0


# -- the standard pipeline ----------------------------------------------------------------------


def test_standard_pipeline_shape_and_defaults() -> None:
    pipeline = standard_pipeline()
    total, retry, breakers, attempt = pipeline.strategies
    assert isinstance(total, resilio.Timeout)
    assert total.seconds == 30.0
    assert isinstance(retry, resilio.Retry)
    assert retry.attempts == 3
    assert isinstance(breakers, BreakerPerAuthority)
    assert isinstance(attempt, resilio.Timeout)
    assert attempt.seconds == 10.0
    breaker = breakers.breaker("https://example.com")
    assert breaker.config.failure_rate == 0.1
    assert breaker.config.window_duration is not None
    assert breaker.config.window_duration >= 2 * attempt.seconds
    assert breaker.config.half_open_timeout == attempt.seconds


def test_standard_breaker_window_grows_with_the_attempt_timeout() -> None:
    pipeline = standard_pipeline(total_timeout=120.0, attempt_timeout=25.0)
    breakers = pipeline.strategies[2]
    assert isinstance(breakers, BreakerPerAuthority)
    assert breakers.breaker("http://a").config.window_duration == 50.0


def test_standard_pipeline_validates() -> None:
    with pytest.raises(ValueError, match="attempt_timeout"):
        standard_pipeline(total_timeout=5.0, attempt_timeout=10.0)
    with pytest.raises(TypeError, match="http_retry"):
        standard_pipeline(retry=resilio.timeout(1.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strategy"):
        ResilientTransport(pipeline=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status codes"):
        http_retry(statuses=[42])
    with pytest.raises(ValueError, match="max_retry_after"):
        http_retry(max_retry_after=-1)


def test_default_transport_uses_the_standard_pipeline(service: Service, key: str) -> None:
    with httpx.Client(transport=ResilientTransport(), base_url=service.url) as http:
        response = http.get(f"/status/{key}")
    assert response.status_code == 200
    assert response.extensions[ATTEMPT_EXTENSION] == 1
