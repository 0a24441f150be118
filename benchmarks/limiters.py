"""In-memory rate limiters: decision cost, reject path, blocking-wait accuracy, memory per key.

Anchors: limits, pyrate-limiter, throttled-py, token-bucket (falconry) and
aiolimiter. Each anchor is configured with the algorithm that matches
resilio's (token bucket, fixed window, sliding-window counter) where it has
one, on its own in-memory storage, and called through its documented
decision method. Every builder imports its library when called.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any

from harness import Case, Unavailable

__all__ = ["accuracy", "decision_cases", "memory", "MEMORY_CASES", "WAIT_CASES"]

KEY = "user:1"
BIG = 10**7  # window limits far above what a benchmark run consumes per key
BUCKET_RATE = 10**6  # tokens per second: refills faster than any loop here consumes


# -- resilio -----------------------------------------------------------------------------


def _resilio(algorithm: str, reject: bool) -> Any:
    import resilio

    if algorithm == "token-bucket":
        if reject:
            return resilio.TokenBucket(rate=1, per=3600.0, capacity=1)
        return resilio.TokenBucket(rate=BUCKET_RATE, per=1.0, capacity=BUCKET_RATE)
    if algorithm == "fixed-window":
        return resilio.FixedWindow(limit=1 if reject else BIG, window=60.0)
    if algorithm == "sliding-log":
        return resilio.SlidingWindowLog(limit=1 if reject else BIG, window=60.0)
    return resilio.SlidingWindow(limit=1 if reject else BIG, window=60.0)


def _drained(limiter: Any, call: Callable[..., Any], reject: bool) -> Any:
    if reject:
        for _ in range(3):
            call(KEY, 1)
    return limiter


def resilio_case(algorithm: str, api: str, reject: bool) -> Callable[[], Any]:
    def build() -> Any:
        limiter = _resilio(algorithm, reject)
        _drained(limiter, limiter.try_acquire, reject)
        if api == "try_acquire_async":
            return limiter.try_acquire_async
        return getattr(limiter, api)

    return build


# -- the floor ---------------------------------------------------------------------------

_new_tuple = tuple.__new__  # how resilio builds a Decision, without a Python-level __new__


def floor(decision: bool) -> Callable[[str, int], Any]:
    """The least a thread-safe in-memory decision does, written in one function.

    A token bucket as GCRA: take a lock, read the clock, read and write one
    dict entry; answer a bool, or (``decision``) a `Decision` with what
    `try_acquire` reports. No checks, no events, no clock swaps, no
    sweeping: not a limiter anybody should use, but the cost below which no
    pure-Python decision that takes a lock and reads a clock can go on the
    machine at hand. The two forms repeat each other on purpose: a helper
    they shared would add the very call the floor leaves out.
    """
    from resilio import Decision

    lock = threading.Lock()
    acquire, release = lock.acquire, lock.release
    clock = time.monotonic_ns
    table: dict[str, int] = {}
    interval, capacity = 1, 10**15
    tolerance = interval * capacity

    def allow(key: str, cost: int = 1) -> bool:
        acquire()
        try:
            now = clock() // 1000
            tat = table.get(key, now)
            if tat < now:
                tat = now
            tat += cost * interval
            if tat - tolerance <= now:
                table[key] = tat
                return True
            return False
        finally:
            release()

    def try_acquire(key: str, cost: int = 1) -> Any:
        acquire()
        try:
            now = clock() // 1000
            tat = table.get(key, now)
            if tat < now:
                tat = now
            new = tat + cost * interval
            if new - tolerance <= now:
                table[key] = new
                left = (now + tolerance - new) // interval
                return _new_tuple(Decision, (True, left, 0.0, (new - now) / 1e6, capacity))
            left = (now + tolerance - tat) // interval
            retry = (new - tolerance - now) / 1e6
            return _new_tuple(Decision, (False, left, retry, (tat - now) / 1e6, capacity))
        finally:
            release()

    return try_acquire if decision else allow


def floor_case(api: str) -> Callable[[], Any]:
    def build() -> Any:
        return floor(api == "try_acquire")

    return build


# -- anchors ---------------------------------------------------------------------------


def limits_case(algorithm: str, reject: bool) -> Callable[[], Any]:
    def build() -> Any:
        from limits import RateLimitItemPerMinute, storage, strategies

        kinds = {
            "fixed-window": strategies.FixedWindowRateLimiter,
            "sliding-window": strategies.SlidingWindowCounterRateLimiter,
            "sliding-log": strategies.MovingWindowRateLimiter,
        }
        if algorithm not in kinds:
            raise Unavailable(f"limits has no {algorithm}")
        limiter = kinds[algorithm](storage.MemoryStorage())
        item = RateLimitItemPerMinute(1 if reject else BIG)
        hit = partial(limiter.hit, item)  # called as hit(key): limits takes cost by keyword
        return _drained(hit, lambda key, cost: hit(key), reject)

    return build


def throttled_case(algorithm: str, reject: bool) -> Callable[[], Any]:
    def build() -> Any:
        from throttled import MemoryStore, RateLimiterType, Throttled, per_min, per_sec

        kinds = {
            "token-bucket": RateLimiterType.TOKEN_BUCKET,
            "fixed-window": RateLimiterType.FIXED_WINDOW,
            "sliding-window": RateLimiterType.SLIDING_WINDOW,
        }
        if algorithm not in kinds:
            raise Unavailable(f"throttled-py has no {algorithm}")
        if algorithm == "token-bucket":
            quota = per_min(1, burst=1) if reject else per_sec(BUCKET_RATE, burst=BUCKET_RATE)
        else:
            quota = per_min(1 if reject else BIG)
        throttle = Throttled(using=kinds[algorithm].value, quota=quota, store=MemoryStore())
        return _drained(throttle.limit, throttle.limit, reject)

    return build


def pyrate_case(algorithm: str, reject: bool) -> Callable[[], Any]:
    def build() -> Any:
        import pyrate_limiter as pl

        if algorithm != "token-bucket":
            raise Unavailable("compared on its token bucket only")
        rate = pl.Rate(1, pl.Duration.HOUR) if reject else pl.Rate(BIG, pl.Duration.SECOND)
        limiter = pl.Limiter(pl.StateBucket([rate], algorithm=pl.TokenBucket()))
        acquire = partial(limiter.try_acquire, blocking=False)
        return _drained(acquire, acquire, reject)

    return build


def token_bucket_case(algorithm: str, reject: bool) -> Callable[[], Any]:
    def build() -> Any:
        import token_bucket

        if algorithm != "token-bucket":
            raise Unavailable("token-bucket only has a token bucket")
        if reject:
            limiter = token_bucket.Limiter(1 / 3600, 1, token_bucket.MemoryStorage())
        else:
            limiter = token_bucket.Limiter(BUCKET_RATE, BUCKET_RATE, token_bucket.MemoryStorage())
        return _drained(limiter.consume, limiter.consume, reject)

    return build


ANCHOR_APIS = {
    "limits": "strategy.hit(item, key) -> bool",
    "throttled-py": "Throttled.limit(key, cost) -> RateLimitResult (limited, remaining, ...)",
    "pyrate-limiter": "Limiter.try_acquire(key, cost, blocking=False) -> bool",
    "token-bucket": "Limiter.consume(key, cost) -> bool",
}
_ANCHORS: list[tuple[str, Callable[[str, bool], Callable[[], Any]]]] = [
    ("limits", limits_case),
    ("throttled-py", throttled_case),
    ("pyrate-limiter", pyrate_case),
    ("token-bucket", token_bucket_case),
]
# The leaky bucket is left out: on one key it admits at most one request per
# microsecond, less than a loop of calls asks for. benchmarks/bench_limiters.py
# times it on several keys.
ALGORITHMS = ("token-bucket", "fixed-window", "sliding-window", "sliding-log")
# Which resilio call returns what an anchor's decision returns (a bool, or a rich result).
RESILIO_PEER_API = {
    "limits": "allow",
    "throttled-py": "try_acquire",
    "pyrate-limiter": "allow",
    "token-bucket": "allow",
    "floor": "allow",
    "floor-decision": "try_acquire",
}


def _plain(key: str, cost: int) -> bool:
    return True


async def _plain_async(key: str, cost: int) -> bool:
    return True


def decision_cases(anchors: bool, path: str) -> list[Case]:
    """Return one decision per call on one key: ``path`` is ``allow`` or ``reject``.

    A plain function of the same arguments is timed with them, the baseline of
    the ratios to a plain call.
    """
    reject = path == "reject"
    cases = [
        Case(
            f"{path}/plain",
            "plain",
            "sync",
            lambda: _plain,
            args=(KEY, 1),
            setup="def plain(key, cost): return True",
        ),
        Case(
            f"{path}/plain_async",
            "plain",
            "async",
            lambda: _plain_async,
            args=(KEY, 1),
            setup="async def plain(key, cost): return True",
        ),
    ]
    if not reject:
        # The least a thread-safe decision costs here: see `floor`.
        cases.extend(
            Case(
                f"{path}/token-bucket/{name}",
                "floor",
                "sync",
                floor_case(api),
                args=(KEY, 1),
                setup=f"the floor: a lock, a clock read, one dict entry, in one function ({api})",
                tags={"algorithm": "token-bucket", "api": api},
            )
            for name, api in (("floor", "allow"), ("floor-decision", "try_acquire"))
        )
    for algorithm in ALGORITHMS:
        cases.extend(
            Case(
                f"{path}/{algorithm}/resilio.{api}",
                "resilio",
                "async" if api.endswith("_async") else "sync",
                resilio_case(algorithm, api, reject),
                args=(KEY, 1),
                setup=f"resilio {algorithm}: limiter.{api}(key, 1)",
                tags={"algorithm": algorithm, "api": api},
            )
            for api in ("allow", "try_acquire", "try_acquire_async")
        )
        if not anchors:
            continue
        for library, factory in _ANCHORS:
            cases.append(
                Case(
                    f"{path}/{algorithm}/{library}",
                    library,
                    "sync",
                    factory(algorithm, reject),
                    args=(KEY,) if library == "limits" else (KEY, 1),
                    setup=ANCHOR_APIS[library],
                    tags={"algorithm": algorithm, "api": ANCHOR_APIS[library]},
                )
            )
    return cases


# -- accuracy of blocking waits ------------------------------------------------------------

WAITERS = 4


def _threads(acquire: Callable[[], Any], admissions: int) -> list[float]:
    """``WAITERS`` threads acquire in a loop; return the first ``admissions`` admission times."""
    times: list[float] = []
    lock = threading.Lock()

    def waiter() -> None:
        while True:
            acquire()
            with lock:
                if len(times) >= admissions:
                    return
                times.append(time.perf_counter())

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(WAITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return times


def _tasks(acquire: Callable[[], Any], admissions: int) -> list[float]:
    """``WAITERS`` asyncio tasks acquire in a loop; return the first admission times."""
    times: list[float] = []

    async def waiter() -> None:
        while len(times) < admissions:
            await acquire()
            if len(times) < admissions:
                times.append(time.perf_counter())

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(waiter() for _ in range(WAITERS))), 30)

    asyncio.run(main())
    return times


def _wait_resilio_sync(rate: float) -> Callable[[], Any]:
    import resilio

    limiter = resilio.TokenBucket(rate=rate, per=1.0, capacity=1)
    return partial(limiter.acquire, "k", 1, 10.0)


def _wait_resilio_async(rate: float) -> Callable[[], Any]:
    import resilio

    limiter = resilio.TokenBucket(rate=rate, per=1.0, capacity=1)
    return partial(limiter.acquire_async, "k", 1, 10.0)


def _wait_aiolimiter(rate: float) -> Callable[[], Any]:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(1, 1 / rate)
    return limiter.acquire


def _pyrate_limiter(rate: float) -> Any:
    import pyrate_limiter as pl

    return pl.Limiter(pl.StateBucket([pl.Rate(1, round(1000 / rate))], algorithm=pl.TokenBucket()))


def _wait_pyrate_sync(rate: float) -> Callable[[], Any]:
    return partial(_pyrate_limiter(rate).try_acquire, "k", 1, True)


def _wait_pyrate_async(rate: float) -> Callable[[], Any]:
    return partial(_pyrate_limiter(rate).try_acquire_async, "k", 1, True)


def _wait_throttled_sync(rate: float) -> Callable[[], Any]:
    from throttled import MemoryStore, RateLimiterType, Throttled, per_sec

    throttle = Throttled(
        using=RateLimiterType.GCRA.value,  # its token bucket refills in whole seconds
        quota=per_sec(int(rate), burst=1),
        store=MemoryStore(),
        timeout=10,
    )
    return partial(throttle.limit, "k")


def _wait_throttled_async(rate: float) -> Callable[[], Any]:
    from throttled import RateLimiterType, per_sec
    from throttled.asyncio import MemoryStore, Throttled

    throttle = Throttled(
        using=RateLimiterType.GCRA.value,
        quota=per_sec(int(rate), burst=1),
        store=MemoryStore(),
        timeout=10,
    )
    return partial(throttle.limit, "k")


WAIT_CASES: dict[str, tuple[str, str, Callable[[float], Callable[[], Any]], str]] = {
    "resilio/sync": ("resilio", "sync", _wait_resilio_sync, "TokenBucket.acquire(key, timeout=10)"),
    "resilio/async": (
        "resilio",
        "async",
        _wait_resilio_async,
        "await TokenBucket.acquire_async(key, timeout=10)",
    ),
    "aiolimiter/async": (
        "aiolimiter",
        "async",
        _wait_aiolimiter,
        "AsyncLimiter(1, 1 / rate).acquire()",
    ),
    "pyrate-limiter/sync": (
        "pyrate-limiter",
        "sync",
        _wait_pyrate_sync,
        "Limiter(StateBucket(TokenBucket)).try_acquire(key, blocking=True); default buffer_ms=50",
    ),
    "pyrate-limiter/async": (
        "pyrate-limiter",
        "async",
        _wait_pyrate_async,
        "await Limiter(...).try_acquire_async(key, blocking=True)",
    ),
    "throttled-py/sync": (
        "throttled-py",
        "sync",
        _wait_throttled_sync,
        "Throttled(gcra, per_sec(rate, burst=1), timeout=10).limit(key)",
    ),
    "throttled-py/async": (
        "throttled-py",
        "async",
        _wait_throttled_async,
        "await throttled.asyncio.Throttled(...).limit(key)",
    ),
}
NO_WAIT = {
    "limits": "no blocking API: callers sleep on their own",
    "token-bucket": "no blocking API: consume() only answers yes or no",
}


def accuracy(name: str, rate: float, seconds: float) -> dict[str, Any]:
    """Admit ``rate * seconds`` calls through ``WAITERS`` blocked callers; measure the rate.

    The bucket holds one token, so there is no burst: every admission after the
    first had to wait. The admitted rate is (admissions - 1) / (last - first).
    """
    _library, mode, factory, _setup = WAIT_CASES[name]
    acquire = factory(rate)
    admissions = max(3, round(rate * seconds) + 1)
    times = (_threads if mode == "sync" else _tasks)(acquire, admissions)
    measured = (len(times) - 1) / (times[-1] - times[0])
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return {
        "configured_rate": rate,
        "admitted_rate": measured,
        "ratio": measured / rate,
        "admissions": len(times),
        "shortest_gap_ms": gaps[0] * 1e3,
        "longest_gap_ms": gaps[-1] * 1e3,
    }


# -- memory per key --------------------------------------------------------------------------


def _mem_resilio(algorithm: str) -> Callable[[str], Any]:
    import resilio

    limiter: Any
    if algorithm == "token-bucket":
        limiter = resilio.TokenBucket(rate=100, per=60.0, capacity=100)
    elif algorithm == "fixed-window":
        limiter = resilio.FixedWindow(limit=100, window=60.0)
    elif algorithm == "sliding-window":
        limiter = resilio.SlidingWindow(limit=100, window=60.0)
    else:
        limiter = resilio.SlidingWindowLog(limit=100, window=60.0)
    return limiter.allow  # type: ignore[no-any-return]


def _mem_limits(algorithm: str) -> Callable[[str], Any]:
    from limits import RateLimitItemPerMinute, storage, strategies

    kind = {
        "fixed-window": strategies.FixedWindowRateLimiter,
        "sliding-window": strategies.SlidingWindowCounterRateLimiter,
        "sliding-log": strategies.MovingWindowRateLimiter,
    }[algorithm]
    return partial(kind(storage.MemoryStorage()).hit, RateLimitItemPerMinute(100))


def _mem_throttled(algorithm: str) -> Callable[[str], Any]:
    from throttled import MemoryStore, RateLimiterType, Throttled, per_min

    kind = {
        "token-bucket": RateLimiterType.TOKEN_BUCKET,
        "fixed-window": RateLimiterType.FIXED_WINDOW,
        "sliding-window": RateLimiterType.SLIDING_WINDOW,
    }[algorithm]
    store = MemoryStore(options={"MAX_SIZE": 1_000_000})  # the default 1024 would evict
    return Throttled(using=kind.value, quota=per_min(100), store=store).limit


def _mem_pyrate(algorithm: str) -> Callable[[str], Any]:
    import pyrate_limiter as pl

    rates = [pl.Rate(100, pl.Duration.MINUTE)]

    class PerKey(pl.BucketFactory):  # type: ignore[misc]
        """One bucket per key: pyrate-limiter's documented way to limit per key."""

        def __init__(self) -> None:
            self.buckets: dict[str, Any] = {}
            self.clock = pl.MonotonicClock()

        def wrap_item(self, name: str, weight: int = 1) -> Any:
            return pl.RateItem(name, self.clock.now(), weight=weight)

        def get(self, item: Any) -> Any:
            bucket = self.buckets.get(item.name)
            if bucket is None:
                bucket = self.buckets[item.name] = pl.StateBucket(rates, algorithm=pl.TokenBucket())
            return bucket

    return partial(pl.Limiter(PerKey()).try_acquire, blocking=False)


