"""Limiters and a breaker on a Sentinel group: async clients, shared state, forced failovers.

`test_redis_failover.py` checks one sync limiter through a Sentinel failover.
These add an asyncio Sentinel client (`redis.asyncio.sentinel.Sentinel`) under
limiters, and a circuit breaker shared through Sentinel clients, on real
``redis-server`` and ``redis-server --sentinel`` processes on loopback.

One group (a master, its replica, three sentinels) serves the whole module,
guarded with ``min-replicas-to-write 1`` as the deployment guide advises, and
every failover test first waits until the group has settled after the
previous one (the old master follows the new one, and every sentinel names
the new master and sees the other server up, as its replica), then forces a
failover with ``SENTINEL FAILOVER``.
The old master keeps running after that, refusing writes with NOREPLICAS,
and the new master refuses them too until a sentinel demotes the old one:
about ten seconds, during which the store applies its failure policy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from resilio import CircuitBreaker, CircuitOpenError, CircuitState, FixedWindow, TokenBucket
from resilio._redis_breaker import breaker_keys
from resilio.redis import RedisStore, RedisUnavailableError
from resilio.testing import FakeClock

from .conftest import quick_retry
from .servers import RedisSentinel, RedisServer, wait_in_sync
from .test_redis_failover import noscript_replies

pytestmark = pytest.mark.anyio

T = TypeVar("T")

KEY = "user:42"
BUSY = 10_000  # the capacity of the limits decided through a failover: never reached here
DEADLINE = 20.0  # seconds a failover, or the group settling after one, may take here
RECOVERY = 40.0  # seconds until decisions succeed on the new master (about ten measured)
TIMEOUT = 0.5  # seconds: the clients' socket timeouts, short as the guide advises


@pytest.fixture(scope="module")
def group() -> Iterator[RedisSentinel]:
    """A master, its replica and three sentinels for this module, guarded as advised."""
    with RedisSentinel(
        sentinels=3, replicas=1, min_replicas_to_write=1, down_after=1.0, failover_timeout=5.0
    ) as started:
        yield started


def wait_for(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Wait until ``condition()`` holds (Redis errors count as not yet), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError):
            if condition():
                return
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition()``, a test of the event loop's own state, until it holds.

    Bound it with `anyio.fail_after`.
    """
    while True:
        if condition():
            return
        await anyio.sleep(0.005)


def settled(group: RedisSentinel) -> bool:
    """Whether every sentinel names one master and sees each other server as a live replica.

    Only then does a forced failover find a replica to promote, and do writes succeed
    (``min-replicas-to-write``) without a decision being refused.
    """
    master = group.master()
    with master.admin() as client:
        if client.info("replication").get("connected_slaves") != len(group.servers) - 1:
            return False
    for sentinel in group.sentinels:
        with sentinel.admin() as client:
            host, port = client.execute_command(
                "SENTINEL GET-MASTER-ADDR-BY-NAME", RedisSentinel.service
            )
            replicas = client.sentinel_slaves(RedisSentinel.service)
        if (host.decode(), int(port)) != (master.host, master.port):
            return False
        if len(replicas) != len(group.servers) - 1:
            return False
        if any(replica["flags"] != "slave" for replica in replicas):  # none down
            return False
    return all(following(server) for server in group.servers if server is not master)


def following(server: RedisServer) -> bool:
    """Whether ``server`` is a replica whose link to its master is up."""
    with server.admin() as client:
        info = client.info("replication")
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")


def force_failover(group: RedisSentinel) -> RedisServer:
    """Wait until the group has settled, fail it over, and return the new master."""
    wait_for(lambda: settled(group), timeout=40.0)
    old = group.master()
    for replica in group.servers:
        if replica is not old:
            wait_in_sync(old, replica)
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            new = group.failover(timeout=DEADLINE)
            break
        except redis.ResponseError as error:
            # A sentinel whose view of the replica is not fresh yet has none to promote.
            if "NOGOODSLAVE" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert new is not old
    return new


