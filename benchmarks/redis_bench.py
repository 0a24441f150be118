"""Redis decisions against the raw round trips of the same redis-py client.

Per call, sequentially, with the sync and the async client: PING, EVALSHA of a
trivial script, EVALSHA of a floor script (`FLOOR_SCRIPT`: the server's clock
and one key read and written, no algorithm), EVALSHA of resilio's limiter
script with exactly the keys and arguments a decision sends (the raw round
trip of a decision, without resilio's Python), and a
``TokenBucket.try_acquire`` on a ``RedisStore``. The
cases run in turns, round after round, so that noise hits all alike; ratios
are taken within a round. Then async throughput: decisions per second with 1,
10 and 100 concurrent tasks, next to the raw script call from 100 tasks.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASES = ("PING", "EVALSHA trivial", "EVALSHA floor script", "EVALSHA limiter script", "decision")
# The least a decision on the server's clock does: read the clock, read one key,
# write it back with a TTL, answer a status line. No algorithm; the floor of
# what any such decision costs the server and the client beyond `return 1`.
FLOOR_SCRIPT = """
local now = redis.call('TIME')
local state = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], state or now[1], 'PX', '60000')
return {ok = '1 0 0 0'}
"""
FLOOR_KEY = b"resilio:{bench}:floor"

__all__ = ["CASES", "redis_benchmarks"]


def _per_call_us(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


async def _per_call_us_async(fn: Callable[[], Awaitable[object]], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - started) / n * 1e6


def _script_call(store: Any, limiter: Any) -> tuple[list[str], tuple[Any, ...]]:
    """The keys and arguments of the script call behind ``limiter.try_acquire("bench")``."""
    plan = store._plan_for(limiter._limits)
    return store._keys(plan, "bench"), store._args(plan, 1, 0, b"1")


def _sync(url: str, calls: int, rounds: int) -> list[dict[str, float]]:
    import redis

    from resilio import TokenBucket
    from resilio.redis import _LIMITER, RedisStore

    client = redis.Redis.from_url(url, socket_timeout=2.0)
    trivial = client.script_load("return 1")
    floor = client.script_load(FLOOR_SCRIPT)
    store = RedisStore(client)
    limiter = TokenBucket(rate=1e6, per=1.0, capacity=10**9, store=store)
    limiter.try_acquire("bench")
    keys, args = _script_call(store, limiter)
    sha = _LIMITER.sha
    cases: dict[str, Callable[[], object]] = {
        "PING": client.ping,
        "EVALSHA trivial": lambda: client.evalsha(trivial, 0),
        "EVALSHA floor script": lambda: client.evalsha(floor, 1, FLOOR_KEY),
        "EVALSHA limiter script": lambda: client.evalsha(sha, len(keys), *keys, *args),
        "decision": lambda: limiter.try_acquire("bench"),
    }
    samples = [{name: _per_call_us(fn, calls) for name, fn in cases.items()} for _ in range(rounds)]
    client.close()
    return samples


async def _async(
    url: str, calls: int, rounds: int
) -> tuple[list[dict[str, float]], dict[str, list[float]]]:
    import redis.asyncio

    from resilio import TokenBucket
    from resilio.redis import _LIMITER, RedisStore

    client = redis.asyncio.Redis.from_url(url, socket_timeout=2.0, max_connections=200)
    trivial = await client.script_load("return 1")
    floor = await client.script_load(FLOOR_SCRIPT)
    store = RedisStore(client)
    limiter = TokenBucket(rate=1e6, per=1.0, capacity=10**9, store=store)
    await limiter.try_acquire_async("bench")
    keys, args = _script_call(store, limiter)
    sha = _LIMITER.sha

    def raw() -> Awaitable[object]:
        return client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[no-any-return]

    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "PING": client.ping,
        "EVALSHA trivial": lambda: client.evalsha(trivial, 0),  # type: ignore[dict-item]
        "EVALSHA floor script": lambda: client.evalsha(floor, 1, FLOOR_KEY),  # type: ignore[dict-item]
        "EVALSHA limiter script": raw,
        "decision": lambda: limiter.try_acquire_async("bench"),
    }
    samples = [
        {name: await _per_call_us_async(fn, calls) for name, fn in cases.items()}
        for _ in range(rounds)
    ]

    async def rate(call: Callable[[], Awaitable[object]], tasks: int) -> float:
        each = max(1, calls // tasks) * 2

        async def worker() -> None:
            for _ in range(each):
                await call()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        return each * tasks / (time.perf_counter() - started)

    def decide() -> Awaitable[object]:
        return limiter.try_acquire_async("bench")

    throughput: dict[str, list[float]] = {}
    for label, call, tasks in (
        ("decisions, 1 task", decide, 1),
        ("decisions, 10 tasks", decide, 10),
        ("decisions, 100 tasks", decide, 100),
        ("raw EVALSHA, 100 tasks", raw, 100),
    ):
        await rate(call, tasks)  # warm-up: opens the pool's connections
        throughput[label] = [await rate(call, tasks) for _ in range(max(3, rounds // 3))]
    await client.aclose()
    return samples, throughput


# Memory: what one key's state takes on the server, by MEMORY USAGE, for a user
# key of 30 characters; the sliding log also when its window is full.
MEMORY_KEY = "user:" + "x" * 25
MEMORY_CASES: dict[str, tuple[str, dict[str, Any], int]] = {
    "TokenBucket(rate=10, capacity=20)": ("TokenBucket", {"rate": 10, "capacity": 20}, 1),
    "LeakyBucket(rate=10, capacity=20)": ("LeakyBucket", {"rate": 10, "capacity": 20}, 1),
    "FixedWindow(100/minute)": ("FixedWindow", {"limit": 100, "window": 60.0}, 1),
    "SlidingWindow(100/minute)": ("SlidingWindow", {"limit": 100, "window": 60.0}, 1),
    "SlidingWindowLog(1000/minute), 1 admission": (
        "SlidingWindowLog", {"limit": 1000, "window": 60.0}, 1,
    ),
    "SlidingWindowLog(1000/minute), full": (
        "SlidingWindowLog", {"limit": 1000, "window": 60.0}, 1000,
    ),
}  # fmt: skip


def _memory(url: str) -> dict[str, int]:
    """Bytes on the server (every key of the state, by MEMORY USAGE) per limiter key."""
    import uuid

    import redis

    import resilio
    from resilio.redis import RedisStore

    sizes = {}
    with redis.Redis.from_url(url, socket_timeout=2.0) as client:
        for label, (kind, options, decisions) in MEMORY_CASES.items():
            prefix = f"bench-memory:{uuid.uuid4().hex[:8]}:"
            limiter = getattr(resilio, kind)(**options, store=RedisStore(client, prefix=prefix))
            for _ in range(decisions):
                assert limiter.try_acquire(MEMORY_KEY).allowed
            keys = list(client.scan_iter(match=f"{prefix}*"))
            sizes[label] = sum(client.memory_usage(key, samples=0) or 0 for key in keys)
            client.delete(*keys)
    return sizes


def redis_benchmarks(calls: int, rounds: int) -> dict[str, Any]:
    """Run every Redis measurement against ``REDIS_URL`` or a redis-server started here."""
    sys.path.insert(0, str(ROOT))
    import redis

    url = os.environ.get("REDIS_URL")
    server = None
    if not url:
        from tests.redis.servers import RedisServer

        server = RedisServer()
        server.start()
        url = server.url
    try:
        with redis.Redis.from_url(url) as probe:
            version = probe.info("server")["redis_version"]
        sync = _sync(url, calls, rounds)
        async_, throughput = asyncio.run(_async(url, calls, rounds))
        memory = _memory(url)
    finally:
        if server is not None:
            server.close()
    return {
        "server": "REDIS_URL" if server is None else "redis-server started by the benchmark",
        "redis_version": version,
        "redis_py": redis.__version__,
        "sync": sync,
        "async": async_,
        "throughput": {label: statistics.median(v) for label, v in throughput.items()},
        "throughput_samples": throughput,
        "memory": memory,
    }
