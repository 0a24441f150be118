"""Keys on Redis: the empty key on Cluster, key types, and which errors are outages."""

from __future__ import annotations

import enum
import logging
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from resilio import AllOf, FixedWindow, SlidingWindowLog, TokenBucket
from resilio._core.limiters import FixedWindowAlgorithm, GcraAlgorithm
from resilio.redis import RedisStore, RedisUnavailableError, _hash_tag

from .conftest import Endpoint, client_options
from .servers import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """Asyncio only: the async clients run on nothing else."""
    return "asyncio"


@pytest.fixture(params=["cluster_client", "async_cluster_client"])
def any_cluster_client(request: pytest.FixtureRequest) -> Any:
    """A sync and an async cluster client, in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["async_client", "async_cluster_client"])
def any_async_client(request: pytest.FixtureRequest) -> Any:
    """An async standalone and an async cluster client, in turn."""
    return request.getfixturevalue(request.param)


# -- the hash tag ----------------------------------------------------------------

AWKWARD_KEYS = ["", "%", "%%", "%25", "%7B", "%7D", "{", "}", "{}", "%{", "}%", "a", "user:1"]


def unescape(tag: str) -> str:
    """The user key a hash tag stands for: `_hash_tag` read backwards."""
    if tag == "%":
        return ""
    return tag.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")


def test_every_key_gets_a_tag_of_its_own_and_never_an_empty_one() -> None:
    tags = [_hash_tag(key) for key in AWKWARD_KEYS]
    assert len(set(tags)) == len(AWKWARD_KEYS)
    assert _hash_tag("") == "%"
    for key, tag in zip(AWKWARD_KEYS, tags, strict=True):
        assert tag, key
        assert "{" not in tag
        assert "}" not in tag
        assert unescape(tag) == key


@given(st.text(alphabet="%{}7BD25a", max_size=8) | st.text(max_size=8))
def test_the_hash_tag_can_be_read_back_so_distinct_keys_never_share_a_tag(key: str) -> None:
    tag = _hash_tag(key)
    assert tag
    assert "{" not in tag
    assert "}" not in tag
    assert unescape(tag) == key


# -- the empty key on Cluster ---------------------------------------------------------


def limiters(store: RedisStore) -> list[Any]:
    """Limiters whose decisions each use several keys (so several slots, were the tag lost)."""
    return [
        AllOf(
            TokenBucket(rate=2, per=60.0, name="minute"),
            FixedWindow(limit=100, window=3600.0, name="hour"),
            store=store,
        ),
        SlidingWindowLog(limit=2, window=60.0, store=store),
    ]


def key_slots(client: redis.cluster.RedisCluster, prefix: str) -> dict[str, int]:
    return {key.decode(): key_slot(key) for key in client.scan_iter(match=f"{prefix}*", count=1000)}


async def test_the_empty_key_decides_on_cluster(
    any_cluster_client: Any, cluster_client: redis.cluster.RedisCluster, prefix: str
) -> None:
    store = RedisStore(any_cluster_client, prefix=prefix)
    for limiter in limiters(store):
        if store.is_async:
            verdicts = [(await limiter.try_acquire_async("")).allowed for _ in range(3)]
        else:
            verdicts = [limiter.try_acquire("").allowed for _ in range(3)]
        assert verdicts == [True, True, False], limiter
    slots = key_slots(cluster_client, prefix)
    assert len(slots) == 4  # minute, hour, the log and its total
    assert all(key.startswith(f"{prefix}{{%}}:") for key in slots)
    assert set(slots.values()) == {key_slot(b"%")}


def test_the_bare_limiter_decides_on_the_empty_key_on_cluster(
    cluster_client: redis.cluster.RedisCluster, prefix: str
) -> None:
    for limiter in limiters(RedisStore(cluster_client, prefix=prefix)):

        @limiter
        def work() -> str:
            return "done"

        assert work() == "done"
        with limiter:
            pass
        assert limiter.peek("").remaining == 0, limiter  # two admissions, both on key ""
    assert set(key_slots(cluster_client, prefix).values()) == {key_slot(b"%")}


async def test_the_bare_limiter_decides_on_the_empty_key_on_an_async_cluster(
    async_cluster_client: redis.asyncio.cluster.RedisCluster,
    cluster_client: redis.cluster.RedisCluster,
    prefix: str,
) -> None:
    for limiter in limiters(RedisStore(async_cluster_client, prefix=prefix)):

        @limiter
        async def work() -> str:
            return "done"

        assert await work() == "done"
        async with limiter:
            pass
        assert (await limiter.peek_async("")).remaining == 0, limiter
    assert set(key_slots(cluster_client, prefix).values()) == {key_slot(b"%")}


# -- keys are strings ------------------------------------------------------------------


# Limiters refuse such keys themselves; the store refuses them too, for any
# other caller of the Store protocol.
LIMITS = (FixedWindowAlgorithm(window=60_000_000, limit=1, name="minute"),)


@pytest.mark.parametrize("key", [1, None, b"raw", ("t", 1)], ids=repr)
async def test_the_store_refuses_a_key_that_is_not_a_str_by_its_type(
    key: Any, sync_client: redis.Redis, prefix: str
) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    message = f"key must be a str, got {type(key).__name__}"
    for call in (store.acquire, store.allow, store.peek):
        with pytest.raises(TypeError, match=message):
            call(LIMITS, key, 1, 0)
    with pytest.raises(TypeError, match=message):
        store.reset(LIMITS, key)
    with pytest.raises(TypeError, match=message):
        await store.acquire_async(LIMITS, key, 1, 0)  # in a worker thread
    assert sync_client.keys(f"{prefix}*") == []


async def test_an_async_store_refuses_a_key_that_is_not_a_str_by_its_type(
    any_async_client: Any, prefix: str
) -> None:
    store = RedisStore(any_async_client, prefix=prefix)
    for call in (store.acquire_async, store.allow_async, store.peek_async):
        with pytest.raises(TypeError, match="key must be a str, got int"):
            await call(LIMITS, 7, 1, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a str, got int"):
        await store.reset_async(LIMITS, 7)  # type: ignore[arg-type]


def test_keys_are_encoded_as_the_client_says(redis_endpoint: Endpoint, prefix: str) -> None:
    # latin-1, with replies decoded or not: keys it can encode work, others raise.
    for decode in (False, True):
        with redis.Redis.from_url(
            redis_endpoint.url, **client_options(), encoding="latin-1", decode_responses=decode
        ) as client:
            limiter = AllOf("2/minute", "10/hour", store=RedisStore(client, prefix=prefix))
            assert limiter.try_acquire("café").allowed
            with pytest.raises(UnicodeEncodeError):
                limiter.try_acquire("\N{GRINNING FACE}")
    with redis.Redis.from_url(redis_endpoint.url, **client_options()) as client:
        keys = {key.decode("latin-1") for key in client.scan_iter(match=f"{prefix}*")}
    assert len(keys) == 2  # one per limit: decoded replies or not, the same key "café"
    assert all(key.startswith(f"{prefix}{{café}}:") for key in keys)


def test_the_cache_of_built_keys_stays_bounded_and_rebuilds_the_same_keys(
    sync_client: redis.Redis, prefix: str
) -> None:
    # The store caches each user key's Redis keys, up to a bound, then starts afresh.
    # One request per hour, not an aligned window a boundary could reset mid-test.
    limits = (GcraAlgorithm(interval=3600 * 10**6, capacity=1, name="hourly"),)
    store = RedisStore(sync_client, prefix=prefix)
    plan = store._plan_for(limits)
    users = [f"user:{i}" for i in range(plan.KEYS_CACHED + 10)]
    for user in users:
        assert store.allow(limits, user, 1, 0)
        assert len(plan.keys) <= plan.KEYS_CACHED
    assert users[0] not in plan.keys  # dropped when the cache was full
    # Built again, the first user's key is the one its admission was counted on.
    assert not store.allow(limits, users[0], 1, 0)
    assert not store.allow(limits, users[-1], 1, 0)  # and a cached one, too
    assert len(list(sync_client.scan_iter(match=f"{prefix}*", count=1000))) == len(users)


class Plan(str, enum.Enum):
    """A str subclass that formats otherwise than its value (as str enums do)."""

    FREE = "free"


@pytest.mark.parametrize("first", ["free", Plan.FREE], ids=["str first", "subclass first"])
def test_a_str_subclass_key_uses_the_keys_of_its_value(
    sync_client: redis.Redis, prefix: str, first: str
) -> None:
    # Plan.FREE == "free", so it is one key, whichever form the cache sees first.
    limiter = FixedWindow(limit=3, window=3600.0, store=RedisStore(sync_client, prefix=prefix))
    second = "free" if first is Plan.FREE else Plan.FREE
    admitted = [limiter.allow(key) for key in [first, second] * 4]
    assert admitted.count(True) == 3
    keys = [key.decode() for key in sync_client.scan_iter(match=f"{prefix}*")]
    assert keys == [f"{prefix}{{free}}:{limiter.name}"]


def test_no_limit_name_shares_a_key_with_a_sliding_log(
    sync_client: redis.Redis, prefix: str
) -> None:
    """A log's second key must be its own, whatever other limits are called."""
    store = RedisStore(sync_client, prefix=prefix)
    log = SlidingWindowLog(limit=2, window=3600.0, name="x", store=store)
    others = [
        FixedWindow(limit=5, window=3600.0, name=name, store=store)
        for name in ["x:total", "x#total", "x%23total"]
    ]
    for _ in range(3):
        for limiter in [log, *others]:
            limiter.try_acquire("k")
    assert [log.peek("k").remaining] + [other.peek("k").remaining for other in others] == [
        0,
        1,
        1,
        1,
    ]
    keys = {key.decode() for key in sync_client.scan_iter(match=f"{prefix}*")}
    assert len(keys) == 5  # the log's two, one for each other limit


