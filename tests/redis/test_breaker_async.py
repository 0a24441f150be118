"""B7: a breaker on a slow Redis never blocks the event loop.

A delaying TCP proxy makes every Redis command take 50 ms (25 ms each way),
for this test's client only. While 100 breaker calls run, a task that ticks
every 5 ms must keep ticking on time.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import time
import warnings
from collections.abc import Iterator
from urllib.parse import urlparse

import anyio
import anyio.lowlevel
import pytest
import redis
import redis.asyncio

from resilio import CircuitBreaker, CircuitOpenError, CircuitState
from resilio.redis import RedisStore

from .conftest import Endpoint
from .servers import DelayProxy

pytestmark = pytest.mark.anyio

TICK = 0.005


@pytest.fixture
def proxy(redis_endpoint: Endpoint) -> Iterator[DelayProxy]:
    port = urlparse(redis_endpoint.url).port
    assert port is not None
    delayed = DelayProxy(port, delay=0.025)
    yield delayed
    # Closing a listening socket does not wake a thread blocked in accept(): shut it down.
    with contextlib.suppress(OSError):
        delayed._listener.shutdown(socket.SHUT_RDWR)
    delayed.close()


class Boom(Exception):
    """The failure the tests' dependency raises."""


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("flavour", ["async client", "sync client in a worker thread"])
async def test_a_slow_redis_never_blocks_the_loop(
    proxy: DelayProxy, prefix: str, flavour: str
) -> None:
    if flavour == "async client":
        client: redis.asyncio.Redis | redis.Redis = redis.asyncio.Redis.from_url(
            proxy.url, socket_timeout=2.0
        )
    else:
        client = redis.Redis.from_url(proxy.url, socket_timeout=2.0, max_connections=200)
    breaker = CircuitBreaker(
        "slow", store=RedisStore(client, prefix=prefix), failure_threshold=1000
    )

    @breaker
    async def work(number: int) -> int:
        await anyio.lowlevel.checkpoint()
        if number % 2:
            raise Boom
        return number

    # The first uses import code and start anyio's worker threads and the
    # client's connections (tens of ms of CPU, once per process): not a Redis
    # wait, so they are paid before the clock starts.
    async with anyio.create_task_group() as warm_up:
        for _ in range(50):
            warm_up.start_soon(breaker.state_async)
    lateness: list[float] = []
    outcomes: list[object] = []

    async def ticker(stop: anyio.Event) -> None:
        due = time.monotonic() + TICK
        while not stop.is_set():
            await anyio.sleep(max(0.0, due - time.monotonic()))
            lateness.append(time.monotonic() - due)
            due += TICK

    async def one(number: int) -> None:
        try:
            outcomes.append(await work(number))
        except Boom as exc:
            outcomes.append(exc)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stop = anyio.Event()
        started = time.monotonic()
        async with anyio.create_task_group() as ticking:
            ticking.start_soon(ticker, stop)
            async with anyio.create_task_group() as calls:
                for number in range(100):
                    calls.start_soon(one, number)
            elapsed = time.monotonic() - started
            stop.set()
        assert await breaker.state_async() is CircuitState.CLOSED
        if isinstance(client, redis.asyncio.Redis):
            await client.aclose()
        else:
            client.close()
        gc.collect()

    assert len(outcomes) == 100
    assert sum(isinstance(outcome, Boom) for outcome in outcomes) == 50
    assert elapsed >= 0.1  # each call paid at least two slow round trips
    assert len(lateness) >= elapsed / TICK * 0.5
    # One round trip through the proxy takes 50 ms: a stall shorter than that cannot
    # have been a wait for Redis on the loop (threads and tasks starting on a busy
    # 2-CPU machine have delayed a tick by 30 ms).
    assert max(lateness) < 0.04, f"the loop stalled for {max(lateness) * 1000:.1f} ms"
    assert not [w for w in caught if "never awaited" in str(w.message)]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cached_open_state_costs_no_round_trip(proxy: DelayProxy, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(proxy.url, socket_timeout=2.0)
    breaker = CircuitBreaker(
        "slow", store=RedisStore(client, prefix=prefix), failure_threshold=1, recovery_time=30.0
    )

    @breaker
    async def boom() -> None:
        raise Boom

    with pytest.raises(Boom):
        await boom()
    started = time.monotonic()
    for _ in range(100):
        with pytest.raises(CircuitOpenError):
            await boom()
    assert time.monotonic() - started < 0.05  # 100 rejections, not 100 x 50 ms
    await client.aclose()
