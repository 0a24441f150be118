"""Rate limiter cases on real Redis: L4, L9, L11, L13, waiting, and the failure policy."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from resilio import (
    AllOf,
    FixedWindow,
    LeakyBucket,
    RateLimiter,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)
from resilio.redis import RedisStore, RedisUnavailableError

from ..limiters.test_waiting import queued, wait_until
from .conftest import ASYNC_KINDS, Endpoint, client_options, quick_retry
from .servers import DelayProxy, RedisServer, free_port

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

ALL: list[tuple[type[RateLimiter], dict[str, Any]]] = [
    (TokenBucket, {"rate": 10, "per": 1.0, "capacity": 5}),
    (LeakyBucket, {"rate": 10, "per": 1.0, "capacity": 5}),
    (FixedWindow, {"limit": 5, "window": 1.0}),
    (SlidingWindow, {"limit": 5, "window": 1.0}),
    (SlidingWindowLog, {"limit": 5, "window": 1.0}),
]
IDS = [cls.__name__ for cls, _ in ALL]
# The same limits over a minute: a key used up stays so for the length of a test
# (an aligned one-second window can end between two calls).
HELD = [(cls, {**options, **({"window": 60.0} if "window" in options else {"per": 60.0})})
        for cls, options in ALL]  # fmt: skip


def flush_scripts(endpoint: Endpoint) -> None:
    """SCRIPT FLUSH on every node of a server or a cluster."""
    nodes = getattr(endpoint.server, "nodes", None)
    urls = [node.url for node in nodes] if nodes else [endpoint.url]
    for url in urls:
        with redis.Redis.from_url(url, socket_timeout=2.0) as admin:
            admin.script_flush()


# -- L4: scripts survive SCRIPT FLUSH and a restart -----------------------------------


@pytest.mark.parametrize(("cls", "options"), HELD, ids=IDS)
def test_l4_acquire_survives_script_flush_sync(
    redis_endpoint: Endpoint,
    cluster_endpoint: Endpoint,
    sync_client: redis.Redis,
    cluster_client: Any,
    prefix: str,
    cls: type[RateLimiter],
    options: dict[str, Any],
) -> None:
    for endpoint, client in ((redis_endpoint, sync_client), (cluster_endpoint, cluster_client)):
        limiter = cls(**options, store=RedisStore(client, prefix=prefix))
        first = limiter.try_acquire("k")
        flush_scripts(endpoint)
        second = limiter.try_acquire("k")
        assert first.allowed
        # The state was kept: one unit less, or (a leaky bucket, no burst) still draining.
        if cls is LeakyBucket:
            assert not second.allowed
        else:
            assert second.remaining == first.remaining - 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("cls", "options"), HELD, ids=IDS)
async def test_l4_acquire_survives_script_flush_async(
    redis_endpoint: Endpoint,
    cluster_endpoint: Endpoint,
    async_client: redis.asyncio.Redis,
    async_cluster_client: Any,
    prefix: str,
    cls: type[RateLimiter],
    options: dict[str, Any],
) -> None:
    pairs = ((redis_endpoint, async_client), (cluster_endpoint, async_cluster_client))
    for endpoint, client in pairs:
        limiter = cls(**options, store=RedisStore(client, prefix=prefix))
        assert (await limiter.try_acquire_async("k")).allowed
        flush_scripts(endpoint)
        second = await limiter.try_acquire_async("k", 2)
        assert second.allowed != (cls is LeakyBucket)  # a leaky bucket is still draining


@pytest.fixture(scope="module")
def own_server() -> Iterator[RedisServer]:
    """A server of this module's own, to restart."""
    with RedisServer() as server:
        yield server


