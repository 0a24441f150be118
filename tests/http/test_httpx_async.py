"""AsyncResilientTransport against a real uvicorn server, on asyncio and trio."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

import resilio
from resilio.httpx import (
    ATTEMPT_EXTENSION,
    AsyncResilientTransport,
    BreakerPerAuthority,
    NotReplayableError,
    http_failure,
    http_retry,
    standard_pipeline,
)
from resilio.testing import FakeClock

from .conftest import Service

pytestmark = pytest.mark.anyio

BACKOFF = 0.125


class Recorder(httpx.AsyncBaseTransport):
    """A real AsyncHTTPTransport that notes attempt numbers and timeouts."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.attempts: list[int] = []
        self.timeouts: list[dict[str, float | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(request.extensions[ATTEMPT_EXTENSION])
        self.timeouts.append(dict(request.extensions["timeout"]))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def client(
    service: Service,
    pipeline: resilio.Strategy,
    transport: httpx.AsyncBaseTransport | None = None,
    read_body: bool = False,
    **options: object,
) -> httpx.AsyncClient:
    resilient = AsyncResilientTransport(transport, pipeline=pipeline, read_body=read_body)
    return httpx.AsyncClient(transport=resilient, base_url=service.url, **options)  # type: ignore[arg-type]


def retrying(clock: FakeClock, **options: object) -> resilio.Pipeline:
    options.setdefault("backoff", resilio.backoff.constant(BACKOFF, jitter="none"))
    return resilio.Pipeline(http_retry(clock=clock, **options))  # type: ignore[arg-type]


async def test_get_is_retried_and_post_is_not(service: Service, key: str) -> None:
    clock = FakeClock()
    async with client(service, retrying(clock)) as http:
        get = await http.get(f"/status/{key}-g?fail=2&retry_after=3")
        post = await http.post(f"/status/{key}-p?fail=2", content=b"x")
    assert (get.status_code, get.text, get.extensions[ATTEMPT_EXTENSION]) == (200, "ok 3", 3)
    assert (post.status_code, service.hits(f"{key}-p")) == (503, 1)
    assert clock.sleeps == [3.0, 3.0]


async def test_failed_responses_are_closed_before_the_next_attempt(
    service: Service, key: str
) -> None:
    seen: list[httpx.Response] = []

    async def note(event: resilio.Event) -> None:
        assert event.outcome is not None
        seen.append(event.outcome.unwrap())

    pipeline = retrying(FakeClock(), attempts=4, before_sleep=note)
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    async with client(service, pipeline, transport, timeout=httpx.Timeout(2.0, pool=0.5)) as http:
        response = await http.get(f"/status/{key}?fail=3")
    assert response.text == "ok 4"
    assert len(seen) == 3
    assert all(failed.is_closed for failed in seen)


async def test_attempt_timeout_cancels_and_the_retry_succeeds(service: Service, key: str) -> None:
    recorder = Recorder()
    pipeline = resilio.Pipeline(
        resilio.timeout(3.0),
        http_retry(backoff=resilio.backoff.constant(0.01, jitter="none")),
        resilio.timeout(0.3),
    )
    async with client(service, pipeline, recorder, timeout=None) as http:
        started = time.monotonic()
        response = await http.get(f"/slow/{key}?fail=1&delay=5")
    assert response.text == "ok 2"
    assert time.monotonic() - started < 1.5
    assert recorder.attempts == [1, 2]
    assert all(0.2 < value <= 0.3 for value in recorder.timeouts[0].values())  # type: ignore[operator]


async def test_total_timeout_ends_the_request(service: Service, key: str) -> None:
    pipeline = standard_pipeline(total_timeout=0.6, attempt_timeout=0.25)
    async with client(service, pipeline, timeout=None) as http:
        started = time.monotonic()
        with pytest.raises(resilio.TimeoutExceeded):
            await http.get(f"/slow/{key}?fail=9&delay=5")
    assert time.monotonic() - started < 1.2


async def test_a_stalled_body_fails_by_the_attempt_timeout_instead_of_hanging(
    service: Service, key: str
) -> None:
    pipeline = standard_pipeline(total_timeout=5.0, attempt_timeout=0.3)
    async with client(service, pipeline, timeout=None) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"/stall/{key}?fail=1")
    assert time.monotonic() - started < 1.5  # the stall lasts 3 s
    assert service.hits(key) == 1


async def test_a_slow_body_that_never_stalls_is_read_whole(service: Service, key: str) -> None:
    pipeline = standard_pipeline(total_timeout=0.6, attempt_timeout=0.3)
    async with client(service, pipeline, timeout=None) as http:
        response = await http.get(f"/trickle/{key}?fail=1&every=0.02")
    assert response.content == b"x" * 60


async def test_one_shot_async_body_is_never_sent_twice(service: Service, key: str) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with client(service, retrying(FakeClock())) as http:
        with pytest.raises(NotReplayableError) as caught:
            await http.put(f"/status/{key}?fail=1", content=body())
    assert service.hits(key) == 1
    assert caught.value.response is not None
    assert caught.value.response.is_closed


async def test_read_body_retries_a_connection_dropped_mid_body(service: Service, key: str) -> None:
    async with client(service, retrying(FakeClock()), read_body=True) as http:
        response = await http.get(f"/drop/{key}?fail=1")
        async with http.stream("GET", f"/status/{key}-s") as streamed:
            chunks = [chunk async for chunk in streamed.aiter_bytes()]
    assert response.text == "ok 2"
    assert b"".join(chunks) == b"ok 1"


async def test_without_read_body_a_mid_body_drop_is_not_retried(service: Service, key: str) -> None:
    async with client(service, retrying(FakeClock())) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"/drop/{key}?fail=1")
    assert service.hits(key) == 1


async def test_breaker_per_authority_and_concurrent_attempt_numbers(
    service: Service, other_service: Service, key: str
) -> None:
    breakers = BreakerPerAuthority(
        lambda name: resilio.CircuitBreaker(name=name, failure_threshold=5, on=http_failure)
    )
    pipeline = resilio.Pipeline(http_retry(backoff=resilio.backoff.none()), breakers)
    attempts: dict[int, int] = {}
    async with client(service, pipeline) as http:

        async def one(i: int) -> None:
            # Request i fails i times first: each call sees only its own attempts.
            response = await http.get(f"{other_service.url}/status/{key}-{i}?fail={i}")
            attempts[i] = response.extensions[ATTEMPT_EXTENSION]

        async with anyio.create_task_group() as group:
            for i in range(3):
                group.start_soon(one, i)
        for _ in range(5):
            await http.get(f"/status/{key}?fail=99&status=500")
        with pytest.raises(resilio.CircuitOpenError):
            await http.get(f"/status/{key}")
    assert attempts == {0: 1, 1: 2, 2: 3}
    assert breakers.breaker(other_service.url).state is resilio.CircuitState.CLOSED
    assert breakers.breaker(service.url).state is resilio.CircuitState.OPEN
