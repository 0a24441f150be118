"""The limiter script's two paths, and what RedisStore sends it.

A decision on one limit takes the script's own path (no tables, no loop);
decisions on several limits, and batches, take the general loop. Both must
give the same verdict for the same state. The store sends its keys and
arguments as bytes it encoded itself: they must be the bytes redis-py would
have sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from resilio import AllOf, Decision, FixedWindow, SlidingWindowLog, TokenBucket
from resilio._core.limiters import (
    Algorithm,
    FixedWindowAlgorithm,
    GcraAlgorithm,
    LeakyAlgorithm,
    SlidingLogAlgorithm,
    SlidingWindowAlgorithm,
)
from resilio._redis_scripts import (
    AsyncScriptRunner,
    NotWritableError,
    run_script,
    run_script_async,
)
from resilio.redis import _CONSUME, _LIMITER, _LOOK, RedisStore, RedisUnavailableError
from resilio.testing import FakeClock

from .conftest import Endpoint, client_options
from .servers import RedisServer

pytestmark = pytest.mark.anyio

SECOND = 1_000_000

LIMITS: list[Algorithm] = [
    GcraAlgorithm(SECOND // 4, 3),
    LeakyAlgorithm(SECOND // 4, 3),
    FixedWindowAlgorithm(3, SECOND),
    SlidingWindowAlgorithm(3, SECOND),
    SlidingLogAlgorithm(3, SECOND),
]
# Admits everything these tests ask, and is never the binding limit.
LOOSE = GcraAlgorithm(1, 10**9, name="loose")


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: limit.kind)
def test_one_limit_alone_and_among_several_gives_the_same_verdict(
    sync_client: redis.Redis, prefix: str, limit: Algorithm
) -> None:
    store = RedisStore(sync_client, prefix=prefix, time_source="caller")
    alone = store._plan_for((limit,))
    among = store._plan_for((limit, LOOSE))
    now = 10 * SECOND
    steps = [(1, _CONSUME), (2, _CONSUME), (1, _LOOK), (1, _CONSUME), (3, _LOOK), (2, _CONSUME)]
    for step, (cost, mode) in enumerate(steps * 3):
        now += SECOND // 10 * (step % 4)
        single = run_script(
            sync_client, _LIMITER, store._keys(alone, "a"), store._args(alone, cost, now, mode)
        ).split()
        several = run_script(
            sync_client, _LIMITER, store._keys(among, "b"), store._args(among, cost, now, mode)
        ).split()
        assert len(single) == 4
        assert len(several) == 8
        assert single == several[:4], (step, cost, mode)
        assert several[4] == b"1"  # the loose limit admits: it never decides here


def test_a_rejection_by_one_limit_consumes_nothing_in_the_others(
    sync_client: redis.Redis, prefix: str
) -> None:
    clock = FakeClock(start=1000.0)
    store = RedisStore(sync_client, prefix=prefix, time_source="caller")
    tight = FixedWindow(limit=1, window=3600.0, name="tight")
    loose = SlidingWindowLog(limit=5, window=60.0, name="log")
    both = AllOf(tight, loose, store=store, clock=clock)
    assert both.try_acquire("k")
    refused = both.try_acquire("k")
    assert not refused
    # The log kept one entry only: the refused request was not written there.
    assert sync_client.llen(f"{prefix}{{k}}:log") == 2
    assert sync_client.get(f"{prefix}{{k}}:log#total") == b"1"


def test_keys_are_encoded_as_the_client_encodes_them(
    redis_endpoint: Endpoint, sync_client: redis.Redis, prefix: str
) -> None:
    with redis.Redis.from_url(redis_endpoint.url, socket_timeout=2.0, encoding="latin-1") as client:
        limiter = TokenBucket(
            rate=1, capacity=2, name="tb", store=RedisStore(client, prefix=prefix)
        )
        assert limiter.try_acquire("clé")
        assert limiter.try_acquire("clé").remaining == 0
    assert sync_client.exists(f"{prefix}{{clé}}:tb".encode("latin-1")) == 1
    assert sync_client.exists(f"{prefix}{{clé}}:tb".encode()) == 0


@pytest.mark.parametrize("limits", [1, 2], ids=["one limit", "two limits"])
def test_a_client_that_decodes_replies_gets_the_same_decisions(
    redis_endpoint: Endpoint, prefix: str, limits: int
) -> None:
    with redis.Redis.from_url(
        redis_endpoint.url, socket_timeout=2.0, decode_responses=True
    ) as client:
        store = RedisStore(client, prefix=prefix)
        parts = [FixedWindow(limit=2, window=3600.0, name="w"), TokenBucket(rate=1, capacity=5)]
        limiter = AllOf(*parts[:limits], store=store)
        first, second, third = (limiter.try_acquire("k") for _ in range(3))
    assert [first.allowed, second.allowed, third.allowed] == [True, True, False]
    assert [first.remaining, second.remaining, third.remaining] == [1, 0, 0]
    assert 0 < third.retry_after <= 3600.0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_batch_with_the_callers_time_admits_exactly_the_limit(
    async_client: redis.asyncio.Redis, prefix: str
) -> None:
    clock = FakeClock(start=5000.0)
    store = RedisStore(async_client, prefix=prefix, time_source="caller")
    for limiter in (
        FixedWindow(limit=7, window=60.0, store=store, clock=clock),
        AllOf(
            TokenBucket(rate=1, capacity=9, name="tb"),
            SlidingWindowLog(limit=7, window=60.0, name="log"),
            store=store,
            clock=clock,
        ),
    ):
        decisions: list[Any] = await asyncio.gather(
            *(limiter.try_acquire_async("k") for _ in range(40))
        )
        admitted = [decision for decision in decisions if decision.allowed]
        assert len(admitted) == 7
        assert sorted(decision.remaining for decision in admitted) == list(range(7))
        await limiter.reset_async("k")


# -- refused writes and long batches ---------------------------------------------------------


def anyio_sync(fn: Callable[[str], Decision]) -> Callable[[str], Awaitable[Decision]]:
    """``fn`` called in the event loop's thread, awaitable like its async twin."""

    async def call(key: str) -> Decision:
        return fn(key)

    return call