def test_l4_acquire_survives_a_restart_sync(own_server: RedisServer, prefix: str) -> None:
    with redis.Redis.from_url(own_server.url, **client_options()) as client:
        store = RedisStore(client, prefix=prefix)
        for cls, options in HELD:
            limiter = cls(**options, store=store)
            assert limiter.try_acquire("k", 5).allowed
            assert not limiter.try_acquire("k").allowed
            own_server.restart()
            # No exception; the state went with the server, so the key is fresh again.
            assert limiter.try_acquire("k", 5).allowed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_l4_acquire_survives_a_restart_async(own_server: RedisServer, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(own_server.url, **client_options(asynchronous=True))
    store = RedisStore(client, prefix=prefix)
    try:
        for cls, options in ALL:
            limiter = cls(**options, store=store)
            assert (await limiter.try_acquire_async("k", 5)).allowed
            own_server.restart()
            assert (await limiter.try_acquire_async("k", 5)).allowed
    finally:
        await client.aclose()


# -- L13: short windows still expire correctly ------------------------------------------


class Monitor:
    """Every command a server runs (MONITOR), read by a thread of its own.

    It returns once the server confirmed MONITOR, so no later command is
    missed, and `close` returns once a marker sent after the commands of the
    test came through, so none of them is missed either.
    """

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._sock = socket.create_connection(self._address, timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._data = bytearray()
        while not self._data.startswith(b"+OK\r\n"):
            chunk = self._sock.recv(65536)
            assert chunk, "the server closed the MONITOR connection"
            self._data += chunk
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := self._sock.recv(65536):
                self._data += chunk
        except OSError:  # closed by `close`
            pass

    def close(self) -> str:
        marker = f"monitor-end-{uuid.uuid4().hex}"
        host, port = self._address
        with redis.Redis(host=host, port=port, socket_timeout=2.0) as admin:
            admin.echo(marker)
        deadline = time.monotonic() + 5
        while marker.encode() not in self._data:
            assert time.monotonic() < deadline, "MONITOR never showed the end marker"
            time.sleep(0.005)
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        return self._data.decode(errors="replace")


def monitors(client: Any) -> list[Monitor]:
    """A MONITOR on every master the client talks to (one, or each of a cluster's)."""
    if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)):
        return [Monitor(node.host, node.port) for node in client.get_primaries()]
    options = client.connection_pool.connection_kwargs
    return [Monitor(options["host"], options["port"])]


EXPIRY = re.compile(r'"(?:PX|PEXPIRE"\s+"[^"]*|EX|EXPIRE"\s+"[^"]*)"\s+"(-?\d+)"', re.IGNORECASE)


def test_l13_token_bucket_with_a_short_window(sync_client: redis.Redis, prefix: str) -> None:
    [monitor] = monitors(sync_client)
    limiter = TokenBucket(
        rate=100, per=1.0, capacity=10, store=RedisStore(sync_client, prefix=prefix)
    )
    start = time.monotonic()
    admitted = sum(limiter.allow("k") for _ in range(500))
    elapsed = time.monotonic() - start
    log = monitor.close()
    # The bucket was never deleted by a zero expiry: about 10 + 100/s were admitted.
    assert abs(admitted - (10 + 100 * elapsed)) <= 3, (admitted, elapsed)
    expiries = [int(value) for value in EXPIRY.findall(log)]
    assert len(expiries) >= admitted
    assert min(expiries) > 0


# Case L13 for every algorithm: short windows (a TTL of a few ms, or below one
# near a window's end) and what each admits at most over `elapsed` seconds: a
# key deleted by an expiry <= 0 would start afresh and admit more.
SHORT: list[tuple[str, Callable[..., RateLimiter], Callable[[float], float]]] = [
    (
        "TokenBucket",
        lambda **kw: TokenBucket(rate=100, per=1.0, capacity=10, **kw),
        lambda elapsed: 10 + 100 * elapsed,
    ),
    (
        "LeakyBucket",
        lambda **kw: LeakyBucket(rate=100, per=1.0, capacity=10, **kw),
        lambda elapsed: 10 + 100 * elapsed,
    ),
    (
        "FixedWindow",
        lambda **kw: FixedWindow(limit=5, window=0.05, **kw),
        lambda elapsed: 5 * (elapsed / 0.05 + 2),  # aligned: a window begun before the start
    ),
    (
        "SlidingWindow",
        lambda **kw: SlidingWindow(limit=5, window=0.05, **kw),
        lambda elapsed: 5 * (elapsed / 0.05 + 2),  # the previous window counts in part
    ),
    (
        "SlidingWindowLog",
        lambda **kw: SlidingWindowLog(limit=5, window=0.05, **kw),
        lambda elapsed: 5 * (elapsed / 0.05 + 1),
    ),
    (
        "AllOf",
        lambda **kw: AllOf(
            TokenBucket(rate=100, per=1.0, capacity=10),
            FixedWindow(limit=8, window=0.05),
            SlidingWindowLog(limit=6, window=0.05),
            **kw,
        ),
        lambda elapsed: 6 * (elapsed / 0.05 + 1),
    ),
]
SHORT_IDS = [name for name, _, _ in SHORT]


