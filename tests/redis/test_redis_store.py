"""RedisStore on its own: configuration, keys, server time, batching, equality with memory."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

import resilio
from resilio import AllOf, FixedWindow, LeakyBucket, SlidingWindowLog, TokenBucket
from resilio._core.limiters import (
    Algorithm,
    FixedWindowAlgorithm,
    GcraAlgorithm,
    LeakyAlgorithm,
    SlidingLogAlgorithm,
    SlidingWindowAlgorithm,
)
from resilio._redis_scripts import AsyncScriptRunner
from resilio.redis import RedisStore
from resilio.stores import MemoryStore
from resilio.testing import FakeClock

from .conftest import Endpoint, client_options

pytestmark = pytest.mark.anyio


def commandstats(client: redis.Redis) -> int:
    """How many scripts the server has run, by EVALSHA or EVAL."""
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


# -- configuration -------------------------------------------------------------


def test_configuration_errors_say_what_to_change(redis_endpoint: Endpoint) -> None:
    unbounded = redis.Redis.from_url(redis_endpoint.url, socket_timeout=None)
    with unbounded, pytest.raises(ValueError, match="socket_timeout"):
        RedisStore(unbounded)
    for timeout in (0, -1.0):  # redis-py takes 0 as "do not wait": every command would fail
        with (
            redis.Redis.from_url(redis_endpoint.url, socket_timeout=timeout) as client,
            pytest.raises(ValueError, match=f"socket_timeout is {float(timeout)!r}.* above 0"),
        ):
            RedisStore(client)
    with redis.Redis.from_url(redis_endpoint.url, socket_timeout=1.0) as client:
        with pytest.raises(ValueError, match="braces"):
            RedisStore(client, prefix="app:{x}:")
        with pytest.raises(ValueError, match="on_error"):
            RedisStore(client, on_error="ignore")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="time_source"):
            RedisStore(client, time_source="client")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="recovery_time"):
            RedisStore(client, recovery_time=-1)
        store = RedisStore(client, prefix="app:")
        assert store.client is client
        assert store.prefix == "app:"
        assert "on_error='closed'" in repr(store)
    with pytest.raises(TypeError, match="redis-py client"):
        RedisStore(object())
    for timeout in ("1", True):  # a str fails on the first command, a bool means 1 s
        with (
            redis.Redis.from_url(redis_endpoint.url, socket_timeout=timeout) as client,
            pytest.raises(TypeError, match="number of seconds"),
        ):
            RedisStore(client)
    with (
        redis.Redis.from_url(redis_endpoint.url, socket_timeout=1.0) as client,
        pytest.raises(TypeError, match="got a pipeline"),
    ):
        RedisStore(client.pipeline())  # queues commands: nothing would run
    with (
        redis.Redis.from_url(
            redis_endpoint.url, socket_timeout=1.0, decode_responses=True, encoding="utf-16"
        ) as client,
        pytest.raises(ValueError, match="does not keep ASCII"),
    ):
        RedisStore(client)


def test_importing_without_redis_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "try:\n"
        "    import resilio.redis\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert "pip install 'resilio[redis]'" in out


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_async_client_serves_only_the_async_methods(
    async_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = TokenBucket(rate=1, store=RedisStore(async_client, prefix=prefix))
    for call in (limiter.try_acquire, limiter.allow, limiter.peek, limiter.acquire):
        with pytest.raises(TypeError, match="async client"):
            call("k")
    with pytest.raises(TypeError, match="async client"):
        limiter.reset("k")
    assert (await limiter.try_acquire_async("k")).allowed
    await limiter.reset_async("k")
    assert await async_client.keys(f"{prefix}*") == []


def test_limits_with_one_name_must_agree(sync_client: redis.Redis, prefix: str) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    FixedWindow(limit=3, window=3600.0, name="shared", store=store).try_acquire("k")
    assert FixedWindow(limit=3, window=3600.0, name="shared", store=store).try_acquire("k")
    with pytest.raises(ValueError, match="share the name"):
        TokenBucket(rate=1, name="shared", store=store)  # refused when built


# -- keys ----------------------------------------------------------------------


def test_keys_are_prefixed_and_hash_tagged(
    cluster_client: redis.cluster.RedisCluster, prefix: str
) -> None:
    store = RedisStore(cluster_client, prefix=prefix)
    limiter = AllOf(
        TokenBucket(rate=10, name="second"),
        SlidingWindowLog(limit=100, window=60.0, name="minute"),
        store=store,
    )
    odd = "user:{42}%"
    assert limiter.try_acquire(odd).allowed  # one script, three keys: no CROSSSLOT
    keys = sorted(key.decode() for key in cluster_client.scan_iter(match=f"{prefix}*"))
    tag = "user:%7B42%7D%25"
    assert keys == [
        f"{prefix}{{{tag}}}:minute",
        f"{prefix}{{{tag}}}:minute#total",
        f"{prefix}{{{tag}}}:second",
    ]
    assert len({key_slot(key.encode()) for key in keys}) == 1
    # Different user keys spread over the slots (and so over the masters).
    for user in range(20):
        limiter.try_acquire(f"user:{user}")
    slots = {key_slot(key) for key in cluster_client.scan_iter(match=f"{prefix}*")}
    assert len(slots) > 10


# -- the largest limits ----------------------------------------------------------


@pytest.mark.parametrize("cls", [TokenBucket, LeakyBucket])
def test_the_longest_burst_a_limiter_accepts_decides_exactly_on_redis(
    cls: type[Any], sync_client: redis.Redis, prefix: str
) -> None:
    # 142 one-year units: a burst just under 2**52 us. One more is refused at
    # construction: added to the server's clock (us since 1970), a longer one
    # passes 2**53, where Redis's doubles are no longer exact.
    year = 365 * 86_400.0
    with pytest.raises(ValueError, match=r"2\*\*52"):
        cls(rate=1, per=year, capacity=143)
    clock = FakeClock(start=1.8e9)  # about now, in seconds since 1970, as the server's TIME
    store = RedisStore(sync_client, prefix=prefix, time_source="caller")
    remote = cls(rate=1, per=year, capacity=142, store=store, clock=clock)
    local = cls(rate=1, per=year, capacity=142, clock=clock)
    for step in [142, 1, 1, "year", 1, 1, "peek"]:
        if step == "year":
            clock.advance(year)
        elif step == "peek":
            assert remote.peek("k") == local.peek("k")
        else:
            assert remote.try_acquire("k", cost=step) == local.try_acquire("k", cost=step)


# -- time ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [TokenBucket, FixedWindow, SlidingWindowLog])
def test_server_time_makes_client_clocks_irrelevant(
    sync_client: redis.Redis, prefix: str, cls: type[Any]
) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    options = {"rate": 3, "per": 60.0} if cls is TokenBucket else {"limit": 3, "window": 60.0}
    # Two hosts whose clocks disagree by days; then one of them jumps an hour ahead.
    early_clock = FakeClock(start=0.0)
    early = cls(**options, name="shared", store=store, clock=early_clock)
    late = cls(**options, name="shared", store=store, clock=FakeClock(start=300_000.0))
    assert early.try_acquire("k", 2).allowed
    assert late.try_acquire("k").allowed
    early_clock.advance(3600.0)
    assert not early.try_acquire("k").allowed
    assert not late.try_acquire("k").allowed
    assert 0 < late.peek("k").retry_after <= 60.0


# -- equality with the in-memory store ---------------------------------------------


def algorithms() -> st.SearchStrategy[Algorithm]:
    windows = st.integers(1_000, 5_000_000)
    counts = st.integers(1, 8)
    return st.one_of(
        st.builds(GcraAlgorithm, st.integers(1, 500_000), counts),
        st.builds(LeakyAlgorithm, st.integers(1, 500_000), counts),
        st.builds(FixedWindowAlgorithm, counts, windows),
        st.builds(SlidingWindowAlgorithm, counts, windows),
        st.builds(SlidingLogAlgorithm, counts, windows),
        # Large limits and windows: products beyond 2**53 inside the Lua script.
        st.builds(SlidingWindowAlgorithm, st.integers(10**6, 10**9), st.integers(10**9, 10**12)),
    )


operations = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "peek"]),
        st.floats(0, 1),  # cost as a fraction of the capacity
        st.integers(0, 3_000_000),  # µs to wait after
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limits=st.lists(algorithms(), min_size=1, max_size=3, unique_by=lambda a: a.name),
    ops=operations,
    start=st.integers(0, 2**52),
)
def test_redis_decides_exactly_like_memory(
    sync_client: redis.Redis, limits: list[Algorithm], ops: list[Any], start: int
) -> None:
    memory = MemoryStore()
    remote = RedisStore(sync_client, prefix=f"model:{start}:{id(limits)}:", time_source="caller")
    capacity = min(limit.capacity for limit in limits)
    key = "k"
    now = start
    try:
        for op, fraction, wait in ops:
            cost = max(1, round(fraction * capacity))
            if op == "acquire":
                assert remote.acquire(limits, key, cost, now) == memory.acquire(
                    limits, key, cost, now
                )
            else:
                assert remote.peek(limits, key, cost, now) == memory.peek(limits, key, cost, now)
            now += wait
    finally:
        remote.reset(limits, key)


# -- concurrent async callers share round trips ----------------------------------------


@pytest.fixture(params=["async_client", "async_cluster_client"])
def any_async_client(request: pytest.FixtureRequest) -> Any:
    """The standalone and the cluster async client."""
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_concurrent_tasks_are_batched_and_never_over_admit(
    any_async_client: Any, sync_client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = any_async_client
    store = RedisStore(client, prefix=prefix)
    # Two limits, one of them on two keys: a batch carries calls of 3 keys each.
    limiter = AllOf(
        FixedWindow(limit=37, window=3600.0), SlidingWindowLog(limit=50, window=3600.0), store=store
    )
    await limiter.try_acquire_async("warm-up")
    runner = store._runner
    assert isinstance(runner, AsyncScriptRunner)
    pipelines: list[int] = []
    send = type(runner).send_batch

    async def counting(self: AsyncScriptRunner, calls: Any) -> Any:
        pipelines.append(len(calls))
        return await send(self, calls)

    monkeypatch.setattr(type(runner), "send_batch", counting)
    before = commandstats(sync_client)
    decisions = await asyncio.gather(*(limiter.try_acquire_async("k") for _ in range(200)))
    # The first call went alone; the 199 others shared a few pipelines.
    assert sum(pipelines) == 199
    assert len(pipelines) <= 5
    assert sum(decision.allowed for decision in decisions) == 37
    assert [d.remaining for d in decisions if d.allowed] == list(range(36, -1, -1))
    if isinstance(client, redis.asyncio.Redis):
        # On one server, a batch is one call of the script: 1 + a few calls in all.
        assert commandstats(sync_client) - before == 1 + len(pipelines)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_batch_survives_a_script_flush_and_a_cancelled_caller(
    async_client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = TokenBucket(
        rate=1, per=60.0, capacity=50, store=RedisStore(async_client, prefix=prefix)
    )
    await limiter.try_acquire_async("k")
    await async_client.script_flush()
    tasks = [asyncio.ensure_future(limiter.try_acquire_async("k")) for _ in range(30)]
    await asyncio.sleep(0)
    tasks[-1].cancel()  # queued behind the first: dropped from its batch
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[-1], asyncio.CancelledError)
    assert all(getattr(d, "allowed", False) for d in done[:-1])
    # A peek answers for one more unit: 1 + 29 consumed, 1 more asked.
    assert (await limiter.peek_async("k")).remaining == 50 - 1 - 29 - 1


def test_allof_of_redis_parts_decides_on_redis(sync_client: redis.Redis, prefix: str) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    burst = TokenBucket(rate=10, per=1.0, capacity=10, name="burst", store=store)
    hourly = FixedWindow(limit=1000, window=3600.0, name="hourly", store=store)
    first, second = AllOf(burst, hourly), AllOf(burst, hourly)  # as two processes would
    admitted = sum(first.allow("u") for _ in range(10)) + sum(second.allow("u") for _ in range(10))
    assert admitted == 10
    assert sync_client.keys(f"{prefix}*")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_limiter_on_an_async_client_refuses_sync_functions_at_decoration(
    redis_endpoint: Endpoint, prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_endpoint.url, **client_options(asynchronous=True))
    try:
        store = RedisStore(client, prefix=prefix)
        assert store.is_async
        limiter = TokenBucket(rate=10, capacity=10, store=store)

        def sync_call() -> str:
            return "never"

        async def async_call() -> str:
            return "ok"

        with pytest.raises(TypeError, match="async client"):
            limiter(sync_call)
        with pytest.raises(TypeError, match="async client"):
            limiter.limit(key="k")(sync_call)
        assert await limiter(async_call)() == "ok"
    finally:
        await client.aclose()


def test_a_wait_on_a_fake_clock_over_server_time_passes_in_real_time(
    sync_client: redis.Redis, prefix: str
) -> None:
    # The server's clock moves only in real time: a head waiter whose fake
    # sleeps return at once must not ask Redis again and again meanwhile.
    clock = FakeClock()
    store = RedisStore(sync_client, prefix=prefix)
    assert store.keeps_time
    assert not RedisStore(sync_client, prefix=prefix, time_source="caller").keeps_time
    limiter = TokenBucket(rate=10, capacity=1, store=store, clock=clock)
    assert limiter.try_acquire("k").allowed
    before = commandstats(sync_client)
    decision = limiter.acquire("k", timeout=5)
    assert decision.allowed
    assert commandstats(sync_client) - before <= 4  # one pause of ~0.1 s, not a busy loop
    assert 0.05 <= clock.now() <= 0.5  # the fake clock slept the pause too
    # A timeout still counts on the fake clock: it ends the wait, nothing consumed.
    with pytest.raises(resilio.RateLimitExceeded):
        limiter.acquire("k", timeout=0.01)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_async_wait_on_a_fake_clock_over_server_time_passes_in_real_time(
    async_client: redis.asyncio.Redis, sync_client: redis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    limiter = TokenBucket(
        rate=10, capacity=1, store=RedisStore(async_client, prefix=prefix), clock=clock
    )
    assert (await limiter.try_acquire_async("k")).allowed
    before = commandstats(sync_client)
    assert (await limiter.acquire_async("k", timeout=5)).allowed
    assert commandstats(sync_client) - before <= 4
    assert 0.05 <= clock.now() <= 0.5


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_an_async_client_under_trio_says_what_to_use_instead(
    redis_endpoint: Endpoint, prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_endpoint.url, **client_options(asynchronous=True))
    limiter = TokenBucket(rate=1, store=RedisStore(client, prefix=prefix))
    with pytest.raises(RuntimeError, match=r"needs an asyncio event loop.*sync client"):
        await limiter.try_acquire_async("k")
    # The sync client's calls run in worker threads, under trio too.
    with redis.Redis.from_url(redis_endpoint.url, **client_options()) as sync_client:
        limiter = TokenBucket(rate=1, store=RedisStore(sync_client, prefix=prefix))
        assert (await limiter.try_acquire_async("k")).allowed
