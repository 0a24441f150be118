"""A breaker shared through Redis: names, keys, processes, leases, round trips, outages.

These run on the Redis server's clock (the default ``time_source``), with
real, short durations, and several breaker instances or processes that share
nothing but the store.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis.cluster
from redis.crc import key_slot

import resilio
from resilio import CircuitBreaker, CircuitOpenError, CircuitState
from resilio._redis_breaker import RedisCircuitBreaker, breaker_keys
from resilio.redis import RedisStore, RedisUnavailableError

from .conftest import Endpoint, quick_retry
from .servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]


class Boom(Exception):
    """The failure the tests' dependency raises."""


def failing() -> None:
    raise Boom


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            breaker.call(failing)


def script_calls(client: redis.Redis) -> int:
    """How many scripts the server has run (EVALSHA and EVAL)."""
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


# -- names and keys -------------------------------------------------------------------


def test_names_separate_breakers(sync_client: redis.Redis, prefix: str) -> None:
    """B4: default settings; opening one leaves the other closed; keys from name and prefix."""
    store = RedisStore(sync_client, prefix=prefix)
    payments = CircuitBreaker(name="payments", store=store)
    search = CircuitBreaker(name="search", store=store)
    fail(payments, 5)
    assert payments.state is CircuitState.OPEN
    assert search.state is CircuitState.CLOSED
    assert search.call(lambda: "ok") == "ok"
    with pytest.raises(CircuitOpenError):
        payments.call(lambda: "ok")

    keys = {key.decode() for key in sync_client.scan_iter(match=f"{prefix}*")}
    assert f"{prefix}breaker:{{payments}}" in keys
    assert keys <= set(breaker_keys(prefix, "payments")) | set(breaker_keys(prefix, "search"))
    assert isinstance(payments, RedisCircuitBreaker)
    assert payments.keys == breaker_keys(prefix, "payments")
    for key in keys:
        assert sync_client.pttl(key) > 0, key  # every key has a TTL


def test_same_name_on_another_prefix_is_another_breaker(
    sync_client: redis.Redis, prefix: str
) -> None:
    one = CircuitBreaker(name="payments", store=RedisStore(sync_client, prefix=prefix + "a:"))
    two = CircuitBreaker(name="payments", store=RedisStore(sync_client, prefix=prefix + "b:"))
    fail(one, 5)
    assert one.state is CircuitState.OPEN
    assert two.state is CircuitState.CLOSED


def test_cluster_keys_of_one_breaker_share_a_slot(
    cluster_client: redis.cluster.RedisCluster, prefix: str
) -> None:
    store = RedisStore(cluster_client, prefix=prefix)
    breaker = CircuitBreaker(
        name="odd {name}", store=store, failure_rate=0.5, window=4, minimum_calls=2
    )
    fail(breaker, 2)
    assert breaker.state is CircuitState.OPEN
    keys = breaker_keys(prefix, "odd {name}")
    slots = {key_slot(key.encode()) for key in keys}
    assert len(slots) == 1
    assert cluster_client.exists(*keys) >= 2  # state and window were written


def test_a_shared_breaker_needs_a_name_and_a_redis_store(
    sync_client: redis.Redis, prefix: str
) -> None:
    with pytest.raises(TypeError, match="name="):
        CircuitBreaker(store=RedisStore(sync_client, prefix=prefix))
    with pytest.raises(TypeError, match="RedisStore"):
        CircuitBreaker(name="x", store=object())
    memory = CircuitBreaker(name="x", store=resilio.stores.MemoryStore())
    assert not isinstance(memory, RedisCircuitBreaker)


# -- instances and processes ------------------------------------------------------------


def test_a_new_instance_never_resets_counts_or_restamps_the_open_time(
    sync_client: redis.Redis, prefix: str
) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    first = CircuitBreaker(name="shared", store=store, failure_threshold=3, recovery_time=5.0)
    fail(first, 2)
    second = CircuitBreaker(name="shared", store=store, failure_threshold=3, recovery_time=5.0)
    fail(second)  # the third failure, wherever it happens, opens the shared breaker
    assert first.state is CircuitState.OPEN
    time.sleep(0.3)
    third = CircuitBreaker(name="shared", store=store, failure_threshold=3, recovery_time=5.0)
    assert third.state is CircuitState.OPEN
    assert third.retry_after <= 4.8  # the open period started at the trip, not at joining


CHILD = textwrap.dedent(
    """
    import os, sys, time
    import redis, resilio
    from resilio.redis import RedisStore

    url, prefix, action, recovery_time = sys.argv[1:5]
    client = redis.Redis.from_url(url, socket_timeout=2.0)
    breaker = resilio.CircuitBreaker(
        "shared", store=RedisStore(client, prefix=prefix),
        failure_threshold=3, recovery_time=float(recovery_time), half_open_timeout=1.0,
    )

    def boom():
        raise ValueError("down")

    if action == "fail":
        try:
            breaker.call(boom)
        except ValueError:
            print("failed")
    elif action == "call":
        try:
            print(breaker.call(lambda: "ran"))
        except resilio.CircuitOpenError as error:
            print("rejected", error.state.value)
    elif action == "crash-while-probing":
        with breaker:
            print("probing", flush=True)
            os._exit(3)  # dies holding the probe slot
    """
)


