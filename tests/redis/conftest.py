"""Fixtures for the Redis tests: real servers, clients, and stores of every kind.

One standalone server and one 3-master cluster are started per test session
(see `servers`), unless ``REDIS_URL`` / ``REDIS_CLUSTER_URL`` name servers to
use instead. Every test gets its own key prefix, so tests never see each
other's keys and nothing needs flushing. Without a server the tests fail,
saying how to get one: they never skip.

Tests that ask for ``store`` run on four stores: a standalone and a cluster
client, each sync and async. With an ``api`` (the limiter's sync or async
methods) and an anyio backend, only the combinations that exist are made:
an async client serves only the async methods, on asyncio. A test without
``api`` runs on the sync clients only, unless it is marked ``async_api``
(it calls only async methods): then on the async clients too.
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilio.redis import RedisStore
from resilio.testing import FakeClock

from ..limiters.conftest import Api
from .servers import RedisCluster, RedisServer

SYNC_KINDS = ("redis", "cluster")
ASYNC_KINDS = ("redis-async", "cluster-async")
TIMEOUT = 2.0  # seconds: generous for a loaded CI machine, still bounded


class Endpoint:
    """Where a server listens, and the server itself when the tests started it."""

    def __init__(self, url: str, server: RedisServer | RedisCluster | None) -> None:
        self.url = url
        self.server = server


def _endpoint(
    variable: str, factory: Callable[[], RedisServer | RedisCluster]
) -> Iterator[Endpoint]:
    url = os.environ.get(variable)
    if url:
        yield Endpoint(url, None)
        return
    with factory() as server:
        yield Endpoint(server.url, server)


@pytest.fixture(scope="session")
def redis_endpoint() -> Iterator[Endpoint]:
    """A standalone Redis: ``REDIS_URL``, or a server started for the session."""
    yield from _endpoint("REDIS_URL", RedisServer)


@pytest.fixture(scope="session")
def cluster_endpoint() -> Iterator[Endpoint]:
    """A Redis Cluster: ``REDIS_CLUSTER_URL``, or 3 masters started for the session."""
    yield from _endpoint("REDIS_CLUSTER_URL", RedisCluster)


def suite_tests(
    module: ModuleType, parameter: str, wrap: Callable[[Any], Any] = lambda test: test
) -> dict[str, Any]:
    """The tests of ``module`` that take the fixture ``parameter``, each through ``wrap``.

    How this directory runs a suite of tests/limiters/ on Redis: the fixtures
    here bind ``parameter`` to Redis stores, so the tests run as they are.
    """
    return {
        name: wrap(test)
        for name, test in vars(module).items()
        if name.startswith("test_") and parameter in inspect.signature(test).parameters
    }


def quick_retry(retries: int = 1, *, asynchronous: bool = False) -> Retry | AsyncRetry:
    """``retries`` immediate retries, in the class the client kind takes.

    redis-py 8.2 converts a sync ``Retry`` given to an asyncio client, with a warning.
    """
    return (AsyncRetry if asynchronous else Retry)(NoBackoff(), retries)


def client_options(*, asynchronous: bool = False) -> dict[str, Any]:
    """Bounded timeouts and one quick retry: what the deployment guide recommends."""
    return {"socket_timeout": TIMEOUT, "retry": quick_retry(asynchronous=asynchronous)}


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def sync_client(redis_endpoint: Endpoint) -> Iterator[redis.Redis]:
    """A sync client of the standalone server."""
    client = redis.Redis.from_url(redis_endpoint.url, **client_options())
    yield client
    client.close()


@pytest.fixture
def cluster_client(cluster_endpoint: Endpoint) -> Iterator[redis.cluster.RedisCluster]:
    """A sync cluster client."""
    client = redis.cluster.RedisCluster.from_url(cluster_endpoint.url, **client_options())
    yield client
    client.close()


@pytest.fixture
async def async_client(redis_endpoint: Endpoint) -> AsyncIterator[redis.asyncio.Redis]:
    """An async client of the standalone server (asyncio only)."""
    client = redis.asyncio.Redis.from_url(redis_endpoint.url, **client_options(asynchronous=True))
    yield client
    await client.aclose()


@pytest.fixture
async def async_cluster_client(
    cluster_endpoint: Endpoint,
) -> AsyncIterator[redis.asyncio.cluster.RedisCluster]:
    """An async cluster client (asyncio only)."""
    client = redis.asyncio.cluster.RedisCluster.from_url(
        cluster_endpoint.url, **client_options(asynchronous=True)
    )
    yield client
    await client.aclose()


CLIENT_FIXTURES = {
    "redis": "sync_client",
    "cluster": "cluster_client",
    "redis-async": "async_client",
    "cluster-async": "async_cluster_client",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``async_api`` marker."""
    config.addinivalue_line(
        "markers", "async_api: the test calls only async limiter methods: run it on async clients"
    )


@pytest.hookimpl(tryfirst=True)  # before fixture params, so these replace anyio_backend's
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``store`` (with ``api``, ``anyio_backend``) over the combinations that exist."""
    names = metafunc.fixturenames
    if "store_kind" not in names:
        return
    async_api = metafunc.definition.get_closest_marker("async_api") is not None
    argnames = ["store_kind"]
    if "api" in names:
        argnames.append("api")
    if "anyio_backend" in names:
        argnames.append("anyio_backend")
    combos: list[Any] = []
    for kind in SYNC_KINDS + ASYNC_KINDS:
        is_async = kind in ASYNC_KINDS
        flavours = ["sync", "async"] if "api" in names else [None]
        if is_async and "api" not in names and not async_api:
            continue  # the test calls the sync methods, which an async client cannot serve
        for flavour in flavours:
            if is_async and flavour == "sync":
                continue
            backends: list[str | None] = [None]
            if "anyio_backend" in names:
                backends = ["asyncio"] if is_async else ["asyncio", "trio"]
            for backend in backends:
                values = [kind, Api(flavour) if flavour else None, backend]
                combos.append(pytest.param(*(v for v in values if v is not None)))
    metafunc.parametrize(argnames, combos, ids=_combo_id)


def _combo_id(value: object) -> str:
    return str(value)


@pytest.fixture
def client_for(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    """Return the client of a store kind (sync fixtures, or async ones inside a test loop)."""

    def get(kind: str) -> Any:
        return request.getfixturevalue(CLIENT_FIXTURES[kind])

    return get


@pytest.fixture
def store(store_kind: str, client_for: Callable[[str], Any], prefix: str) -> RedisStore:
    """A Redis store of the parametrized kind, on caller time (for fake clocks)."""
    return RedisStore(client_for(store_kind), prefix=prefix, time_source="caller")


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock passed to limiters with clock=."""
    return FakeClock(start=1_000.0)


@pytest.fixture
def make(store: RedisStore, clock: FakeClock) -> Callable[..., Any]:
    """Build a limiter on the parametrized store and the fake clock."""

    def factory(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("store", store)
        kwargs.setdefault("clock", clock)
        return cls(*args, **kwargs)

    return factory
