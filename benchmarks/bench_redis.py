"""Redis decision latency and throughput, against the raw round trips of the same client.

Run from the repository root: ``python benchmarks/bench_redis.py`` (starts its
own redis-server on a free port, or uses ``REDIS_URL``).

Measures, sequentially, per call: PING, EVALSHA of a trivial script, EVALSHA
of the limiter script with the arguments a decision sends (the Redis side of
a decision, without resilio's Python), and a TokenBucket decision on a
`RedisStore` (server time), with the sync and the async client. Then async
throughput with 1, 10 and 100 concurrent tasks. Targets: a sequential
decision costs at most 1.1x the raw EVALSHA round trip; 100 concurrent tasks
make at least 5x the sequential decisions per second.

Cases run in turns, many rounds, and each reports its fastest round (the one
least disturbed by other work on the machine) and its median round.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resilio import TokenBucket
from resilio.redis import _LIMITER, RedisStore
from tests.redis.servers import RedisServer

N = 2000
ROUNDS = 15
CASES = ("PING", "EVALSHA trivial", "EVALSHA limiter script", "decision")


def per_call_us(fn: Callable[[], object], n: int = N) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def per_call_us_async(fn: Callable[[], Awaitable[object]], n: int = N) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


Timing = tuple[float, float]  # (fastest round, median round), µs per call


def summary(samples: list[float]) -> Timing:
    return min(samples), statistics.median(samples)


def interleaved(cases: dict[str, Callable[[], float]]) -> dict[str, Timing]:
    """Run every case once per round, in turn, so that noise hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, case in cases.items():
            samples[name].append(case())
    return {name: summary(values) for name, values in samples.items()}


def decision_call(store: RedisStore, limiter: TokenBucket) -> tuple[list[str], tuple[object, ...]]:
    """The keys and arguments of the script call behind ``limiter.try_acquire("bench")``."""
    plan = store._plan_for(limiter._limits)
    return store._keys(plan, "bench"), store._args(plan, 1, 0, b"1")


def sync_latency(url: str) -> dict[str, Timing]:
    client = redis.Redis.from_url(url, socket_timeout=1.0)
    trivial = client.script_load("return 1")
    store = RedisStore(client)
    limiter = TokenBucket(rate=1e6, per=1.0, capacity=10**9, store=store)
    limiter.try_acquire("bench")
    keys, args = decision_call(store, limiter)
    sha = _LIMITER.sha
    results = interleaved(
        {
            "PING": lambda: per_call_us(client.ping),
            "EVALSHA trivial": lambda: per_call_us(lambda: client.evalsha(trivial, 0)),
            "EVALSHA limiter script": lambda: per_call_us(
                lambda: client.evalsha(sha, len(keys), *keys, *args)  # type: ignore[arg-type]
            ),
            "decision": lambda: per_call_us(lambda: limiter.try_acquire("bench")),
        }
    )
    client.close()
    return results


async def async_latency(url: str) -> tuple[dict[str, Timing], dict[int, float]]:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=1.0)
    trivial = await client.script_load("return 1")
    store = RedisStore(client)
    limiter = TokenBucket(rate=1e6, per=1.0, capacity=10**9, store=store)
    await limiter.try_acquire_async("bench")
    keys, args = decision_call(store, limiter)
    sha = _LIMITER.sha
    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "PING": client.ping,
        "EVALSHA trivial": lambda: client.evalsha(trivial, 0),  # type: ignore[no-any-return]
        "EVALSHA limiter script": lambda: client.evalsha(sha, len(keys), *keys, *args),  # type: ignore[arg-type]
        "decision": lambda: limiter.try_acquire_async("bench"),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, case in cases.items():
            samples[name].append(await per_call_us_async(case))
    latency = {name: summary(values) for name, values in samples.items()}

    throughput: dict[int, float] = {}
    for tasks in (1, 10, 100):
        rates = []
        for _ in range(3):
            each = N // tasks

            async def worker(count: int = each) -> None:
                for _ in range(count):
                    await limiter.try_acquire_async("bench")

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(tasks)))
            rates.append(each * tasks / (time.perf_counter() - start))
        throughput[tasks] = statistics.median(rates)
    await client.aclose()
    return latency, throughput


def main() -> None:
    url = os.environ.get("REDIS_URL")
    server = None
    if not url:
        server = RedisServer()
        server.start()
        url = server.url
    try:
        sync = sync_latency(url)
        async_, throughput = asyncio.run(async_latency(url))
    finally:
        if server is not None:
            server.close()
    print(f"redis-py {redis.__version__}, Python {sys.version.split()[0]}, {url}")
    print("sequential, µs per call: fastest round / median round")
    print(f"{'':<26}{'sync client':>18}{'async client':>18}")
    for name in CASES:
        cells = [f"{t[0]:.1f} / {t[1]:.1f}" for t in (sync[name], async_[name])]
        print(f"{name:<26}{cells[0]:>18}{cells[1]:>18}")
    for label, numbers in (("sync", sync), ("async", async_)):
        best = numbers["decision"][0] / numbers["EVALSHA trivial"][0]
        typical = numbers["decision"][1] / numbers["EVALSHA trivial"][1]
        python = numbers["decision"][0] / numbers["EVALSHA limiter script"][0]
        verdict = "meets" if best <= 1.1 else "misses"
        print(
            f"{label}: decision / trivial EVALSHA = {best:.2f}x fastest, {typical:.2f}x median "
            f"({verdict} the 1.1x target); decision / the same script called raw = {python:.2f}x"
        )
    print(f"{'async tasks':<28}{'decisions/s':>14}")
    for tasks, rate in throughput.items():
        print(f"{tasks:<28}{rate:>14.0f}")
    gain = throughput[100] / throughput[1]
    verdict = "meets" if gain >= 5 else "misses"
    print(f"100 tasks / 1 task = {gain:.1f}x ({verdict} the 5x target)")


if __name__ == "__main__":
    main()