@contextlib.contextmanager
def a_replica() -> Iterator[RedisServer]:
    """A server of this test's own that replicates another: it refuses writes."""
    with RedisServer() as master, RedisServer() as replica:
        with replica.admin() as admin:
            admin.execute_command("REPLICAOF", master.host, master.port)
            admin.config_resetstat()
        yield replica


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_replica_refusing_the_write_is_an_outage_and_its_connections_are_dropped(
    asynchronous: bool,
) -> None:
    # A store pointed at a replica (as a stale Sentinel answer would): READONLY,
    # which redis-py raises as ReadOnlyError with the code word taken off.
    with a_replica() as replica:
        url = replica.url
        if asynchronous:
            client: Any = redis.asyncio.Redis.from_url(url, **client_options(asynchronous=True))
        else:
            client = redis.Redis.from_url(url, **client_options())
        limiter = TokenBucket(rate=10, store=RedisStore(client, on_error="closed"))
        decide = limiter.try_acquire_async if asynchronous else anyio_sync(limiter.try_acquire)
        with pytest.raises(RedisUnavailableError) as caught:
            await decide("k")
        lost = caught.value.__cause__
        assert isinstance(lost, NotWritableError)
        # Redis 7 answers READONLY (redis-py's ReadOnlyError); Redis 6 wraps it in
        # a script error that still names it.
        refused = lost.__cause__
        assert isinstance(refused, redis.exceptions.ReadOnlyError) or "-READONLY " in str(refused)
        pool = client.connection_pool
        idle = pool._available_connections
        assert not any(connection.is_connected for connection in idle)  # the next call reconnects
        with replica.admin() as admin:
            calls = admin.info("commandstats")["cmdstat_evalsha"]["calls"]
        # The async call tries once more on a fresh connection; the sync client once.
        assert calls == (2 if asynchronous else 1)
        if asynchronous:
            await client.aclose()
        else:
            client.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_batch_of_many_decisions_on_many_limits_fits_in_the_reply(
    async_client: redis.asyncio.Redis, prefix: str
) -> None:
    # 1001 concurrent decisions on 4 limits: 4004 limit replies, sent in script
    # calls of at most MOST_KEYS keys, each reply one line redis.asyncio can read.
    store = RedisStore(async_client, prefix=prefix, on_error="open")
    parts = [FixedWindow(limit=10**6, window=3600.0, name=f"f{i}") for i in range(4)]
    limiter = AllOf(*parts, store=store)
    decisions = await asyncio.gather(*(limiter.try_acquire_async(f"user:{i}") for i in range(1001)))
    assert all(decision.allowed for decision in decisions)
    assert sorted({decision.remaining for decision in decisions}) == [10**6 - 1]
    assert len([key async for key in async_client.scan_iter(match=f"{prefix}*")]) == 4004


