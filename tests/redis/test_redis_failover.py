"""Limiters and breakers on Redis through a failover: Cluster (manual and crash) and Sentinel.

Every test starts servers of its own (3 masters with a replica each, or a
master, a replica and three sentinels), fails one over, and checks what the
deployment guide promises: decisions go on on the new master, which has never
seen the script (the NOSCRIPT reload is invisible); a failover that loses no
writes loses no count, so a limit holds exactly; and while a crashed master
is not yet replaced, a store that fails closed raises `RedisUnavailableError`
within the client's timeouts instead of hanging.

Under Sentinel the same is checked with the configuration the guide advises
(``min-replicas-to-write``): a forced failover leaves the old master running
for about ten seconds before the sentinels demote it, and without that guard
it would go on deciding, unseen by the new master. With it, the old master
answers NOREPLICAS, an outage to the store, which then asks the sentinels
for the new master.

The limits refill one token an hour, so that nothing refills during a test
and "exactly the capacity was admitted" is the whole check.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.sentinel
from redis.crc import key_slot

from resilio import CircuitBreaker, CircuitOpenError, CircuitState, TokenBucket
from resilio._redis_breaker import breaker_keys
from resilio.redis import RedisStore, RedisUnavailableError

from .conftest import client_options, quick_retry
from .servers import RedisCluster, RedisSentinel, RedisServer, wait_in_sync

pytestmark = pytest.mark.anyio

CAPACITY = 20
KEY = "user:42"
SLOT = key_slot(KEY.encode())  # the user key is the hash tag of every key of its limits
NODE_TIMEOUT = 1.0  # seconds: a crashed master is replaced about a second or two later
DEADLINE = 20.0  # seconds any failover may take here, on a loaded machine


def hour_bucket(store: RedisStore, name: str, capacity: int = CAPACITY) -> TokenBucket:
    """A bucket of ``capacity`` that refills one token an hour: nothing refills in a test."""
    return TokenBucket(rate=1, per=3600.0, capacity=capacity, store=store, name=name)


def noscript_replies(server: RedisServer) -> int:
    """How many NOSCRIPT errors ``server`` has answered (the store then sent EVAL)."""
    with server.admin() as client:
        stats = client.info("errorstats")
    return int(stats.get("errorstat_NOSCRIPT", {}).get("count", 0))


def wait_for(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Wait until ``condition()`` holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.005)


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    """Three masters with one replica each, of this test's own."""
    with RedisCluster(replicas=1, node_timeout=NODE_TIMEOUT) as started:
        yield started


# -- Cluster: a manual failover loses nothing -----------------------------------------