def child(url: str, prefix: str, action: str, recovery_time: float = 30.0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, prefix, action, str(recovery_time)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def outputs(*processes: subprocess.Popen[str]) -> list[str]:
    results = []
    for process in processes:
        out, err = process.communicate(timeout=30)
        assert not err.strip() or process.returncode == 3, err
        results.append(out.strip())
    return results


def test_processes_share_one_breaker(
    redis_endpoint: Endpoint, sync_client: redis.Redis, prefix: str
) -> None:
    """Three processes each fail once: together they open the breaker for all."""
    url = redis_endpoint.url
    assert outputs(*(child(url, prefix, "fail") for _ in range(3))) == ["failed"] * 3
    here = CircuitBreaker(
        "shared", store=RedisStore(sync_client, prefix=prefix), failure_threshold=3
    )
    assert here.state is CircuitState.OPEN
    assert outputs(child(url, prefix, "call")) == ["rejected open"]


def test_a_crashed_prober_never_wedges_the_breaker(
    redis_endpoint: Endpoint, sync_client: redis.Redis, prefix: str
) -> None:
    """The probe slot is a lease: when its holder dies, the lease ends and probing resumes."""
    store = RedisStore(sync_client, prefix=prefix)
    here = CircuitBreaker(
        "shared", store=store, failure_threshold=3, recovery_time=0.3, half_open_timeout=0.3
    )
    fail(here, 3)
    time.sleep(0.35)
    crash = child(redis_endpoint.url, prefix, "crash-while-probing", recovery_time=0.3)
    assert outputs(crash) == ["probing"]
    with pytest.raises(CircuitOpenError) as info:
        here.call(lambda: "ok")
    assert info.value.state is CircuitState.HALF_OPEN  # the dead process holds the slot
    deadline = time.monotonic() + 5.0
    while True:  # the lease ends, the breaker re-opens, then admits a fresh probe
        try:
            assert here.call(lambda: "ok") == "ok"
            break
        except CircuitOpenError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert here.state is CircuitState.CLOSED


def test_instances_in_threads_admit_one_probe_in_all(sync_client: redis.Redis, prefix: str) -> None:
    """B6 across instances: 10 breakers sharing a name, 10 concurrent slow calls, 1 probe."""
    store = RedisStore(sync_client, prefix=prefix)

    def make() -> CircuitBreaker:
        return CircuitBreaker(
            "shared", store=store, failure_threshold=1, recovery_time=0.2, half_open_timeout=5.0
        )

    fail(make())
    time.sleep(0.25)
    ran: list[int] = []
    rejected: list[CircuitOpenError] = []
    barrier = threading.Barrier(10)

    def slow() -> None:
        ran.append(1)
        time.sleep(0.2)

    def probe(breaker: CircuitBreaker) -> None:
        barrier.wait()
        try:
            breaker.call(slow)
        except CircuitOpenError as error:
            rejected.append(error)

    threads = [threading.Thread(target=probe, args=(make(),)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ran) == 1
    assert len(rejected) == 9
    assert all(error.retry_after > 0 for error in rejected)
    assert make().state is CircuitState.CLOSED


# -- round trips ------------------------------------------------------------------------


def test_round_trips_per_call(sync_client: redis.Redis, prefix: str) -> None:
    """One per healthy call, two per failure, none while the breaker is known to be open."""
    breaker = CircuitBreaker(
        "trips", store=RedisStore(sync_client, prefix=prefix), recovery_time=30.0
    )
    before = script_calls(sync_client)
    for _ in range(100):
        breaker.call(lambda: "ok")
    healthy = script_calls(sync_client) - before
    fail(breaker, 5)
    failed = script_calls(sync_client) - before - healthy
    for _ in range(100):
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: "ok")
    while_open = script_calls(sync_client) - before - healthy - failed
    assert (healthy, failed, while_open) == (100, 10, 0)


def test_other_processes_see_a_reset_after_the_known_open_period(
    sync_client: redis.Redis, prefix: str
) -> None:
    """The trade-off of caching OPEN: a reset elsewhere is seen when the period ends."""
    store = RedisStore(sync_client, prefix=prefix)
    here = CircuitBreaker("cached", store=store, failure_threshold=1, recovery_time=0.3)
    there = CircuitBreaker("cached", store=store, failure_threshold=1, recovery_time=0.3)
    fail(here)
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "ok")
    there.reset()
    assert there.call(lambda: "ok") == "ok"
    with pytest.raises(CircuitOpenError):
        here.call(lambda: "ok")  # still remembered as open
    time.sleep(0.3)
    assert here.call(lambda: "ok") == "ok"


