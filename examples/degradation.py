"""A degradation experiment: a service under 30 % injected faults, with and without resilio.

A small "checkout" service asks a pricing dependency for a price over HTTP.
The dependency answers in about 10 ms, but `resilio.chaos.AsyncChaosTransport`
sits between them and breaks 30 % of requests (connection refused, a timeout,
a 503, or a body cut off halfway, in equal shares) and adds latency (an
exponential tail, mean 80 ms) to half of them. The same calls, with the same
seed, go through two clients:

* **without resilio**: the httpx client with a 1 s timeout, and nothing else;
* **with resilio**: the same client behind a pipeline: a fallback to the last
  known price, a 1 s budget, retries with jittered backoff, hedging after
  150 ms, a bulkhead, and a 300 ms limit per attempt.

It prints the success rate (live answers), the served rate (live or fallback
answers) and p50/p99 latency side by side, and plots them to a PNG. Run it
with::

    python examples/degradation.py --calls 400 --seed 7 --plot docs/degradation.png
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

import resilio
from resilio import Bulkhead, chaos, fallback, hedge

FAULT_RATE = 0.30  # share of requests that fail, all kinds together
FAULT_KINDS = 4  # connect error, timeout, 503, body cut short
LATENCY_RATE = 0.5  # share of requests that get extra latency
LATENCY_MEAN = 0.08  # seconds, mean of the exponential extra latency
CLIENT_TIMEOUT = 1.0  # seconds, the httpx timeout on both sides
BUDGET = 1.0  # seconds a call may take in all, with resilio
PER_ATTEMPT = 0.3  # seconds one attempt may take, with resilio
HEDGE_AFTER = 0.15  # seconds before a second attempt starts, with resilio
DEFAULT_PLOT = Path(__file__).resolve().parent.parent / "docs" / "degradation.png"

Fetch = Callable[[], Awaitable["Quote"]]


@dataclass(frozen=True)
class Quote:
    """What the checkout service answers: a price, live or from its cache."""

    price: float
    live: bool


@dataclass
class Side:
    """What one side of the experiment saw."""

    label: str
    live: int = 0
    fallback: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    requests: int = 0  # HTTP requests sent towards the dependency

    @property
    def calls(self) -> int:
        return self.live + self.fallback + self.failed

    @property
    def success_rate(self) -> float:
        return self.live / self.calls if self.calls else 0.0

    @property
    def served_rate(self) -> float:
        return (self.live + self.fallback) / self.calls if self.calls else 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies) or [0.0]
        return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def pricing_dependency(seed: int, side: Side) -> httpx.AsyncBaseTransport:
    """The dependency: about 10 ms per answer, behind 30 % injected faults and extra latency."""
    rng = random.Random(seed)

    async def answer(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.008 + rng.random() * 0.004)
        return httpx.Response(200, json={"price": 42.0})

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            side.requests += 1
            return await chaotic.handle_async_request(request)

    # Equal shares of four kinds that together fail FAULT_RATE of the requests.
    each = 1 - (1 - FAULT_RATE) ** (1 / FAULT_KINDS)
    chaotic = chaos.AsyncChaosTransport(
        httpx.MockTransport(answer),
        connect_error_rate=each,
        timeout_rate=each,
        status_rate=each,
        status_code=503,
        drop_rate=each,
        latency_rate=LATENCY_RATE,
        latency=chaos.exponential(LATENCY_MEAN),
        seed=seed,
    )
    return Counting()


async def fetch_price(client: httpx.AsyncClient) -> Quote:
    """Ask the dependency for a price; any transport error or 5xx raises."""
    response = await client.get("/price")
    response.raise_for_status()
    return Quote(float(response.json()["price"]), live=True)


def retryable(outcome: resilio.Outcome[Any]) -> bool:
    """Transport errors, 5xx answers and per-attempt timeouts are worth another try."""
    exc = outcome.exception
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, (httpx.TransportError, resilio.TimeoutExceeded))


def resilient(client: httpx.AsyncClient, seed: int) -> Fetch:
    """The checkout service's call with resilio around it."""
    last_price = 42.0  # the last live price; a real service would keep it in a cache

    def from_cache(outcome: resilio.Outcome[Any]) -> Quote:
        return Quote(last_price, live=False)

    policy = resilio.Pipeline(
        fallback(func=from_cache, on=(Exception,)),
        resilio.timeout(BUDGET),
        resilio.retry(
            on=retryable,
            attempts=4,
            backoff=resilio.backoff.exponential(initial=0.02, max=0.2, jitter="full"),
            random=random.Random(seed).random,
        ),
        hedge(delay=HEDGE_AFTER, attempts=2),
        Bulkhead(max_concurrent=64, max_queue=256),
        resilio.timeout(PER_ATTEMPT),
    )

    @policy
    async def fetch() -> Quote:
        nonlocal last_price
        quote = await fetch_price(client)
        last_price = quote.price
        return quote

    return fetch


def bare(client: httpx.AsyncClient) -> Fetch:
    """The same call with nothing around it."""

    async def fetch() -> Quote:
        return await fetch_price(client)

    return fetch