async def clobbered_key_in_a_batch(client: Any, prefix: str) -> None:
    """One user's key overwritten by another program; that user and four more decide at once."""
    store = RedisStore(client, prefix=prefix)
    limiter = TokenBucket(rate=1, per=3600.0, capacity=10, store=store, name="api")
    await limiter.try_acquire_async("bad")
    [key] = [key async for key in client.scan_iter(match=f"{prefix}*")]
    await client.delete(key)
    await client.rpush(key, "x")  # another program writes a list under the same key
    users = ["first", "g1", "g2", "bad", "g3"]  # "first" goes alone, the others in one batch
    answers = await asyncio.gather(
        *(limiter.try_acquire_async(user) for user in users), return_exceptions=True
    )
    failed = {
        user: answer
        for user, answer in zip(users, answers, strict=True)
        if isinstance(answer, Exception)
    }
    assert list(failed) == ["bad"]
    assert isinstance(failed["bad"], redis.exceptions.ResponseError)
    assert "WRONGTYPE" in str(failed["bad"])
    remaining = {user: (await limiter.peek_async(user)).remaining for user in users[:3] + users[4:]}
    # Each charged once (peek answers as for one more unit): its own decision only.
    assert remaining == dict.fromkeys(["first", "g1", "g2", "g3"], 8)
    assert await client.lrange(key, 0, -1) == [b"x"]  # the bad key is left as it was


def test_a_decision_failing_on_a_key_writes_none_of_its_limits(
    sync_client: redis.Redis, prefix: str
) -> None:
    """Every key of a decision is read before any is written: a bad one leaves all as they were."""
    store = RedisStore(sync_client, prefix=prefix)
    bucket = TokenBucket(rate=1, per=3600.0, capacity=3, name="tb", store=store)
    log = SlidingWindowLog(limit=5, window=3600.0, name="log", store=store)
    both = AllOf(bucket, log)
    sync_client.set(f"{prefix}{{victim}}:log", "not a list")  # and no total beside it
    for _ in range(3):
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            both.try_acquire("victim")
    assert bucket.peek("victim").remaining == 2  # as for a key never used: nothing taken
    assert sync_client.get(f"{prefix}{{victim}}:tb") is None


def test_a_log_whose_total_is_missing_is_counted_again(
    sync_client: redis.Redis, prefix: str
) -> None:
    """An older version kept the total under another key: the admissions still count."""
    store = RedisStore(sync_client, prefix=prefix, time_source="caller")
    clock = FakeClock(start=1000.0)
    log = SlidingWindowLog(limit=5, window=60.0, name="log", store=store, clock=clock)
    for _ in range(3):
        assert log.try_acquire("k")
    sync_client.delete(f"{prefix}{{k}}:log#total")  # as if kept elsewhere
    assert log.peek("k").remaining == 1  # 2 left before this peek's own unit
    assert log.try_acquire("k", 2).remaining == 0
    assert not log.try_acquire("k")
    assert sync_client.get(f"{prefix}{{k}}:log#total") == b"5"  # written back when it admitted


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_clobbered_key_fails_only_its_own_decision_in_a_batch(
    async_client: redis.asyncio.Redis, prefix: str
) -> None:
    await clobbered_key_in_a_batch(async_client, prefix)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_clobbered_key_fails_only_its_own_decision_in_a_cluster_batch(
    async_cluster_client: Any, prefix: str
) -> None:
    await clobbered_key_in_a_batch(async_cluster_client, prefix)


def test_more_keys_than_one_script_call_takes_are_refused_when_built(
    sync_client: redis.Redis, prefix: str
) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    logs = [SlidingWindowLog(limit=5, window=60.0, name=f"log{i}") for i in range(501)]
    with pytest.raises(ValueError, match=r"at most 1000 keys at once .* these limits take 1002"):
        AllOf(*logs, store=store)
    AllOf(*logs[:500], store=store)  # 1000 keys: accepted