# -- async clients accept only the async forms ------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_async_store_rejects_the_sync_forms(
    async_client: redis.asyncio.Redis, prefix: str
) -> None:
    breaker = CircuitBreaker("async-only", store=RedisStore(async_client, prefix=prefix))
    with pytest.raises(TypeError, match="async def"):

        @breaker
        def sync_function() -> None: ...

    with pytest.raises(TypeError, match="async with"), breaker:
        pass
    with pytest.raises(TypeError, match="state_async"):
        _ = breaker.state
    with pytest.raises(TypeError, match="isolate_async"):
        breaker.isolate()
    with pytest.raises(TypeError, match="async def"):
        breaker.call(lambda: None)

    @breaker
    async def async_function() -> str:
        return "ok"

    assert await async_function() == "ok"
    async with breaker:
        pass
    assert await breaker.state_async() is CircuitState.CLOSED


# -- when Redis fails ---------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of this test's own, to pause and restart."""
    with RedisServer() as server:
        yield server


def quick_client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, socket_timeout=0.2, retry=quick_retry(0))


def test_fails_closed_by_default(own_server: RedisServer) -> None:
    client = quick_client(own_server)
    breaker = CircuitBreaker("p", store=RedisStore(client, recovery_time=0.2))
    ran: list[int] = []
    with own_server.paused(), pytest.raises(RedisUnavailableError) as info:
        breaker.call(lambda: ran.append(1))
    assert ran == []
    assert isinstance(info.value.__cause__, redis.exceptions.RedisError)
    time.sleep(0.2)
    assert breaker.call(lambda: "ok") == "ok"  # Redis is back: used again
    client.close()


def test_fails_open_runs_calls_and_counts_nothing(own_server: RedisServer) -> None:
    client = quick_client(own_server)
    breaker = CircuitBreaker(
        "p", store=RedisStore(client, on_error="open", recovery_time=0.1), failure_threshold=2
    )
    with own_server.paused():
        fail(breaker, 4)
        assert breaker.call(lambda: "ok") == "ok"
    time.sleep(0.1)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker)  # the failures during the outage were not counted
    assert breaker.state is CircuitState.CLOSED
    client.close()


def test_falls_back_to_a_local_breaker(own_server: RedisServer) -> None:
    client = quick_client(own_server)
    breaker = CircuitBreaker(
        "p",
        store=RedisStore(client, on_error="local", recovery_time=0.3),
        failure_threshold=2,
        recovery_time=30.0,
    )
    with own_server.paused():
        fail(breaker, 2)  # counted by this process's own breaker, which opens
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: "ok")
    time.sleep(0.3)
    assert breaker.call(lambda: "ok") == "ok"  # Redis is back and its breaker is closed
    assert breaker.state is CircuitState.CLOSED
    client.close()


def test_survives_a_restart_and_a_script_flush(own_server: RedisServer) -> None:
    client = redis.Redis(host=own_server.host, port=own_server.port, socket_timeout=2.0)
    breaker = CircuitBreaker("p", store=RedisStore(client), failure_threshold=2)
    fail(breaker)
    client.script_flush()
    fail(breaker)
    assert breaker.state is CircuitState.OPEN
    own_server.restart()  # state and scripts are gone: the breaker starts closed again
    assert breaker.state.value == "closed"  # asks Redis, which forgets the open period
    assert breaker.call(lambda: "ok") == "ok"
    client.close()


def test_isolate_says_when_it_could_not_take_effect(own_server: RedisServer) -> None:
    client = quick_client(own_server)
    breaker = CircuitBreaker("p", store=RedisStore(client, on_error="open"))
    with own_server.paused(), pytest.raises(RedisUnavailableError):
        breaker.isolate()
    breaker.isolate()
    assert breaker.state is CircuitState.ISOLATED
    client.close()


def test_exactly_one_transition_under_contention(sync_client: redis.Redis, prefix: str) -> None:
    """B5 on Redis: 50 threads fail at once, threshold 10: one CLOSED -> OPEN, 10 failures."""
    events: list[resilio.Event] = []
    breaker = CircuitBreaker(
        "contended",
        store=RedisStore(sync_client, prefix=prefix),
        failure_threshold=10,
        listeners=[events.append],
    )
    barrier = threading.Barrier(50)

    def hammer() -> None:
        barrier.wait()
        for _ in range(5):
            with contextlib.suppress(Boom, CircuitOpenError):
                breaker.call(failing)

    threads = [threading.Thread(target=hammer) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kinds = [event.kind for event in events]
    opened = [e for e in events if e.kind is resilio.EventKind.BREAKER_STATE_CHANGED]
    assert [(e.previous_state, e.state) for e in opened] == [
        (CircuitState.CLOSED, CircuitState.OPEN)
    ]
    assert kinds.count(resilio.EventKind.BREAKER_FAILURE) == 10
    assert breaker.state is CircuitState.OPEN