@pytest.fixture
def client(kind: str, client_for: Callable[[str], Any]) -> Any:
    """The client of the parametrized ``kind``, got at setup, where async fixtures can run."""
    return client_for(kind)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kind", ["redis", "cluster", "redis-async", "cluster-async"])
@pytest.mark.parametrize(("name", "factory", "most"), SHORT, ids=SHORT_IDS)
async def test_l13_no_command_sets_an_expiry_of_zero_or_less(
    client: Any,
    prefix: str,
    kind: str,
    name: str,
    factory: Callable[..., RateLimiter],
    most: Callable[[float], float],
) -> None:
    limiter = factory(store=RedisStore(client, prefix=prefix))
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        await client.initialize()  # learn the nodes, to watch them all
    watching = monitors(client)
    start = time.monotonic()
    if kind in ASYNC_KINDS:
        admitted = sum([await limiter.allow_async("k") for _ in range(500)])
    else:
        admitted = sum(limiter.allow("k") for _ in range(500))
    elapsed = time.monotonic() - start
    log = "".join(monitor.close() for monitor in watching)
    assert 0 < admitted <= most(elapsed), (admitted, elapsed)
    expiries = [int(value) for value in EXPIRY.findall(log)]
    # Each admission writes every key of its limits, each with an expiry.
    assert len(expiries) >= admitted
    assert min(expiries) > 0


BOUNDS_US = {
    # Algorithm: longest TTL after an acquire, from its parameters in µs.
    TokenBucket: lambda o: o["capacity"] * math.ceil(o["per"] * 1e6 / o["rate"]),
    LeakyBucket: lambda o: o["capacity"] * math.ceil(o["per"] * 1e6 / o["rate"]),
    FixedWindow: lambda o: o["window"] * 1e6,
    SlidingWindow: lambda o: 2 * o["window"] * 1e6,
    SlidingWindowLog: lambda o: o["window"] * 1e6,
}


@pytest.mark.parametrize(("cls", "options"), ALL, ids=IDS)
def test_l13_every_key_written_has_a_bounded_ttl(
    sync_client: redis.Redis, prefix: str, cls: type[RateLimiter], options: dict[str, Any]
) -> None:
    limiter = cls(**options, store=RedisStore(sync_client, prefix=prefix))
    bound_ms = math.ceil(BOUNDS_US[cls](options) / 1000)
    for step in range(30):
        limiter.try_acquire(f"k{step % 3}", 1 + step % 2)
        keys = sync_client.keys(f"{prefix}*")
        assert keys
        for key in keys:
            ttl = sync_client.pttl(key)
            # -2: the key expired since KEYS listed it; 0: it expires within the
            # millisecond (a window ending now). -1 (no TTL) must never happen, and no
            # command sets an expiry <= 0 (the MONITOR test checks every write).
            assert ttl == -2 or 0 <= ttl <= bound_ms, (key, ttl, bound_ms)
        time.sleep(0.005)


