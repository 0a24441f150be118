"""Quick micro benchmark: what a closed CircuitBreaker adds to a successful call.

Run with ``python benchmarks/bench_breaker_quick.py``. Prints nanoseconds per
call for a plain function and the same function behind a breaker, sync and
async (the async numbers include awaiting the coroutine inside one running
event loop).
"""

from __future__ import annotations

import asyncio
import timeit

from resilio import CircuitBreaker

N = 1_000_000
REPEAT = 7


def per_call_ns(stmt: object, number: int = N) -> float:
    timer = timeit.Timer(stmt)  # type: ignore[arg-type]
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e9


def plain(x: int) -> int:
    return x


consecutive = CircuitBreaker("bench", failure_threshold=5)(plain)
rate = CircuitBreaker("bench-rate", failure_rate=0.5, window=100)(plain)


async def aplain(x: int) -> int:
    return x


aconsecutive = CircuitBreaker("bench-async", failure_threshold=5)(aplain)


async def drive(fn: object, number: int) -> float:
    loop_fn = fn

    async def run() -> None:
        for i in range(number):
            await loop_fn(i)  # type: ignore[operator]

    best = float("inf")
    for _ in range(REPEAT):
        start = timeit.default_timer()
        await run()
        best = min(best, timeit.default_timer() - start)
    return best / number * 1e9


def main() -> None:
    base = per_call_ns(lambda: plain(1))
    wrapped = per_call_ns(lambda: consecutive(1))
    rated = per_call_ns(lambda: rate(1))
    print(f"sync  plain                      {base:7.1f} ns/call")
    print(f"sync  breaker (consecutive)      {wrapped:7.1f} ns/call  (+{wrapped - base:.1f} ns)")
    print(f"sync  breaker (rate, count win.) {rated:7.1f} ns/call  (+{rated - base:.1f} ns)")
    abase = asyncio.run(drive(aplain, N // 2))
    awrapped = asyncio.run(drive(aconsecutive, N // 2))
    print(f"async plain                      {abase:7.1f} ns/call")
    print(f"async breaker (consecutive)      {awrapped:7.1f} ns/call  (+{awrapped - abase:.1f} ns)")


if __name__ == "__main__":
    main()