async def one_call(fetch: Fetch, side: Side) -> None:
    started = time.perf_counter()
    try:
        quote = await fetch()
    except Exception:
        side.failed += 1
    else:
        if quote.live:
            side.live += 1
        else:
            side.fallback += 1
    side.latencies.append(time.perf_counter() - started)


async def experiment(calls: int, concurrency: int, seed: int) -> tuple[Side, Side]:
    without, with_ = Side("without resilio"), Side("with resilio")
    timeout = httpx.Timeout(CLIENT_TIMEOUT)
    async with (
        httpx.AsyncClient(
            transport=pricing_dependency(seed, without), base_url="http://pricing", timeout=timeout
        ) as plain_client,
        httpx.AsyncClient(
            transport=pricing_dependency(seed, with_), base_url="http://pricing", timeout=timeout
        ) as resilient_client,
    ):
        sides = ((bare(plain_client), without), (resilient(resilient_client, seed), with_))
        limiter = anyio.Semaphore(concurrency)

        async def call(fetch: Fetch, side: Side) -> None:
            async with limiter:
                await one_call(fetch, side)

        async with anyio.create_task_group() as group:
            for _ in range(calls):
                for fetch, side in sides:
                    group.start_soon(call, fetch, side)
    return without, with_


def report(sides: tuple[Side, Side], calls: int, seed: int) -> str:
    header = (
        f"{'':<16} {'calls':>6} {'live':>6} {'fallback':>9} {'failed':>7} "
        f"{'success':>8} {'served':>7} {'p50 ms':>7} {'p99 ms':>7} {'requests':>9}"
    )
    lines = [
        f"== Degradation: {calls} calls per side, seed {seed}, {FAULT_RATE:.0%} injected faults, "
        f"extra latency on {LATENCY_RATE:.0%} (mean {LATENCY_MEAN * 1000:.0f} ms) ==",
        header,
    ]
    lines.extend(
        f"{side.label:<16} {side.calls:6} {side.live:6} {side.fallback:9} {side.failed:7} "
        f"{side.success_rate:8.1%} {side.served_rate:7.1%} "
        f"{side.percentile(0.5) * 1000:7.0f} {side.percentile(0.99) * 1000:7.0f} "
        f"{side.requests:9}"
        for side in sides
    )
    without, with_ = sides
    lines.append(
        f"Success rate: with resilio {with_.success_rate:.1%}, without resilio "
        f"{without.success_rate:.1%}; served with fallback {with_.served_rate:.1%}"
    )
    lines.append(
        f"p99 latency: with resilio {with_.percentile(0.99) * 1000:.0f} ms, without resilio "
        f"{without.percentile(0.99) * 1000:.0f} ms"
    )
    return "\n".join(lines)


def plot(sides: tuple[Side, Side], path: Path) -> None:
    """Draw success and served rates, and p50/p99 latency, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [side.label for side in sides]
    colors = ["#c0504d", "#4f81bd"]
    figure, (rates, latency) = plt.subplots(1, 2, figsize=(10, 4.2))

    width = 0.38
    for index, side in enumerate(sides):
        offset = (index - 0.5) * width
        values = [side.success_rate * 100, side.served_rate * 100]
        bars = rates.bar([x + offset for x in (0, 1)], values, width, color=colors[index])
        rates.bar_label(bars, fmt="%.1f%%", fontsize=8)
        values = [side.percentile(0.5) * 1000, side.percentile(0.99) * 1000]
        bars = latency.bar([x + offset for x in (0, 1)], values, width, color=colors[index])
        latency.bar_label(bars, fmt="%.0f", fontsize=8)
    rates.set_xticks([0, 1], ["success (live answer)", "served (live or fallback)"])
    rates.set_ylabel("% of calls")
    rates.set_ylim(0, 110)
    rates.set_title("Answers")
    latency.set_xticks([0, 1], ["p50", "p99"])
    latency.set_ylabel("ms per call")
    latency.set_title("Latency")
    figure.legend(labels, loc="upper center", ncol=2, frameon=False)
    figure.suptitle(
        f"{FAULT_RATE:.0%} injected faults + extra latency", y=0.02, fontsize=9, va="bottom"
    )
    figure.tight_layout(rect=(0, 0.05, 1, 0.92))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per side; default 400")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="calls in flight per side; default 20"
    )
    parser.add_argument("--seed", type=int, default=7, help="fault and jitter seed; default 7")
    parser.add_argument(
        "--plot", type=Path, default=DEFAULT_PLOT, help=f"PNG to write; default {DEFAULT_PLOT}"
    )
    parser.add_argument("--no-plot", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not 10 <= args.calls <= 10_000:
        parser.error("--calls must be between 10 and 10000")
    if not 1 <= args.concurrency <= 200:
        parser.error("--concurrency must be between 1 and 200")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    sides = anyio.run(experiment, args.calls, args.concurrency, args.seed)
    print(report(sides, args.calls, args.seed))
    print(f"Finished in {time.perf_counter() - started:.1f} s")
    if not args.no_plot:
        try:
            plot(sides, args.plot)
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
        else:
            print(f"Plot written to {args.plot}")


if __name__ == "__main__":
    main()