def test_two_stores_on_one_client_refuse_two_limits_of_one_name(
    sync_client: redis.Redis, prefix: str
) -> None:
    TokenBucket(rate=1, name="api", store=RedisStore(sync_client, prefix=prefix))
    with pytest.raises(ValueError, match="share the name 'api'"):
        FixedWindow(limit=1, window=60.0, name="api", store=RedisStore(sync_client, prefix=prefix))
    # Another prefix is another namespace.
    FixedWindow(
        limit=1, window=60.0, name="api", store=RedisStore(sync_client, prefix=prefix + "b:")
    )


def test_a_str_enum_name_names_the_state_by_its_value(
    sync_client: redis.Redis, prefix: str
) -> None:
    store = RedisStore(sync_client, prefix=prefix)
    by_member = TokenBucket(rate=1, per=3600.0, capacity=1, name=Plan.FREE, store=store)
    by_value = TokenBucket(rate=1, per=3600.0, capacity=1, name="free", store=store)
    assert by_member.allow("k")
    assert not by_value.allow("k")  # one limit: the same keys
    keys = [key.decode() for key in sync_client.scan_iter(match=f"{prefix}*")]
    assert keys == [f"{prefix}{{k}}:free"]


def test_long_keys_are_not_cached(sync_client: redis.Redis, prefix: str) -> None:
    # The cache holds at most KEYS_CACHED short keys; a long key is built per call.
    store = RedisStore(sync_client, prefix=prefix)
    limiter = TokenBucket(rate=1, per=3600.0, capacity=2, store=store)
    plan = store._plan_for(limiter._limits)
    long = "x" * (plan.LONGEST_CACHED + 1)
    assert [limiter.allow(long) for _ in range(3)] == [True, True, False]
    assert [limiter.allow(long[:-1]) for _ in range(3)] == [True, True, False]
    assert list(plan.keys) == [long[:-1]]