# -- L9: processes share a limit ---------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys, time
    import redis
    from resilio import RateLimitExceeded
    from resilio import AllOf, SlidingWindowLog
    from resilio.redis import RedisStore

    url, prefix, start, until = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    client = redis.Redis.from_url(url, socket_timeout=2.0)
    limiter = AllOf(
        SlidingWindowLog(limit=2, window=0.05, name="per-tick"),
        SlidingWindowLog(limit=60, window=3.0, name="per-period"),
        store=RedisStore(client, prefix=prefix),
    )
    admitted = 0
    time.sleep(max(0.0, start - time.time()))  # every process starts together
    while time.time() < until:
        try:
            limiter.acquire("shared", timeout=0.2)   # waits, FIFO in this process
            admitted += 1
        except RateLimitExceeded:
            pass
        admitted += limiter.allow("shared")          # and hammers without waiting
    client.close()
    print(admitted)
    """
)


def test_l9_four_processes_never_over_admit(
    sync_client: redis.Redis, redis_endpoint: Endpoint, prefix: str
) -> None:
    # The case's 2/s and 60/min, 20 times faster: 2 per 50 ms and 60 per 3 s, run for
    # 2.8 s so that the 3 s log still holds every admission at the end. The run starts
    # once the four interpreters are surely up, so that each takes part.
    start = time.time() + 2.0
    until = start + 2.8
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_endpoint.url, prefix, str(start), str(until)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    counts = [int(worker.communicate(timeout=60)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert all(count > 0 for count in counts), counts
    # The long window's log holds every admission of the run, stamped by the server.
    key = f"{prefix}{{shared}}:per-period"
    entries = [int(value) for value in sync_client.lrange(key, 0, -1)]
    stamps: list[int] = []
    for stamp, cost in zip(entries[::2], entries[1::2], strict=True):
        stamps += [stamp] * cost
    assert sum(counts) == len(stamps) <= 60
    stamps.sort()
    for i, stamp in enumerate(stamps):
        in_tick = sum(1 for other in stamps[i:] if other < stamp + 50_000)
        in_period = sum(1 for other in stamps[i:] if other < stamp + 3_000_000)
        assert in_tick <= 2
        assert in_period <= 60


# -- L11: a slow Redis never blocks the event loop ----------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("flavour", ["async client", "sync client in worker threads"])
async def test_l11_a_slow_redis_does_not_block_the_loop(
    redis_endpoint: Endpoint, prefix: str, flavour: str
) -> None:
    port = redis_endpoint.url.rsplit(":", 1)[1].split("/")[0]
    with DelayProxy(int(port), delay=0.1) as proxy:  # 200 ms per round trip
        client: Any
        if flavour == "async client":
            client = redis.asyncio.Redis.from_url(proxy.url, **client_options(asynchronous=True))
        else:
            client = redis.Redis.from_url(proxy.url, **client_options())
        limiter = TokenBucket(rate=100, capacity=100, store=RedisStore(client, prefix=prefix))
        # Pay the one-time costs (worker threads, connections) before the clock starts.
        async with anyio.create_task_group() as warm_up:
            for _ in range(20):
                warm_up.start_soon(limiter.try_acquire_async, "warm-up")
        lags: list[float] = []
        done = anyio.Event()

        async def ticker() -> None:
            due = time.monotonic() + 0.01
            while not done.is_set():
                await anyio.sleep(max(0.0, due - time.monotonic()))
                lags.append(time.monotonic() - due)
                due = time.monotonic() + 0.01

        async def decide() -> None:
            assert (await limiter.try_acquire_async("k")).allowed

        start = time.monotonic()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ticker)
            async with anyio.create_task_group() as calls:
                for _ in range(20):
                    calls.start_soon(decide)
            done.set()
        elapsed = time.monotonic() - start
        if flavour == "async client":
            await client.aclose()
        else:
            client.close()
    assert elapsed >= 0.2  # the latency was really there
    assert len(lags) >= 10
    assert max(lags) < 0.02, max(lags)


# -- waiting on Redis: no spinning, no connection held, FIFO --------------------------------


def test_blocking_acquire_sleeps_without_a_connection_and_in_order(
    redis_endpoint: Endpoint, sync_client: redis.Redis, prefix: str
) -> None:
    pool = redis.BlockingConnectionPool.from_url(
        redis_endpoint.url, max_connections=1, timeout=0.05, socket_timeout=2.0
    )
    client = redis.Redis(connection_pool=pool)
    limiter = TokenBucket(rate=10, capacity=1, store=RedisStore(client, prefix=prefix))
    assert limiter.try_acquire("k").allowed
    before = sum(
        int(stats.get("calls", 0))
        for name, stats in sync_client.info("commandstats").items()
        if name in ("cmdstat_evalsha", "cmdstat_eval")
    )
    order: list[int] = []

    def waiter(number: int) -> None:
        limiter.acquire("k", timeout=5.0)
        order.append(number)

    threads = []
    for number in range(4):
        thread = threading.Thread(target=waiter, args=(number,))
        thread.start()
        threads.append(thread)
        time.sleep(0.01)  # arrive in order
    # While they wait, the only connection of the pool is free: nobody holds it.
    assert client.ping()
    for thread in threads:
        thread.join(5)
    after = sum(
        int(stats.get("calls", 0))
        for name, stats in sync_client.info("commandstats").items()
        if name in ("cmdstat_evalsha", "cmdstat_eval")
    )
    client.close()
    assert order == [0, 1, 2, 3]
    # One try on arrival and about one per admission: sleeping, not polling.
    assert after - before <= 4 * 3, after - before


async def script_calls(client: Any) -> int:
    """EVALSHA and EVAL calls the server (every master of a cluster) has run so far."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        by_node = await client.info(
            "commandstats", target_nodes=redis.asyncio.cluster.RedisCluster.PRIMARIES
        )
        infos = list(by_node.values())
    else:
        infos = [await client.info("commandstats")]
    return sum(
        int(stats.get("calls", 0))
        for info in infos
        for name, stats in info.items()
        if name in ("cmdstat_evalsha", "cmdstat_eval")
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kind", ["redis-async", "cluster-async"])
async def test_async_blocking_acquire_sleeps_without_a_connection_and_in_order(
    redis_endpoint: Endpoint,
    cluster_endpoint: Endpoint,
    client: Any,
    prefix: str,
    kind: str,
) -> None:
    """Async waiters on a client with one connection (per node): it stays free while they sleep."""
    admin = client  # counts the scripts run, on connections of its own
    single: Any
    if kind == "redis-async":
        # A caller finding the one connection taken waits for it up to 0.1 s, half a sleep.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            redis_endpoint.url, max_connections=1, timeout=0.1, socket_timeout=2.0
        )
        single = redis.asyncio.Redis.from_pool(pool)  # which aclose() then closes
    else:
        # One connection per node; a caller finding it taken fails at once.
        single = redis.asyncio.cluster.RedisCluster.from_url(
            cluster_endpoint.url, max_connections=1, **client_options(asynchronous=True)
        )
    limiter = TokenBucket(rate=5, capacity=1, store=RedisStore(single, prefix=prefix))
    probe_key = f"{prefix}{{k}}:probe"  # the slot, so the node, of the limiter's key

    async def probe() -> None:
        # A round trip of the limiter may be on the wire for a moment: try again
        # for 50 ms, a quarter of the sleep that a held connection would block.
        for _ in range(5):
            try:
                await single.exists(probe_key)
                return
            except redis.exceptions.MaxConnectionsError:
                await anyio.sleep(0.01)
        pytest.fail("the only connection stayed taken while the waiters slept")

    try:
        start = time.monotonic()
        assert (await limiter.try_acquire_async("k")).allowed  # and the script is cached
        before = await script_calls(admin)
        order: list[int] = []

        async def waiter(number: int) -> None:
            await limiter.acquire_async("k", timeout=5.0)
            order.append(number)

        async with anyio.create_task_group() as tasks:
            for number in range(4):
                tasks.start_soon(waiter, number)
                # Arrive in order: each one is in line (or through) before the next starts.
                await wait_until(lambda: len(order) + queued(limiter) == number + 1)  # noqa: B023
            # While they wait, the only connection is free: nobody holds it.
            await probe()
        elapsed = time.monotonic() - start
        after = await script_calls(admin)
    finally:
        await single.aclose()
    assert order == [0, 1, 2, 3]
    assert elapsed >= 4 * 0.2 - 0.01  # one token per 200 ms: they really waited
    # For each waiter one try on arrival, one as the head and one after its sleep:
    # sleeping, not polling.
    assert 4 * 2 <= after - before <= 4 * 3, after - before


