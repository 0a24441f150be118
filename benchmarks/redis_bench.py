"""Redis decisions against the raw round trips of the same redis-py client.

Per call, sequentially, with the sync and the async client: PING, EVALSHA of a
trivial script, EVALSHA of a floor script (`FLOOR_SCRIPT`: the server's clock
and one key read and written, no algorithm), EVALSHA of resilio's limiter
script with exactly the keys and arguments a decision sends (the raw round
trip of a decision, without resilio's Python), and a
``TokenBucket.try_acquire`` on a ``RedisStore``; with the sync client, also
the anchors' Redis decisions (limits, throttled-py, pyrate-limiter). The
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
from functools import partial
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


# The anchors' Redis decisions, sync, one key each, limits far above what a run
# consumes: labelled "library: algorithm". A library that is not installed, or
# fails to set up, is left out (and named in the report).
BIG = 10**9


def _anchor_cases(url: str, client: Any) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    cases: dict[str, Callable[[], object]] = {}
    unavailable: dict[str, str] = {}

    def limits_cases() -> None:
        from limits import RateLimitItemPerMinute, storage, strategies

        redis_storage = storage.RedisStorage(url)
        item = RateLimitItemPerMinute(BIG)
        for label, kind in (
            ("fixed window", strategies.FixedWindowRateLimiter),
            ("sliding window", strategies.SlidingWindowCounterRateLimiter),
            ("moving window", strategies.MovingWindowRateLimiter),
        ):
            hit = kind(redis_storage).hit
            cases[f"limits: {label}"] = partial(hit, item, f"bench-anchor:limits:{label}")

    def throttled_cases() -> None:
        from throttled import RateLimiterType, Throttled, per_min, per_sec
        from throttled import RedisStore as ThrottledStore

        store = ThrottledStore(server=url)
        for label, kind, quota in (
            ("gcra", RateLimiterType.GCRA, per_sec(10**6, burst=10**6)),
            ("token bucket", RateLimiterType.TOKEN_BUCKET, per_sec(10**6, burst=10**6)),
            ("fixed window", RateLimiterType.FIXED_WINDOW, per_min(BIG)),
        ):
            throttle = Throttled(using=kind.value, quota=quota, store=store)
            cases[f"throttled-py: {label}"] = partial(
                throttle.limit, f"bench-anchor:throttled:{label}"
            )

    def pyrate_cases() -> None:
        import pyrate_limiter as pl

        bucket = pl.RedisBucket.init(
            [pl.Rate(BIG, pl.Duration.MINUTE)], client, "bench-anchor:pyrate"
        )
        limiter = pl.Limiter(bucket)
        cases["pyrate-limiter: bucket"] = partial(
            limiter.try_acquire, "bench-anchor:pyrate", blocking=False
        )

    for library, build in (
        ("limits", limits_cases),
        ("throttled-py", throttled_cases),
        ("pyrate-limiter", pyrate_cases),
    ):
        # Not installed, or an API this version lacks.
        if (failure := _failure(build)) is not None:
            unavailable[library] = failure
    for label, call in list(cases.items()):
        if (failure := _failure(call)) is not None:  # the warm-up loads the scripts
            del cases[label]
            unavailable[label] = failure
    return cases, unavailable


def _failure(call: Callable[[], object]) -> str | None:
    """Run ``call``; return what it raised, or None."""
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _sync(url: str, calls: int, rounds: int) -> tuple[list[dict[str, float]], dict[str, str]]:
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
    anchors, unavailable = _anchor_cases(url, client)
    cases.update(anchors)
    samples = [{name: _per_call_us(fn, calls) for name, fn in cases.items()} for _ in range(rounds)]
    client.close()
    return samples, unavailable


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
        sync, unavailable = _sync(url, calls, rounds)
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
        "anchors_unavailable": unavailable,
        "async": async_,
        "throughput": {label: statistics.median(v) for label, v in throughput.items()},
        "throughput_samples": throughput,
        "memory": memory,
    }
