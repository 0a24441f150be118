"""Draw admissions over time for every rate limiter on one bursty input.

Run from the repository root: ``python docs/plots/limiters.py``. It writes one
PNG per algorithm next to this script. The input and the limiters are
deterministic (a fixed random seed and a fake clock), so the pictures only
change when the algorithms do.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import trio
import trio.testing

from resilio import (
    FixedWindow,
    LeakyBucket,
    RateLimiter,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)
from resilio._errors import RateLimitExceeded
from resilio.testing import FakeClock

HERE = Path(__file__).parent
DURATION = 6.0
LIMIT = 10  # per second, for every algorithm


def bursty_arrivals(seed: int = 3) -> list[float]:
    """A quiet trickle (3/s) with three bursts: 40 at 0.5 s, 25 at 2.2 s, 60 from 4.0 s."""
    rng = random.Random(seed)
    times = [rng.uniform(0, DURATION) for _ in range(int(3 * DURATION))]
    times += [0.5 + rng.uniform(0, 0.05) for _ in range(40)]
    times += [2.2 + rng.uniform(0, 0.1) for _ in range(25)]
    times += [4.0 + rng.uniform(0, 0.8) for _ in range(60)]
    return sorted(times)


def admissions(limiter: RateLimiter, clock: FakeClock, arrivals: list[float]) -> list[float]:
    """Ask ``limiter`` at each arrival time (never waiting); return the admitted times."""
    admitted = []
    for t in arrivals:
        clock.advance(max(0.0, t - clock.now()))
        if limiter.allow("k"):
            admitted.append(t)
    return admitted


class TrioClock:
    """Trio's clock as a resilio clock: with trio's MockClock, sleeping takes no real time."""

    def now(self) -> float:
        """Trio's current (virtual) time in seconds."""
        return float(trio.current_time())

    def sleep(self, seconds: float) -> None:
        """Refuse: this script only uses the async API."""
        raise RuntimeError("only the async API is used here")

    async def sleep_async(self, seconds: float) -> None:
        """Sleep on trio's clock."""
        await trio.sleep(seconds)


def shaped(arrivals: list[float]) -> list[float]:
    """Run the real leaky bucket's acquire_async on virtual time: callers queue, then leave."""
    released: list[float] = []

    async def caller(limiter: LeakyBucket, start: float, at: float) -> None:
        await trio.sleep_until(start + at)
        try:
            await limiter.acquire_async("k", 1, None)
        except RateLimitExceeded:
            return  # the queue was full
        released.append(trio.current_time() - start)

    async def main() -> None:
        limiter = LeakyBucket(rate=LIMIT, per=1.0, capacity=20, clock=TrioClock())
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for at in arrivals:
                nursery.start_soon(caller, limiter, start, at)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return sorted(released)


def plot(name: str, title: str, arrivals: list[float], admitted: list[float], note: str) -> None:
    """Draw requests and admissions (cumulative, and per 0.1 s) into ``<name>.png``."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 4.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    top.step(arrivals, range(1, len(arrivals) + 1), where="post", label="requests", color="0.6")
    top.step(admitted, range(1, len(admitted) + 1), where="post", label="admitted", color="C0")
    top.plot([0, DURATION], [0, LIMIT * DURATION], "--", color="C3", lw=1, label="10 per second")
    top.set_ylabel("cumulative count")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title, fontsize=10)
    bins = [i / 10 for i in range(int(DURATION * 10) + 1)]
    bottom.hist(arrivals, bins=bins, color="0.8", label="requests per 0.1 s")
    bottom.hist(admitted, bins=bins, color="C0", label="admitted per 0.1 s")
    bottom.set_xlabel("time (s)")
    bottom.legend(loc="upper left", fontsize=8)
    fig.text(0.99, 0.01, note, ha="right", fontsize=7, color="0.4")
    fig.tight_layout()
    fig.savefig(HERE / f"{name}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    """Draw every algorithm on the same input."""
    arrivals = bursty_arrivals()
    cases: list[tuple[str, str, Any, str]] = [
        ("token-bucket", "TokenBucket(rate=10, per=1.0, capacity=10)",
         lambda c: TokenBucket(rate=LIMIT, per=1.0, capacity=LIMIT, clock=c), "try_acquire"),
        ("leaky-bucket", "LeakyBucket(rate=10, per=1.0): try_acquire, no queue",
         lambda c: LeakyBucket(rate=LIMIT, per=1.0, clock=c), "try_acquire"),
        ("fixed-window", "FixedWindow(limit=10, window=1.0)",
         lambda c: FixedWindow(limit=LIMIT, window=1.0, clock=c), "try_acquire"),
        ("sliding-window", "SlidingWindow(limit=10, window=1.0)",
         lambda c: SlidingWindow(limit=LIMIT, window=1.0, clock=c), "try_acquire"),
        ("sliding-window-log", "SlidingWindowLog(limit=10, window=1.0)",
         lambda c: SlidingWindowLog(limit=LIMIT, window=1.0, clock=c), "try_acquire"),
    ]  # fmt: skip
    for name, title, factory, api in cases:
        clock = FakeClock(start=0.0)
        admitted = admissions(factory(clock), clock, arrivals)
        plot(name, title, arrivals, admitted, f"{len(admitted)} of {len(arrivals)} admitted; {api}")
    released = shaped(arrivals)
    plot(
        "leaky-bucket-queue",
        "LeakyBucket(rate=10, per=1.0, capacity=20): acquire, callers wait in line",
        arrivals,
        released,
        f"{len(released)} of {len(arrivals)} admitted after waiting; the rest found the queue full",
    )


if __name__ == "__main__":
    main()