# -- the failure policy --------------------------------------------------------------------


def dead_client(**options: Any) -> redis.Redis:
    """A client of a port nobody listens on."""
    return redis.Redis(port=free_port(), socket_timeout=0.2, retry=quick_retry(0), **options)


def test_fail_closed_raises_a_resilio_error_that_wraps_the_cause() -> None:
    with dead_client() as client:
        limiter = TokenBucket(rate=1, store=RedisStore(client, recovery_time=60.0))
        with pytest.raises(RedisUnavailableError) as caught:
            limiter.try_acquire("k")
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        # Within recovery_time the store does not even try: it fails at once.
        start = time.monotonic()
        for call in (limiter.try_acquire, limiter.peek, limiter.reset):
            with pytest.raises(RedisUnavailableError):
                call("k")
        assert time.monotonic() - start < 0.05


def test_fail_open_admits_everything() -> None:
    with dead_client() as client:
        limiter = TokenBucket(rate=1, capacity=2, store=RedisStore(client, on_error="open"))
        decisions = [limiter.try_acquire("k") for _ in range(5)]
        assert all(decision.allowed for decision in decisions)
        assert decisions[0].remaining == 1
        limiter.reset("k")


def test_fail_local_limits_in_memory() -> None:
    with dead_client() as client:
        limiter = TokenBucket(
            rate=1, per=60.0, capacity=2, store=RedisStore(client, on_error="local")
        )
        assert [limiter.allow("k") for _ in range(4)] == [True, True, False, False]
        limiter.reset("k")
        assert limiter.allow("k")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_fail_policies_on_an_async_client() -> None:
    client = redis.asyncio.Redis(
        port=free_port(), socket_timeout=0.2, retry=quick_retry(0, asynchronous=True)
    )
    try:
        closed = TokenBucket(rate=1, store=RedisStore(client))
        with pytest.raises(RedisUnavailableError):
            await closed.try_acquire_async("k")
        local = TokenBucket(rate=1, capacity=1, store=RedisStore(client, on_error="local"))
        assert [await local.allow_async("k") for _ in range(2)] == [True, False]
        opened = TokenBucket(rate=1, capacity=1, store=RedisStore(client, on_error="open"))
        assert all([await opened.allow_async("k") for _ in range(3)])
    finally:
        await client.aclose()