class ScriptedClient:
    """A stand-in for a server that answers with the given errors, then succeeds.

    Only for what no real Redis does (an EVAL answered with NOSCRIPT), or to
    line up several failures of one call deterministically.
    """

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.commands: list[str] = []

    async def execute_command(self, command: str, *args: object) -> object:
        self.commands.append(command)
        if self.errors:
            raise self.errors.pop(0)
        return b"ok"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_server_answering_eval_with_noscript_gets_no_endless_reload() -> None:
    client = ScriptedClient(*(NoScriptError("NOSCRIPT") for _ in range(100)))
    with pytest.raises(NoScriptError):
        await run_script_async(client, _LIMITER, [b"k"], [b"1"])
    assert client.commands == ["EVALSHA", "EVAL"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_error_raised_after_the_retry_chains_every_error_before_it() -> None:
    failures = [
        NoScriptError("NOSCRIPT"),
        RedisConnectionError("dropped while sending EVAL"),
        NoScriptError("NOSCRIPT on the fresh connection"),
        RedisConnectionError("dropped again"),
    ]
    client = ScriptedClient(*failures)
    with pytest.raises(RedisConnectionError) as caught:
        await run_script_async(client, _LIMITER, [b"k"], [b"1"])
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__context__
    assert chain == failures[::-1]
    assert client.commands == ["EVALSHA", "EVAL", "EVALSHA", "EVAL"]
    # And a call that recovers returns the reply.
    assert await run_script_async(ScriptedClient(*failures[:3]), _LIMITER, [b"k"], []) == b"ok"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_batch_refused_by_a_replica_is_sent_once_more_then_reported(
    prefix: str,
) -> None:
    # The pipeline path of AsyncScriptRunner (the breaker's batches) handles a
    # refused write as a lone call does: connections dropped, one more try.
    with a_replica() as replica:
        client = redis.asyncio.Redis.from_url(replica.url, **client_options(asynchronous=True))
        runner = AsyncScriptRunner(client, _LIMITER)
        plan = RedisStore(client, prefix=prefix)._plan_for((LIMITS[0],))
        calls = [([f"{prefix}{{u{i}}}".encode()], [b"1" + plan.consume]) for i in range(3)]
        replies = await runner.send_batch(calls)
        assert all(isinstance(reply, NotWritableError) for reply in replies)
        with replica.admin() as admin:
            stats = admin.info("commandstats")["cmdstat_evalsha"]["calls"]
        assert stats == 6  # each call twice
        await client.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_batch_whose_writes_are_refused_is_an_outage_not_a_key_failure(
    prefix: str,
) -> None:
    """Inside the batch script a refused write is not one decision's failure: all fail alike."""
    with a_replica() as replica:
        client = redis.asyncio.Redis.from_url(replica.url, **client_options(asynchronous=True))
        store = RedisStore(client, prefix=prefix, on_error="open")
        limiter = TokenBucket(rate=1, per=3600.0, capacity=1, store=store)
        decisions = await asyncio.gather(*(limiter.try_acquire_async(f"u{i}") for i in range(5)))
        assert all(decision.allowed for decision in decisions)  # failed open, every one
        assert isinstance(store._last_error, NotWritableError)
        await client.aclose()


def test_limits_refused_when_built_leave_their_names_free(
    sync_client: redis.Redis, prefix: str
) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    logs = [SlidingWindowLog(limit=5, window=60.0, name=f"n{i}") for i in range(501)]
    with pytest.raises(ValueError, match="at most 1000 keys"):
        AllOf(*logs, store=store)
    assert TokenBucket(rate=3, name="n0", store=store).try_acquire("k").allowed


def test_a_limiter_rebuilt_per_request_shares_one_plan(
    sync_client: redis.Redis, prefix: str
) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    for i in range(RedisStore._PLANS_CACHED + 100):
        limiter = TokenBucket(rate=1, per=3600.0, capacity=100, name="per-request", store=store)
        if i % 500 == 0:
            assert limiter.try_acquire("k").allowed
    assert len(store._signatures) == 1
    assert len(store._plans) <= RedisStore._PLANS_CACHED
    # Every rebuilt limiter counted on one key: 9 taken, and peek's own cost of 1.
    assert limiter.peek("k").remaining == 100 - 9 - 1
