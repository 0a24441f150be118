"""Fixtures for the limiter conformance suite: every test runs per store and per API flavour.

A test asks for ``api`` (sync or async calls, behind one async interface) and
``make`` (a limiter factory bound to the parametrized store and a fake
clock), or for ``store`` itself. Here the stores are the in-process ones of
``STORES``. Redis does not register in ``STORES``: tests/redis/ imports the
conformance and waiting tests (test_redis_conformance.py,
test_redis_waiting.py), and its own conftest binds ``store`` and ``make`` to
Redis stores, standalone and cluster, sync and async clients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio.lowlevel
import pytest

from resilio import RateLimiter
from resilio._core.limiters import Algorithm, Decision
from resilio.stores import MemoryStore, Store
from resilio.testing import FakeClock


class ProxyStore:
    """A store that is not a MemoryStore: limiters take their generic paths through it.

    Its async methods yield to the event loop before answering, like a store on
    the network; with ``async_only`` its sync methods refuse, like a store built
    on an async client.
    """

    def __init__(self, *, async_only: bool = False) -> None:
        self.inner = MemoryStore()
        self.async_only = async_only
        self.calls = 0

    def _sync(self) -> MemoryStore:
        if self.async_only:
            raise TypeError("this store has an async client: use the limiter's _async methods")
        self.calls += 1
        return self.inner

    def acquire(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> Decision:
        return self._sync().acquire(limits, key, cost, now)

    def allow(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        return self._sync().allow(limits, key, cost, now)

    def peek(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> Decision:
        return self._sync().peek(limits, key, cost, now)

    def reset(self, limits: Sequence[Algorithm], key: str) -> None:
        self._sync().reset(limits, key)

    async def acquire_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int
    ) -> Decision:
        await anyio.lowlevel.checkpoint()
        self.calls += 1
        return self.inner.acquire(limits, key, cost, now)

    async def allow_async(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        await anyio.lowlevel.checkpoint()
        self.calls += 1
        return self.inner.allow(limits, key, cost, now)

    async def peek_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int
    ) -> Decision:
        await anyio.lowlevel.checkpoint()
        self.calls += 1
        return self.inner.peek(limits, key, cost, now)

    async def reset_async(self, limits: Sequence[Algorithm], key: str) -> None:
        await anyio.lowlevel.checkpoint()
        self.inner.reset(limits, key)


# name -> factory of a fresh, empty in-process store (Redis: see the module docstring).
STORES: dict[str, Callable[[], Store]] = {"memory": MemoryStore, "proxy": ProxyStore}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> Store:
    """A fresh store of each registered kind."""
    return STORES[request.param]()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock passed to limiters with clock= (not installed globally)."""
    return FakeClock(start=1_000.0)


class Api:
    """Call a limiter through its sync or its async methods, always awaited."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour

    def __repr__(self) -> str:
        return self.flavour

    async def try_acquire(self, limiter: RateLimiter, key: str = "", cost: int = 1) -> Any:
        if self.flavour == "sync":
            return limiter.try_acquire(key, cost)
        return await limiter.try_acquire_async(key, cost)

    async def allow(self, limiter: RateLimiter, key: str = "", cost: int = 1) -> bool:
        if self.flavour == "sync":
            return limiter.allow(key, cost)
        return await limiter.allow_async(key, cost)

    async def acquire(
        self,
        limiter: RateLimiter,
        key: str = "",
        cost: int = 1,
        timeout: float | None = None,  # noqa: ASYNC109 - passed through to the limiter
    ) -> Any:
        if self.flavour == "sync":
            return limiter.acquire(key, cost, timeout)
        return await limiter.acquire_async(key, cost, timeout)

    async def peek(self, limiter: RateLimiter, key: str = "", cost: int = 1) -> Any:
        if self.flavour == "sync":
            return limiter.peek(key, cost)
        return await limiter.peek_async(key, cost)

    async def reset(self, limiter: RateLimiter, key: str = "") -> None:
        if self.flavour == "sync":
            limiter.reset(key)
        else:
            await limiter.reset_async(key)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Api:
    """The sync or the async flavour of the limiter API."""
    return Api(request.param)


@pytest.fixture
def make(store: Store, clock: FakeClock) -> Callable[..., Any]:
    """Build a limiter on the parametrized store and the fake clock."""

    def factory(cls: type[RateLimiter], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("store", store)
        kwargs.setdefault("clock", clock)
        return cls(*args, **kwargs)

    return factory