def _mem_token_bucket(algorithm: str) -> Callable[[str], Any]:
    import token_bucket

    return token_bucket.Limiter(100 / 60, 100, token_bucket.MemoryStorage()).consume


MEMORY_CASES: dict[str, tuple[str, str, Callable[[str], Callable[[str], Any]]]] = {
    "token-bucket/resilio": ("resilio", "token-bucket", _mem_resilio),
    "token-bucket/throttled-py": ("throttled-py", "token-bucket", _mem_throttled),
    "token-bucket/pyrate-limiter": ("pyrate-limiter", "token-bucket", _mem_pyrate),
    "token-bucket/token-bucket": ("token-bucket", "token-bucket", _mem_token_bucket),
    "fixed-window/resilio": ("resilio", "fixed-window", _mem_resilio),
    "fixed-window/limits": ("limits", "fixed-window", _mem_limits),
    "fixed-window/throttled-py": ("throttled-py", "fixed-window", _mem_throttled),
    "sliding-window/resilio": ("resilio", "sliding-window", _mem_resilio),
    "sliding-window/limits": ("limits", "sliding-window", _mem_limits),
    "sliding-window/throttled-py": ("throttled-py", "sliding-window", _mem_throttled),
    "sliding-log/resilio": ("resilio", "sliding-log", _mem_resilio),
    "sliding-log/limits": ("limits", "sliding-log", _mem_limits),
}


def memory(name: str, keys: int) -> dict[str, Any]:
    """Bytes allocated per key after one decision on each of ``keys`` distinct keys.

    tracemalloc counts every Python allocation made while the keys are decided
    (the limiter's state, its own key strings, containers), not the key strings
    passed in, which exist before tracing starts.
    """
    _library, algorithm, factory = MEMORY_CASES[name]
    decide = factory(algorithm)
    names = [f"user:{i}" for i in range(keys)]
    decide("warm-up")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for key in names:
        decide(key)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"keys": keys, "bytes": after - before, "bytes_per_key": (after - before) / keys}