def master_client(group: RedisSentinel, *, asynchronous: bool = False) -> tuple[Any, Any]:
    """A Sentinel client of the group's master (sync or asyncio), with the guide's settings."""
    kind = redis.asyncio.sentinel.Sentinel if asynchronous else redis.sentinel.Sentinel
    sentinel = kind(
        group.addresses, sentinel_kwargs={"socket_timeout": TIMEOUT}, socket_timeout=TIMEOUT
    )
    client = sentinel.master_for(
        RedisSentinel.service,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=quick_retry(asynchronous=asynchronous),
    )
    return sentinel, client


def close_sync(sentinel: redis.sentinel.Sentinel, client: redis.Redis) -> None:
    client.close()
    for node in sentinel.sentinels:
        node.close()


# -- limiters on an asyncio Sentinel client -----------------------------------------------


def like_memory_steps() -> list[int | float | str]:
    """Costs to take, clock advances (floats, seconds) and peeks, in the order to run them."""
    return [1, 1, 3, "peek", 4, 2, 0.1, 1, 5, "peek", 1.0, 2, 6, 30.0, 1, "peek", 7, 3, 1]


async def assert_decides_like_memory(store: RedisStore, clock: FakeClock, name: str) -> None:
    """A bucket and a fixed window on ``store`` give the same `Decision`s as in memory."""
    pairs = [
        (
            TokenBucket(rate=5, per=1.0, capacity=10, store=store, name=f"{name}-b", clock=clock),
            TokenBucket(rate=5, per=1.0, capacity=10, name=f"{name}-b", clock=clock),
        ),
        (
            FixedWindow(limit=8, window=10.0, store=store, name=f"{name}-w", clock=clock),
            FixedWindow(limit=8, window=10.0, name=f"{name}-w", clock=clock),
        ),
    ]
    for remote, local in pairs:
        for step in like_memory_steps():
            if isinstance(step, float):
                clock.advance(step)
            elif step == "peek":
                assert await remote.peek_async(KEY, 2) == local.peek(KEY, 2)
            else:
                assert isinstance(step, int)
                got = await remote.try_acquire_async(KEY, cost=step)
                assert got == local.try_acquire(KEY, cost=step), (remote, step)