def test_cluster_manual_failover_keeps_every_count_sync(cluster: RedisCluster, prefix: str) -> None:
    master = cluster.owner(SLOT)
    replica = cluster.replica_of(master)
    with redis.cluster.RedisCluster.from_url(cluster.url, **client_options()) as client:
        store = RedisStore(client, prefix=prefix)
        limit = hour_bucket(store, "limit")
        busy = hour_bucket(store, "busy", capacity=10_000)  # same slot: same user key
        assert all(limit.allow(KEY) for _ in range(CAPACITY // 2))

        # A thread decides without pause from before the failover until after it.
        admitted: list[bool] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                try:
                    admitted.append(busy.allow(KEY))
                except Exception as error:  # any error fails the test below
                    errors.append(error)

        worker = threading.Thread(target=run)
        worker.start()
        try:
            wait_for(lambda: len(admitted) >= 20)
            cluster.failover(replica)
            after = len(admitted)
            wait_for(lambda: len(admitted) >= after + 20)  # and goes on after it
        finally:
            stop.set()
            worker.join(DEADLINE)
        assert cluster.owner(SLOT) is replica
        assert errors == []
        assert all(admitted)

        # Every admission made before, during and after the failover is on record.
        assert busy.peek(KEY).remaining == 10_000 - len(admitted) - 1  # peek: after one more
        decisions = [limit.try_acquire(KEY) for _ in range(CAPACITY)]
        assert sum(decision.allowed for decision in decisions) == CAPACITY // 2
        assert noscript_replies(replica) >= 1  # it had no script: reloaded, invisibly


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cluster_manual_failover_keeps_every_count_async(
    cluster: RedisCluster, prefix: str
) -> None:
    master = cluster.owner(SLOT)
    replica = cluster.replica_of(master)
    client = redis.asyncio.cluster.RedisCluster.from_url(
        cluster.url, **client_options(asynchronous=True)
    )
    try:
        store = RedisStore(client, prefix=prefix)
        limit = hour_bucket(store, "limit")
        busy = hour_bucket(store, "busy", capacity=10_000)
        for _ in range(CAPACITY // 2):
            assert await limit.allow_async(KEY)

        # Five tasks decide without pause through the failover (batched in pipelines).
        admitted: list[bool] = []
        errors: list[BaseException] = []
        stop = anyio.Event()
        milestones: dict[int, anyio.Event] = {20: anyio.Event()}

        async def run() -> None:
            while not stop.is_set():
                try:
                    admitted.append(await busy.allow_async(KEY))
                except Exception as error:  # any error fails the test below
                    errors.append(error)
                for count, reached in list(milestones.items()):
                    if len(admitted) >= count:
                        reached.set()

        async def decisions(count: int) -> None:
            milestones.setdefault(count, anyio.Event())
            with anyio.fail_after(DEADLINE):
                await milestones[count].wait()

        async with anyio.create_task_group() as tasks:
            for _ in range(5):
                tasks.start_soon(run)
            await decisions(20)
            await anyio.to_thread.run_sync(cluster.failover, replica)
            await decisions(len(admitted) + 20)  # and they go on after it
            stop.set()
        assert cluster.owner(SLOT) is replica
        assert errors == []
        assert all(admitted)

        assert (await busy.peek_async(KEY)).remaining == 10_000 - len(admitted) - 1
        allowed = [(await limit.try_acquire_async(KEY)).allowed for _ in range(CAPACITY)]
        assert sum(allowed) == CAPACITY // 2
        assert noscript_replies(replica) >= 1
    finally:
        await client.aclose()


def test_cluster_breaker_stays_open_through_a_manual_failover(
    cluster: RedisCluster, prefix: str
) -> None:
    slot = key_slot(breaker_keys(prefix, "payments")[0].encode())
    replica = cluster.replica_of(cluster.owner(slot))
    with redis.cluster.RedisCluster.from_url(cluster.url, **client_options()) as client:
        breaker = CircuitBreaker(
            "payments", store=RedisStore(client, prefix=prefix), failure_threshold=2,
            recovery_time=60.0,
        )  # fmt: skip
        for _ in range(2):
            with pytest.raises(ZeroDivisionError):
                breaker.call(lambda: 1 / 0)
        assert breaker.state is CircuitState.OPEN

        cluster.failover(replica)
        assert cluster.owner(slot) is replica

    # A process that starts after the failover sees the open breaker on the new master.
    with redis.cluster.RedisCluster.from_url(cluster.url, **client_options()) as client:
        joined = CircuitBreaker(
            "payments", store=RedisStore(client, prefix=prefix), failure_threshold=2,
            recovery_time=60.0,
        )  # fmt: skip
        assert joined.state is CircuitState.OPEN
        assert 50.0 < joined.retry_after <= 60.0
        ran: list[int] = []
        with pytest.raises(CircuitOpenError):
            joined.call(lambda: ran.append(1))
        assert ran == []
    assert noscript_replies(replica) >= 1


# -- Cluster: a crashed master ----------------------------------------------------------


def quick_options(*, asynchronous: bool = False) -> dict[str, Any]:
    """The deployment guide's settings: short timeouts, one quick retry."""
    return {
        "socket_timeout": 0.25,
        "socket_connect_timeout": 0.25,
        "retry": quick_retry(asynchronous=asynchronous),
    }


#: The longest one decision may take while the master is dead: a few of the client's
#: connect and read timeouts (retries, a refresh of the slot map), far from a hang.
OUTAGE_CALL_BOUND = 3.0


@contextlib.contextmanager
def master_down(server: RedisServer, how: str) -> Iterator[None]:
    """Crash the server for good ("kill"), or freeze it for the block ("freeze").

    A killed process closes its port: connecting is refused at once. A frozen one
    (a hung host, a network partition) accepts nothing and answers nothing, so every
    attempt costs the client its full timeout.
    """
    if how == "kill":
        server.kill()
        yield
    else:
        with server.paused():
            yield


DOWN = pytest.mark.parametrize("how", ["kill", "freeze"])


@DOWN
def test_cluster_master_down_fails_closed_quickly_then_the_replica_decides(
    cluster: RedisCluster, prefix: str, how: str
) -> None:
    master = cluster.owner(SLOT)
    replica = cluster.replica_of(master)
    with redis.cluster.RedisCluster.from_url(cluster.url, **quick_options()) as client:
        store = RedisStore(client, prefix=prefix, recovery_time=0.05)  # on_error="closed"
        limit = hour_bucket(store, "limit")
        assert all(limit.allow(KEY) for _ in range(CAPACITY // 2))
        # Replication is asynchronous: only writes the replica has are sure to survive a
        # crash. Wait for them here, so the count below is exact; without the wait, the
        # last admissions before the crash could be lost, and admitted again later.
        wait_in_sync(master, replica)

        with master_down(master, how):
            down = time.monotonic()
            outage: list[float] = []  # how long each refused decision took
            causes: list[BaseException | None] = []
            while True:
                start = time.monotonic()
                try:
                    decision = limit.try_acquire(KEY)
                    break
                except RedisUnavailableError as error:
                    outage.append(time.monotonic() - start)
                    causes.append(error.__cause__)
                assert time.monotonic() - down < DEADLINE, "the replica never took over"
                time.sleep(0.01)
            recovered = time.monotonic() - down

    assert outage, "a decision succeeded with the slot's master down and not yet replaced"
    assert all(isinstance(cause, redis.RedisError | OSError) for cause in causes)
    assert max(outage) < OUTAGE_CALL_BOUND, outage
    assert recovered >= NODE_TIMEOUT  # the cluster needs that long to call the master failed
    # As the promoted replica sees it: another node's view may lag by a gossip round.
    assert cluster.owner(SLOT, seen_by=replica) is replica
    assert decision.allowed
    assert decision.remaining == CAPACITY // 2 - 1  # the replicated count survived
    # Back to normal: the old master, which serves no slot now, is not kept as down.
    assert store._down_nodes == {}
    assert store._last_error is None


@DOWN
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cluster_master_down_fails_closed_quickly_async(
    cluster: RedisCluster, prefix: str, how: str
) -> None:
    master = cluster.owner(SLOT)
    replica = cluster.replica_of(master)
    client = redis.asyncio.cluster.RedisCluster.from_url(
        cluster.url, **quick_options(asynchronous=True)
    )
    try:
        store = RedisStore(client, prefix=prefix, recovery_time=0.05)
        limit = hour_bucket(store, "limit")
        for _ in range(CAPACITY // 2):
            assert await limit.allow_async(KEY)
        wait_in_sync(master, replica)

        with master_down(master, how):
            down = time.monotonic()
            outage: list[float] = []
            while True:
                start = time.monotonic()
                try:
                    with anyio.fail_after(DEADLINE):  # a hang fails here, not in CI's timeout
                        decision = await limit.try_acquire_async(KEY)
                    break
                except RedisUnavailableError:
                    outage.append(time.monotonic() - start)
                assert time.monotonic() - down < DEADLINE, "the replica never took over"
                await anyio.sleep(0.01)
    finally:
        await client.aclose()
    assert outage
    assert max(outage) < OUTAGE_CALL_BOUND, outage
    # As the promoted replica sees it: another node's view may lag by a gossip round.
    assert cluster.owner(SLOT, seen_by=replica) is replica
    assert decision.allowed
    assert decision.remaining == CAPACITY // 2 - 1
    assert store._down_nodes == {}
    assert store._last_error is None


def test_a_node_that_serves_nothing_after_a_failover_is_not_kept_down(
    cluster: RedisCluster, prefix: str
) -> None:
    """The store forgets a failed node once its time is up, even if it is never asked again."""
    master = cluster.owner(SLOT)
    replica = cluster.replica_of(master)
    with redis.cluster.RedisCluster.from_url(cluster.url, **quick_options()) as client:
        store = RedisStore(client, prefix=prefix, recovery_time=0.2)
        limit = hour_bucket(store, "limit")
        assert limit.allow(KEY)
        with master.paused():
            with pytest.raises(RedisUnavailableError):
                limit.allow(KEY)
            assert list(store._down_nodes) == [f"{master.host}:{master.port}"]
            # The frozen master is replaced (as the replica sees it: the master cannot say).
            wait_for(lambda: _owner_seen_by(cluster, replica) is replica)
            # Other code on the client meets the new map first (a MOVED): the store
            # never asks about the old master again.
            wait_for(lambda: _answers(client, f"{prefix}{{{KEY}}}:other"))
            time.sleep(0.25)  # past recovery_time: the old master's mark is spent
            assert limit.allow(KEY)
            assert store._down_nodes == {}
            assert store._last_error is None


def _owner_seen_by(cluster: RedisCluster, node: RedisServer) -> RedisServer | None:
    try:
        return cluster.owner(SLOT, seen_by=node)
    except (LookupError, redis.RedisError):
        return None


def _answers(client: redis.cluster.RedisCluster, key: str) -> bool:
    try:
        client.get(key)
    except redis.RedisError:
        return False
    return True


# -- Sentinel ---------------------------------------------------------------------------


@pytest.fixture
def sentinel_group() -> Iterator[RedisSentinel]:
    """A master, its replica and three sentinels, of this test's own, guarded as advised.

    ``min-replicas-to-write 1``, as many as there are replicas: a master that
    its replica does not follow refuses writes. The old master stops deciding
    as soon as its replica is promoted, instead of deciding, unseen, until the
    sentinels demote it (about ten seconds); the new master takes writes once
    the old one follows it.
    """
    with RedisSentinel(
        sentinels=3, replicas=1, min_replicas_to_write=1, down_after=1.0, failover_timeout=5.0
    ) as started:
        yield started


def test_sentinel_failover_resumes_on_the_new_master_without_over_admitting(
    sentinel_group: RedisSentinel, prefix: str
) -> None:
    sentinel = redis.sentinel.Sentinel(
        sentinel_group.addresses, sentinel_kwargs={"socket_timeout": 0.5}, socket_timeout=0.5
    )
    client = sentinel.master_for(
        RedisSentinel.service, socket_timeout=0.5, socket_connect_timeout=0.5,
        retry=quick_retry(),
    )  # fmt: skip
    admitted = outage = 0
    try:
        store = RedisStore(client, prefix=prefix, recovery_time=0.05)
        # A bucket far from empty, so that every decision through the failover writes.
        busy = hour_bucket(store, "busy", capacity=10_000)
        stop = threading.Event()

        def decide() -> None:
            nonlocal admitted, outage
            while not stop.is_set():
                try:
                    admitted += busy.allow(KEY)
                except RedisUnavailableError:
                    outage += 1
                time.sleep(0.005)

        worker = threading.Thread(target=decide)
        worker.start()
        try:
            wait_for(lambda: admitted >= 10)
            new = sentinel_group.failover()
            # Until a decision has run on the promoted master (it answers NOSCRIPT once),
            # and ten more were admitted after that.
            wait_for(lambda: noscript_replies(new) > 0)
            mark = admitted
            # The new master refuses writes too until the old one follows it: about ten
            # seconds, when a sentinel demotes the old master.
            wait_for(lambda: admitted >= mark + 10, timeout=40.0)
        finally:
            stop.set()
            worker.join()
        remaining: list[int] = []

        def peeked() -> bool:
            with contextlib.suppress(RedisUnavailableError):
                remaining.append(busy.peek(KEY).remaining)
            return bool(remaining)

        wait_for(peeked)
        recorded = 10_000 - remaining[0] - 1  # peek: as if after one more
    finally:
        client.close()
    # Every admission is on record on the new master, but for a decision the old master
    # may have taken in the instant before it saw its replica go (asynchronous
    # replication): at most one here, where decisions come one at a time, 5 ms apart.
    # Without the guard the old master decides on, unseen, until it is demoted.
    assert 0 <= admitted - recorded <= 1, (admitted, recorded, outage)
    assert outage > 0  # the masters did refuse writes: the guard, not luck, kept the count


def test_an_old_master_without_its_replicas_counts_as_unavailable(prefix: str) -> None:
    # The configuration Redis advises against a split brain under Sentinel: a master
    # refuses writes (NOREPLICAS) once no replica has acknowledged it for
    # min-replicas-max-lag seconds, which is what an old master sees after its replica was
    # promoted. That is an outage of this master, as READONLY is after a failover: the
    # failure policy applies.
    with RedisServer() as server:
        with server.admin() as admin:
            admin.config_set("min-replicas-to-write", 1)
        with redis.Redis(host=server.host, port=server.port, **quick_options()) as client:
            closed = hour_bucket(RedisStore(client, prefix=prefix), "closed")
            with pytest.raises(RedisUnavailableError) as caught:
                closed.try_acquire(KEY)
            assert isinstance(caught.value.__cause__, redis.ConnectionError)
            assert "NOREPLICAS" in str(caught.value.__cause__)
            opened = hour_bucket(RedisStore(client, prefix=prefix, on_error="open"), "opened")
            assert opened.allow(KEY)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_old_master_without_its_replicas_counts_as_unavailable_async(
    prefix: str,
) -> None:
    # The async client, alone and with concurrent decisions batched into one call.
    with RedisServer() as server:
        with server.admin() as admin:
            admin.config_set("min-replicas-to-write", 1)
        client = redis.asyncio.Redis(
            host=server.host, port=server.port, **quick_options(asynchronous=True)
        )
        try:
            closed = hour_bucket(RedisStore(client, prefix=prefix, recovery_time=0), "closed")
            with pytest.raises(RedisUnavailableError) as caught:
                await closed.try_acquire_async(KEY)
            assert "NOREPLICAS" in str(caught.value.__cause__)
            refused: list[BaseException] = []

            async def decide() -> None:
                try:
                    await closed.try_acquire_async(KEY)
                except RedisUnavailableError as error:
                    refused.append(error)

            async with anyio.create_task_group() as tasks:
                for _ in range(10):
                    tasks.start_soon(decide)
            assert len(refused) == 10
            opened = hour_bucket(RedisStore(client, on_error="open", prefix=prefix), "opened")
            assert await opened.allow_async(KEY)
        finally:
            await client.aclose()


# -- Cluster: one frozen master fails only the keys it serves ---------------------------


def users_by_owner(cluster: RedisCluster, count: int = 30) -> dict[int, list[str]]:
    """User keys grouped by the port of the master that serves them."""
    owners: dict[int, list[str]] = {}
    for i in range(count):
        user = f"user:{i}"
        owners.setdefault(cluster.owner(key_slot(user.encode())).port, []).append(user)
    return owners


def test_a_frozen_cluster_master_fails_only_the_keys_it_serves(prefix: str) -> None:
    """Other masters keep deciding while one hangs (before the cluster declares it failed)."""
    with RedisCluster(node_timeout=30.0) as cluster:
        frozen = cluster.nodes[0]
        owners = users_by_owner(cluster)
        stuck = owners.pop(frozen.port)[0]
        healthy = [user for users in owners.values() for user in users]
        options = {"socket_timeout": 0.3, "retry": quick_retry(0)}
        with redis.cluster.RedisCluster.from_url(cluster.url, **options) as client:
            store = RedisStore(client, prefix=prefix, recovery_time=30.0)
            limit = hour_bucket(store, "limit")
            assert limit.allow(stuck)
            with frozen.paused():
                with pytest.raises(RedisUnavailableError):
                    limit.allow(stuck)
                started = time.monotonic()
                with pytest.raises(RedisUnavailableError):
                    limit.allow(stuck)  # its node is known to be down: at once
                assert time.monotonic() - started < 0.2
                # Every other user is still decided by Redis, not refused.
                assert all(limit.try_acquire(user).remaining == CAPACITY - 1 for user in healthy)
            assert limit.try_acquire(healthy[0]).remaining == CAPACITY - 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_frozen_cluster_master_takes_only_itself_out_for_async_callers(
    prefix: str,
) -> None:
    """Concurrent async decisions go out as one pipeline, which one node can fail for all.

    The callers of that pipeline get its error, but only the node it names is
    marked down: the next decisions on the other masters go to Redis.
    """
    with RedisCluster(node_timeout=30.0) as cluster:
        frozen = cluster.nodes[1]  # not the startup node, through which the client re-reads the map
        owners = users_by_owner(cluster, count=60)
        stuck = owners.pop(frozen.port)
        healthy = [user for users in owners.values() for user in users]
        options = {"socket_timeout": 0.3, "retry": quick_retry(0, asynchronous=True)}
        client = redis.asyncio.cluster.RedisCluster.from_url(cluster.url, **options)
        try:
            store = RedisStore(client, prefix=prefix, recovery_time=30.0)
            limit = hour_bucket(store, "limit")
            with frozen.paused():
                first = await asyncio.gather(
                    *(limit.try_acquire_async(user) for user in stuck + healthy),
                    return_exceptions=True,
                )
                assert all(
                    isinstance(answer, RedisUnavailableError) for answer in first[: len(stuck)]
                )
                assert list(store._down_nodes) == [f"{frozen.host}:{frozen.port}"]
                again = await asyncio.gather(*(limit.try_acquire_async(user) for user in healthy))
                assert all(decision.allowed for decision in again)
                started = time.monotonic()
                with pytest.raises(RedisUnavailableError):
                    await limit.try_acquire_async(stuck[0])  # known down: at once
                assert time.monotonic() - started < 0.2
        finally:
            await client.aclose()