def test_a_frozen_redis_costs_one_timeout_then_recovers(
    own_server: RedisServer, prefix: str
) -> None:
    with redis.Redis.from_url(own_server.url, socket_timeout=0.2, retry=quick_retry(0)) as client:
        store = RedisStore(client, prefix=prefix, on_error="local", recovery_time=0.3)
        # A bucket that refills a unit every 36 s: no window boundary to cross mid-test.
        limiter = TokenBucket(rate=100, per=3600.0, capacity=100, store=store)
        assert limiter.try_acquire("k").allowed
        with own_server.paused():
            start = time.monotonic()
            assert limiter.try_acquire("k").allowed  # decided locally after the timeout
            assert time.monotonic() - start < 0.5
            start = time.monotonic()
            assert limiter.try_acquire("k").allowed  # Redis is not asked again for a while
            assert time.monotonic() - start < 0.15  # well below one 0.2 s timeout
        time.sleep(0.35)
        decision = limiter.try_acquire("k")  # back on Redis, which kept counting
        assert decision.allowed
        # The request that timed out had reached the frozen server, which may run it on
        # waking (when it reads the bytes before it sees the closed connection): a
        # timed-out decision may count, the documented limiting side. The local one never does.
        assert decision.remaining in (100 - 3, 100 - 2)