async def peek_when_writable(
    limiter: TokenBucket | FixedWindow,
) -> int:
    """``remaining`` of a peek, once the master answers (bounded by `RECOVERY`)."""
    with anyio.fail_after(RECOVERY):
        while True:
            with contextlib.suppress(RedisUnavailableError):
                return (await limiter.peek_async(KEY)).remaining
            await anyio.sleep(0.02)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_sentinel_limiters_decide_like_memory_and_through_a_failover(
    group: RedisSentinel, prefix: str
) -> None:
    """An asyncio Sentinel client: exact decisions, then a forced failover loses no count.

    Before the failover a token bucket and a fixed window decide exactly as in memory
    (on a fake clock, ``time_source="caller"``). A task then decides on two limits that
    never fill up (a bucket on the server's clock that refills one token an hour, and
    a window on a frozen fake clock) every 5 ms, from before the failover until ten
    admissions after decisions resumed on the new master. Every admission must be on
    record there, but for the one decision per limit the old master may have taken in
    the instant before its replica left (asynchronous replication): the slack the sync
    test allows. Afterwards, decisions on the new master are still exactly those of
    memory.
    """
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: settled(group), timeout=40.0))
    sentinel, client = master_client(group, asynchronous=True)
    try:
        clock = FakeClock(start=1_000.0)
        on_fake_clock = RedisStore(client, prefix=prefix, time_source="caller", recovery_time=0.05)
        await assert_decides_like_memory(on_fake_clock, clock, "before")

        on_server_clock = RedisStore(client, prefix=prefix, recovery_time=0.05)
        frozen = FakeClock(start=5_000.0)
        bucket = TokenBucket(
            rate=1, per=3600.0, capacity=BUSY, store=on_server_clock, name="busy-bucket"
        )
        window = FixedWindow(
            limit=BUSY, window=3600.0, store=on_fake_clock, name="busy-window", clock=frozen
        )
        admitted = {"bucket": 0, "window": 0}
        refused = {"bucket": 0, "window": 0}
        stop = anyio.Event()

        async def decide() -> None:
            limits: dict[str, TokenBucket | FixedWindow] = {"bucket": bucket, "window": window}
            while not stop.is_set():
                for which, limiter in limits.items():
                    try:
                        with anyio.fail_after(5.0):  # a hang fails here, bounded
                            admitted[which] += await limiter.allow_async(KEY)
                    except RedisUnavailableError:
                        refused[which] += 1
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(decide)
            with anyio.fail_after(DEADLINE):
                await until(lambda: min(admitted.values()) >= 10)
            new = await anyio.to_thread.run_sync(force_failover, group)
            # Until a decision has run on the promoted master (it answers NOSCRIPT once),
            # and ten more of each limit were admitted after that.
            await anyio.to_thread.run_sync(wait_for, lambda: noscript_replies(new) > 0, RECOVERY)
            marks = dict(admitted)
            with anyio.fail_after(RECOVERY):
                await until(lambda: all(admitted[k] >= marks[k] + 10 for k in marks))
            stop.set()
        assert group.master() is new

        recorded = {
            "bucket": BUSY - await peek_when_writable(bucket) - 1,  # peek: as if after one more
            "window": BUSY - await peek_when_writable(window) - 1,
        }
        for which in admitted:
            assert 0 <= admitted[which] - recorded[which] <= 1, (which, admitted, recorded)
        assert min(refused.values()) > 0  # the guard refused writes: not luck
        with new.admin() as admin:  # the counts live on the new master
            keys = [f"{prefix}{{{KEY}}}:{name}" for name in ("busy-bucket", "busy-window")]
            assert admin.exists(*keys) == 2

        await assert_decides_like_memory(on_fake_clock, clock, "after")
    finally:
        await client.aclose()
        await sentinel.aclose()


# -- a breaker shared through Sentinel clients --------------------------------------------


class Boom(Exception):
    """The failure the breaker's dependency raises."""


def failing() -> None:
    raise Boom


async def succeeding() -> str:
    return "ok"


def breaker_on(client: redis.Redis | redis.asyncio.Redis, prefix: str) -> CircuitBreaker:
    """The shared breaker, as each process builds it: same name, same settings."""
    store = RedisStore(client, prefix=prefix, recovery_time=0.05)
    return CircuitBreaker(name="payments", store=store, failure_threshold=3, recovery_time=60.0)


def when_answered(step: Callable[[], Any]) -> Any:
    """Run ``step`` until Redis serves it (it raises `RedisUnavailableError` until then).

    Bounded by `RECOVERY`: after a forced failover the masters refuse writes for
    about ten seconds.
    """
    deadline = time.monotonic() + RECOVERY
    while True:
        with contextlib.suppress(RedisUnavailableError):
            return step()
        assert time.monotonic() < deadline, "Redis never served it"
        time.sleep(0.02)


async def when_answered_async(step: Callable[[], Awaitable[T]]) -> T:
    """`when_answered` for a coroutine function."""
    with anyio.fail_after(RECOVERY):
        while True:
            with contextlib.suppress(RedisUnavailableError):
                return await step()
            await anyio.sleep(0.02)