# -- misuse is not an outage -------------------------------------------------------------


class ScatteredStore(RedisStore):
    """A store that lays a decision's keys out without their hash tag: a bug of its own.

    The keys of one decision then land in different slots, as the empty key's
    did when its tag was empty; the cluster client refuses such a call.
    """

    __slots__ = ()

    def _keys(self, plan: Any, key: str) -> tuple[bytes, ...]:
        return tuple(k.replace(b"{", b"").replace(b"}", b"") for k in super()._keys(plan, key))


def cross_slot_names(prefix: str) -> tuple[str, str]:
    """Two limit names whose scattered keys (for user key "u") land in different slots."""
    first = f"{prefix}u:n0"
    for i in range(1, 100):
        if key_slot(f"{prefix}u:n{i}".encode()) != key_slot(first.encode()):
            return "n0", f"n{i}"
    raise AssertionError("no two slots found")  # pragma: no cover


@pytest.mark.parametrize("on_error", ["closed", "open", "local"])
async def test_a_cross_slot_call_raises_as_it_is_and_leaves_the_store_up(
    on_error: Any, any_cluster_client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = ScatteredStore(any_cluster_client, prefix=prefix, on_error=on_error)
    first, second = cross_slot_names(prefix)
    broken = AllOf(TokenBucket(rate=10, name=first), TokenBucket(rate=20, name=second), store=store)
    healthy = TokenBucket(rate=1, per=60.0, name="one", store=store)  # one key: one slot

    async def decide(limiter: Any) -> Any:
        if store.is_async:
            return await limiter.try_acquire_async("u")
        return limiter.try_acquire("u")

    with caplog.at_level(logging.INFO, logger="resilio.redis"):
        for _ in range(2):  # the second call too: nothing was noted the first time
            # The sync client refuses before sending, the async one is refused by the server.
            with pytest.raises(
                (RedisClusterException, ClusterCrossSlotError), match=r"same (key )?slot"
            ):
                await decide(broken)
        # Not an outage: the store still asks Redis for every other key.
        assert (await decide(healthy)).allowed
        assert not (await decide(healthy)).allowed  # counted on Redis, not by a fallback
    assert caplog.records == []


# -- a cluster that cannot be reached is an outage -------------------------------------


async def test_a_cluster_with_no_reachable_node_applies_the_policy(prefix: str) -> None:
    client = redis.asyncio.cluster.RedisCluster(
        host="127.0.0.1",
        port=free_port(),
        **client_options(asynchronous=True),
        socket_connect_timeout=0.2,
    )
    try:
        closed = SlidingWindowLog(limit=2, window=60.0, store=RedisStore(client, prefix=prefix))
        with pytest.raises(RedisUnavailableError) as raised:
            await closed.try_acquire_async("u")
        assert isinstance(raised.value.__cause__, RedisClusterException)
        assert "cannot be connected" in str(raised.value.__cause__)
        opened = SlidingWindowLog(
            limit=2, window=60.0, store=RedisStore(client, prefix=prefix, on_error="open")
        )
        assert all([await opened.allow_async("u") for _ in range(3)])
    finally:
        await client.aclose()
