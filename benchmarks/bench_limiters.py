"""Cost of one rate-limiter decision, in memory: allow and reject paths, sync and async.

Run: ``python benchmarks/bench_limiters.py`` (``--quick`` for fewer rounds).

Every figure is nanoseconds per call (the best of several rounds), measured in
the same loop as a baseline plain call ``f(key, 1)``, so "ratio" is the
limiter's cost relative to calling an empty Python function. The real clock is
used, as in production. Targets (sync, in memory): `try_acquire` returning a
`Decision` at most 1000 ns; `allow` returning a bool at most 600 ns.

Also timed: a floor, the least a thread-safe decision can do in pure Python
(a token bucket in one function: a lock, a clock read, one dict entry, no
checks), to show how much of a decision's cost is resilio's and how much is
the lock and the clock on the machine at hand.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from limiters import floor  # the sibling module: this script runs from benchmarks/

from resilio import (
    AllOf,
    FixedWindow,
    LeakyBucket,
    RateLimiter,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)

HOUR = 3600.0
N = 20_000
# 16 keys in turn, so even the leaky bucket (one admission per microsecond per
# key at most) stays on its allow path when the "allow" limits are huge.
KEYS = [f"user:{i % 16}" for i in range(N)]

ALLOWING: dict[str, Callable[[], RateLimiter]] = {
    "TokenBucket": lambda: TokenBucket(rate=1e6, per=1.0, capacity=10**15),
    "LeakyBucket": lambda: LeakyBucket(rate=1e6, per=1.0, capacity=1),
    # Realistic window limits (the sliding counter is exact while limit x window
    # in µs stays below 2**53), far above what one benchmark run consumes per key.
    "FixedWindow": lambda: FixedWindow(limit=10**7, window=60.0),
    "SlidingWindow": lambda: SlidingWindow(limit=10**7, window=60.0),
    "SlidingWindowLog": lambda: SlidingWindowLog(limit=10**7, window=60.0),
    "AllOf(2)": lambda: AllOf(
        TokenBucket(rate=1e6, per=1.0, capacity=10**15), FixedWindow(limit=10**7, window=60.0)
    ),
}
REJECTING: dict[str, Callable[[], RateLimiter]] = {
    "TokenBucket": lambda: TokenBucket(rate=1, per=HOUR, capacity=1),
    "LeakyBucket": lambda: LeakyBucket(rate=1, per=HOUR, capacity=1),
    "FixedWindow": lambda: FixedWindow(limit=1, window=HOUR),
    "SlidingWindow": lambda: SlidingWindow(limit=1, window=HOUR),
    "SlidingWindowLog": lambda: SlidingWindowLog(limit=1, window=HOUR),
    "AllOf(2)": lambda: AllOf(
        TokenBucket(rate=1, per=HOUR, capacity=1), FixedWindow(limit=1, window=HOUR)
    ),
}


def plain(key: str, cost: int = 1) -> None:
    return None


async def plain_async(key: str, cost: int = 1) -> None:
    return None


def best_ns(fn: Callable[[str, int], Any], rounds: int) -> float:
    best = float("inf")
    keys = KEYS
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for key in keys:
            fn(key, 1)
        best = min(best, (time.perf_counter_ns() - start) / len(keys))
    return best


def best_ns_async(fn: Callable[[str, int], Any], rounds: int) -> float:
    async def run() -> float:
        best = float("inf")
        keys = KEYS
        for _ in range(rounds):
            start = time.perf_counter_ns()
            for key in keys:
                await fn(key, 1)
            best = min(best, (time.perf_counter_ns() - start) / len(keys))
        return best

    return asyncio.run(run())


def measure(rounds: int) -> list[tuple[str, str, str, float, float]]:
    rows = []
    base = best_ns(plain, rounds)
    base_async = best_ns_async(plain_async, rounds)
    for path, table in (("allow", ALLOWING), ("reject", REJECTING)):
        for name, factory in table.items():
            limiter = factory()
            if path == "reject":
                for key in set(KEYS):
                    limiter.try_acquire(key)
                assert not limiter.try_acquire(KEYS[0]).allowed
            else:
                assert limiter.try_acquire(KEYS[0]).allowed
            for api, fn, baseline, runner in (
                ("try_acquire", limiter.try_acquire, base, best_ns),
                ("allow", limiter.allow, base, best_ns),
                ("try_acquire_async", limiter.try_acquire_async, base_async, best_ns_async),
            ):
                ns = runner(fn, rounds)
                rows.append((name, path, api, ns, ns / baseline))
    for api, decision in (("try_acquire", True), ("allow", False)):
        ns = best_ns(floor(decision), rounds)
        rows.append(("(floor)", "allow", api, ns, ns / base))
    rows.append(("(plain call)", "-", "f(key, 1)", base, 1.0))
    rows.append(("(plain call)", "-", "await f(key, 1)", base_async, 1.0))
    return rows


def markdown(rows: list[tuple[str, str, str, float, float]]) -> str:
    """The table of docs/limiters/index.md: one row per algorithm, ns and ratio per cell."""
    cells = {(name, path, api): f"{ns:.0f} ({ratio:.0f}x)" for name, path, api, ns, ratio in rows}
    apis = ("try_acquire", "allow", "try_acquire_async")
    lines = [
        "| algorithm | " + " | ".join(f"`{api}` allowed / rejected" for api in apis) + " |",
        "|---|" + "---|" * len(apis),
    ]
    for name in ALLOWING:
        pairs = [f"{cells[name, 'allow', api]} / {cells[name, 'reject', api]}" for api in apis]
        lines.append(f"| {name} | " + " | ".join(pairs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 15")
    parser.add_argument("--markdown", action="store_true", help="the table the docs show")
    args = parser.parse_args()
    rows = measure(3 if args.quick else 15)
    print(f"# Python {sys.version.split()[0]}, {platform.machine()}, {platform.system()}")
    if args.markdown:
        (*_, take, admit, sync, asynchronous) = (row[3] for row in rows)
        print(f"# plain calls: f(key, 1) {sync:.0f} ns, await f(key, 1) {asynchronous:.0f} ns")
        print(
            "# floor (a locked token bucket in one function, no checks): "
            f"{take:.0f} ns returning a Decision, {admit:.0f} ns a bool"
        )
        print(markdown(rows))
        return
    print(f"| {'algorithm':<17} | {'path':<6} | {'call':<17} | {'ns/call':>7} | {'ratio':>5} |")
    print(f"|{'-' * 19}|{'-' * 8}|{'-' * 19}|{'-' * 9}|{'-' * 7}|")
    for name, path, api, ns, ratio in rows:
        print(f"| {name:<17} | {path:<6} | {api:<17} | {ns:>7.0f} | {ratio:>5.1f} |")


if __name__ == "__main__":
    main()