async def comes_to(read: Callable[[], Awaitable[CircuitState]], state: CircuitState) -> None:
    """Wait until ``await read()`` answers ``state``, or fail after `DEADLINE` seconds."""
    with anyio.fail_after(DEADLINE):
        while True:
            if await when_answered_async(read) is state:
                return
            await anyio.sleep(0.005)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_breaker_shared_through_sentinel_stays_open_through_a_failover(
    group: RedisSentinel, prefix: str
) -> None:
    """Opened by one instance, seen open by others, and still open on the new master.

    Instance ``a`` is on a sync Sentinel client, ``b`` on an asyncio one (another
    Sentinel object, as another process would have): ``a``'s failures open the
    breaker, and ``b`` sees it open and rejects without running anything. After a
    forced failover a process that starts then (``c``, a fresh Sentinel client)
    finds it open on the new master, with what is left of the open period. The
    breaker's state is a few replicated keys, so this holds for what the replica had
    received: the test waits until the replica has every write before failing over
    (the guide's "lost writes": asynchronous replication can lose a write taken in
    the instant before the promotion, here the failure that opened the breaker). A
    ``reset()`` on the new master, once it takes writes, closes the breaker for
    every instance.

    Observed here, and why ``a`` and ``b`` are given a moment to see the reset:
    ``b``'s state reads write nothing, so none of them fails, and its pooled
    connection stays on the old master through the failover, and after the
    sentinels have demoted it, on it as a replica (redis-py asks the sentinels
    again only when it connects, which a READONLY reply to a write would make it
    do). So ``b`` still read the breaker open for up to 0.7 s (in 2 of 6 runs)
    after ``c``'s reset had been taken by the new master, until the replica had
    it. A replica's answers lag behind the master's by its replication: an
    earlier state of the master's, never one it did not have.
    """
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: settled(group), timeout=40.0))
    sentinel_a, client_a = master_client(group)
    sentinel_b, client_b = master_client(group, asynchronous=True)
    ran: list[str] = []

    async def counted() -> str:
        ran.append("ran")
        return "ok"

    try:
        a = breaker_on(client_a, prefix)
        b = breaker_on(client_b, prefix)
        assert await b.call_async(succeeding) == "ok"
        for _ in range(2):
            with pytest.raises(Boom):
                a.call(failing)
        assert await b.state_async() is CircuitState.CLOSED  # two failures of three
        with pytest.raises(Boom):
            a.call(failing)
        opened = time.monotonic()
        assert a.state is CircuitState.OPEN
        assert await b.state_async() is CircuitState.OPEN
        assert 55.0 < await b.retry_after_async() <= 60.0
        with pytest.raises(CircuitOpenError):
            await b.call_async(counted)
        assert ran == []

        new = await anyio.to_thread.run_sync(force_failover, group)
        assert group.master() is new

        # A process that starts after the failover sees the open breaker on the new master.
        sentinel_c, client_c = master_client(group)
        try:
            c = breaker_on(client_c, prefix)
            assert when_answered(lambda: c.state) is CircuitState.OPEN
            assert 60.0 - (time.monotonic() - opened) - 1.0 < c.retry_after <= 60.0
            with pytest.raises(CircuitOpenError):
                c.call(lambda: ran.append("ran"))
            assert ran == []
            with new.admin() as admin:  # the state lives on the new master, with a TTL
                state_key = breaker_keys(prefix, "payments")[0]
                assert admin.pttl(state_key) > 0
            # The instances from before the failover still see it open.
            assert await when_answered_async(b.state_async) is CircuitState.OPEN
            assert when_answered(lambda: a.state) is CircuitState.OPEN

            # A reset on the new master, once it takes writes, reaches every instance.
            when_answered(c.reset)
            assert c.state is CircuitState.CLOSED
            assert c.call(lambda: "ok") == "ok"
            # Replication lag: see the docstring.
            await comes_to(b.state_async, CircuitState.CLOSED)
            assert await b.call_async(succeeding) == "ok"
            await comes_to(lambda: anyio.to_thread.run_sync(lambda: a.state), CircuitState.CLOSED)
        finally:
            close_sync(sentinel_c, client_c)
        assert noscript_replies(new) >= 1  # the breaker's script, reloaded invisibly
    finally:
        close_sync(sentinel_a, client_a)
        await client_b.aclose()
        await sentinel_b.aclose()
