"""resilio against a flaky HTTP service, side by side with the same traffic sent without it.

Two copies of `flaky_service.FlakyService` start with the same seed and the
same outage window. One schedule of calls (``--rate`` per second for
``--duration`` seconds) goes to both at the same moments:

* **with resilio**: an ``httpx.AsyncClient`` whose transport is a
  `resilio.httpx.AsyncResilientTransport`, with a pipeline of a total budget,
  retries with jittered exponential backoff that honour ``Retry-After``, a
  client-side rate limiter that smooths bursts of retries, a circuit
  breaker, and a per-attempt timeout;
* **without resilio**: the same client with the same total timeout and nothing else.

A line per second reports both sides; breaker transitions are printed as they
happen; the summary compares success rates. Run it with::

    python examples/demo.py --duration 12 --seed 7

With ``--chaos``, a `resilio.chaos.AsyncChaosTransport` sits under both
clients and injects network faults of its own on top of the service's:
refused connections, 503 answers, bodies cut off halfway, and extra latency.
"""

from __future__ import annotations

import argparse
import collections
import math
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

import resilio
from resilio import chaos
from resilio.httpx import AsyncResilientTransport, http_failure, http_retry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flaky_service import Fault, FlakyService  # the sibling module, found via sys.path

BUDGET = 3.0  # seconds a call may take in all, with and without resilio
PER_ATTEMPT = 0.5  # seconds one attempt may take (with resilio)
MAX_RETRY_AFTER = 2.0  # never wait longer than this for a server's Retry-After, in seconds
HANG = 5.0  # how long a hanging request takes on the server, in seconds
RECOVERY_TIME = 0.5  # seconds the breaker stays open before it lets a probe through
CLIENT_RATE = 100.0  # requests per second the client allows itself (a token bucket)
CLIENT_BURST = 20  # requests it may send at once above that rate
CLIENT_WAIT = 0.5  # seconds an attempt may wait for the limiter before it is rejected
CHAOS_RATE = 0.04  # with --chaos: share of requests per injected fault kind
CHAOS_LATENCY = 0.05  # with --chaos: mean extra latency in seconds, on a fifth of requests

KINDS = ("timeout", "5xx", "circuit open", "rate limited", "transport")

Get = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


@dataclass
class Tally:
    """What one side of the comparison saw."""

    calls: int = 0
    ok: int = 0
    sent: int = 0  # HTTP requests that reached the network
    sent_in_outage: int = 0  # requests the service received during its outage
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    failed_time: float = 0.0  # seconds callers spent in calls that failed

    @property
    def rate(self) -> float:
        return self.ok / self.calls if self.calls else 0.0


@dataclass
class ResilioLog:
    """What resilio's events told us."""

    transitions: list[tuple[float, str, str]] = field(default_factory=list)
    retries: int = 0
    retry_after_waits: int = 0
    gave_up: collections.Counter[str] = field(default_factory=collections.Counter)
    events: collections.Counter[str] = field(default_factory=collections.Counter)
    limiter_delayed: int = 0  # attempts the client-side limiter made wait
    limiter_waited: float = 0.0  # seconds they waited in all
    limiter_rejected: int = 0  # attempts it refused (the wait would have been too long)


def failure_kind(exc: BaseException) -> str:
    """Sort an exception into one of `KINDS` (or ``other``)."""
    if isinstance(exc, resilio.CircuitOpenError):
        return "circuit open"
    if isinstance(exc, resilio.RateLimitExceeded):
        return "rate limited"
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500:
        return "5xx"
    if isinstance(exc, httpx.TransportError):
        return "transport"
    return "other"


class CountingTransport(httpx.AsyncBaseTransport):
    """The real transport, counting the requests that reach the network."""

    def __init__(self, tally: Tally, **options: object) -> None:
        self._tally = tally
        self._inner = httpx.AsyncHTTPTransport(**options)  # type: ignore[arg-type]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._tally.sent += 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def with_chaos(transport: httpx.AsyncBaseTransport, seed: int) -> httpx.AsyncBaseTransport:
    """Put injected network faults (``--chaos``) between a client and the network."""
    return chaos.AsyncChaosTransport(
        transport,
        connect_error_rate=CHAOS_RATE,
        status_rate=CHAOS_RATE,
        drop_rate=CHAOS_RATE,
        latency_rate=0.2,
        latency=chaos.exponential(CHAOS_LATENCY),
        seed=seed,
        name="demo-chaos",
    )


def wait_for_breaker(rng: random.Random) -> Callable[[resilio.Outcome[object]], bool | float]:
    """Return the ``on=`` predicate that waits out a rejection when the budget allows.

    `http_retry` does not retry a call the breaker or the client-side limiter
    rejected: it fails fast. This outer policy waits for the rejection's own
    ``retry_after`` when the call's budget (`resilio.time_remaining`) lasts
    that long, and gives up at once otherwise: the budget is how long the
    caller is willing to wait, and the breaker still lets only probes through
    to the struggling service. The small random spread keeps the calls that
    waited from arriving all at once.
    """

    def should_wait(outcome: resilio.Outcome[object]) -> bool | float:
        exc = outcome.exception
        if not isinstance(exc, resilio.RejectedError):
            return False
        wait = exc.retry_after + rng.uniform(0.0, 0.1)
        remaining = resilio.time_remaining()
        return wait if remaining is not None and wait < remaining else False

    return should_wait


def resilient_transport(
    tally: Tally,
    log: ResilioLog,
    t0: float,
    seed: int,
    limits: httpx.Limits,
    *,
    inject_chaos: bool = False,
) -> tuple[AsyncResilientTransport, resilio.CircuitBreaker]:
    """Build the transport: timeout + breaker wait + HTTP retry + breaker + timeout."""

    def on_breaker_event(event: resilio.Event) -> None:
        if event.kind is resilio.EventKind.BREAKER_STATE_CHANGED:
            at = event.time - t0
            previous, state = _state_name(event.previous_state), _state_name(event.state)
            log.transitions.append((at, previous, state))
            print(f"{at:6.2f}s  breaker {event.source!r}: {previous} -> {state}", flush=True)

    def before_sleep(event: resilio.Event) -> None:
        log.retries += 1
        if _is_retry_after(event.outcome):
            log.retry_after_waits += 1

    def on_give_up(event: resilio.Event) -> None:
        log.gave_up[event.reason.value if event.reason is not None else "?"] += 1

    def on_limiter_event(event: resilio.Event) -> None:
        if event.kind is resilio.EventKind.LIMITER_WAITED:
            log.limiter_delayed += 1
            log.limiter_waited += event.delay or 0.0
        elif event.kind is resilio.EventKind.LIMITER_REJECTED:
            log.limiter_rejected += 1

    # A failure rate over the last 40 calls rather than consecutive failures:
    # with ~20 % of requests failing at random and many calls in flight, a run
    # of 5 failures happens by chance, while half of 40 does not.
    breaker = resilio.CircuitBreaker(
        name="flaky",
        failure_rate=0.5,
        window=40,
        minimum_calls=20,
        recovery_time=RECOVERY_TIME,
        # A probe is one attempt, so it cannot run longer than PER_ATTEMPT; calls
        # that find the probe slot busy learn when it frees up.
        half_open_timeout=PER_ATTEMPT,
        on=http_failure,  # 5xx answers and transport errors, not only exceptions
        listeners=[on_breaker_event],
    )
    # The client's own pace: bursts of retries wait their turn (FIFO) instead of
    # hitting a struggling service all at once; an attempt that would wait
    # longer than CLIENT_WAIT is refused with RateLimitExceeded.
    limiter = resilio.TokenBucket(
        rate=CLIENT_RATE,
        capacity=CLIENT_BURST,
        timeout=CLIENT_WAIT,
        name="demo-client",
        listeners=[on_limiter_event],
    )
    policy = resilio.Pipeline(
        resilio.timeout(BUDGET),  # the whole call, retries and waits included
        resilio.retry(
            on=wait_for_breaker(random.Random(seed)),
            attempts=None,  # as many waits as the budget allows
            deadline=BUDGET,
            before_sleep=before_sleep,
            name="breaker-wait",
        ),
        http_retry(
            attempts=4,
            statuses={500, 502, 503, 504},  # this service fails with plain 500s too
            backoff=resilio.backoff.exponential(initial=0.05, max=1.0, jitter="full"),
            max_retry_after=MAX_RETRY_AFTER,
            before_sleep=before_sleep,
            on_give_up=on_give_up,
            random=random.Random(seed + 1).random,  # reproducible jitter
        ),
        limiter,  # each attempt, retries included
        breaker,
        resilio.timeout(PER_ATTEMPT),  # one attempt
    )
    network: httpx.AsyncBaseTransport = CountingTransport(tally, limits=limits)
    if inject_chaos:
        # Innermost, so the pipeline above sees the injected faults and handles them.
        network = with_chaos(network, seed + 2)
    return AsyncResilientTransport(network, pipeline=policy), breaker


async def checked_get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """GET ``path``; a 4xx or 5xx answer raises `httpx.HTTPStatusError`."""
    response = await client.get(path)
    response.raise_for_status()
    return response


def plain_get(tally: Tally) -> Get:
    """Build the same call without resilio: the client's timeout is all it has."""

    async def get(client: httpx.AsyncClient, path: str) -> httpx.Response:
        tally.sent += 1
        response = await client.get(path)
        response.raise_for_status()
        return response

    return get


def _state_name(state: object) -> str:
    return str(getattr(state, "value", state))


def _is_retry_after(outcome: resilio.Outcome[object] | None) -> bool:
    response = outcome.result if outcome is not None else None
    return (
        isinstance(response, httpx.Response)
        and response.status_code == 503
        and "Retry-After" in response.headers
    )


async def one_call(get: Get, client: httpx.AsyncClient, path: str, tally: Tally) -> None:
    started = time.monotonic()
    try:
        await get(client, path)
    except Exception as exc:
        tally.failures[failure_kind(exc)] += 1
        tally.failed_time += time.monotonic() - started
    else:
        tally.ok += 1
    tally.latencies.append(time.monotonic() - started)
    tally.calls += 1


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    - "


def live_header() -> str:
    return (
        "  time |  with resilio: ok/calls  rate  sent  tmo 5xx open tran"
        " | without: ok/calls  rate  tmo 5xx tran | breaker   | limiter delayed/rejected"
    )


def live_line(at: float, ours: Tally, theirs: Tally, breaker_state: str, log: ResilioLog) -> str:
    f, g = ours.failures, theirs.failures
    return (
        f"{at:5.1f}s | {ours.ok:>14}/{ours.calls:<5} {_percent(ours.ok, ours.calls)} {ours.sent:5}"
        f"  {f['timeout']:3} {f['5xx']:3} {f['circuit open']:4} {f['transport']:4}"
        f" | {theirs.ok:>9}/{theirs.calls:<5} {_percent(theirs.ok, theirs.calls)}"
        f"  {g['timeout']:3} {g['5xx']:3} {g['transport']:4} | {breaker_state:<9}"
        f" | {log.limiter_delayed:>7}/{log.limiter_rejected}"
    )


def summary(
    args: argparse.Namespace,
    ours: Tally,
    theirs: Tally,
    log: ResilioLog,
    outage: tuple[float, float],
    elapsed: float,
) -> str:
    def row(label: str, tally: Tally) -> str:
        lat = sorted(tally.latencies) or [0.0]
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)]
        f = tally.failures
        return (
            f"{label:<16} {tally.calls:6} {tally.ok:10} {_percent(tally.ok, tally.calls):>8}"
            f" {f['timeout']:8} {f['5xx']:5} {f['circuit open']:13} {f['rate limited']:13}"
            f" {f['transport']:10}"
            f" {f['other']:6} {tally.sent:14}   {p50 * 1000:6.0f} / {p99 * 1000:5.0f}"
            f" {tally.failed_time:14.1f}"
        )

    transitions = ", ".join(f"{at:.2f}s {a}->{b}" for at, a, b in log.transitions) or "none"
    gave_up = ", ".join(f"{n} {reason}" for reason, n in sorted(log.gave_up.items())) or "none"
    events = ", ".join(f"{kind} {n}" for kind, n in sorted(log.events.items())) or "none"
    lines = [
        "",
        f"== Summary: {args.duration:g} s of traffic at {args.rate:g} calls/s, seed {args.seed},"
        f" outage {outage[0]:.1f}-{outage[1]:.1f} s; finished in {elapsed:.1f} s ==",
        f"{'':<16} {'calls':>6} {'succeeded':>10} {'success':>8} {'timeout':>8} {'5xx':>5}"
        f" {'circuit open':>13} {'rate limited':>13} {'transport':>10} {'other':>6}"
        f" {'requests sent':>14}"
        "   p50 / p99 ms  s in failures",
        row("with resilio", ours),
        row("without resilio", theirs),
        f"Requests that reached the service during its outage: with resilio"
        f" {ours.sent_in_outage}, without resilio {theirs.sent_in_outage}",
        f"Breaker transitions: {transitions}",
        f"Retries: {log.retries} scheduled ({log.retry_after_waits} waited for Retry-After);"
        f" gave up: {gave_up}",
        f"Client-side limiter ({CLIENT_RATE:g}/s, burst {CLIENT_BURST}): delayed"
        f" {log.limiter_delayed} attempts for {log.limiter_waited:.1f} s in all,"
        f" rejected {log.limiter_rejected} (rate limited calls: {ours.failures['rate limited']})",
        f"Events heard by resilio.add_listener: {events}",
        f"Success rate: with resilio {_percent(ours.ok, ours.calls).strip()},"
        f" without resilio {_percent(theirs.ok, theirs.calls).strip()}"
        f" ({100 * (ours.rate - theirs.rate):+.1f} points)",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    duration: float = args.duration
    start = 0.4 * duration
    outage = (start, start + max(1.5, 0.25 * duration))
    ours, theirs, log = Tally(), Tally(), ResilioLog()

    def count_event(event: resilio.Event) -> None:
        log.events[event.kind.value] += 1

    t0 = time.monotonic()
    with (
        FlakyService(seed=args.seed, outage=outage, hang_seconds=HANG).start(t0) as service_a,
        FlakyService(seed=args.seed, outage=outage, hang_seconds=HANG).start(t0) as service_b,
    ):
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        transport, breaker = resilient_transport(
            ours, log, t0, args.seed, limits, inject_chaos=args.chaos
        )
        plain: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(limits=limits)
        if args.chaos:
            plain = with_chaos(plain, args.seed + 2)
        async with (
            httpx.AsyncClient(
                base_url=service_a.url, timeout=BUDGET, transport=transport
            ) as client_a,
            httpx.AsyncClient(base_url=service_b.url, timeout=BUDGET, transport=plain) as client_b,
        ):
            get_a = checked_get
            get_b = plain_get(theirs)
            resilio.add_listener(count_event)
            try:
                print(
                    f"Flaky services on {service_a.url} and {service_b.url}: seed {args.seed},"
                    f" outage {outage[0]:.1f}-{outage[1]:.1f} s, {args.rate:g} calls/s for"
                    f" {duration:g} s"
                )
                if args.chaos:
                    print(
                        f"Chaos on both sides: {CHAOS_RATE:.0%} refused connections,"
                        f" {CHAOS_RATE:.0%} 503 answers, {CHAOS_RATE:.0%} cut bodies, extra"
                        f" latency (mean {CHAOS_LATENCY * 1000:.0f} ms) on 20 % of requests"
                    )
                print(live_header(), flush=True)
                next_report = 1.0

                async def report_until(when: float) -> None:
                    nonlocal next_report
                    while next_report <= when:
                        await _sleep_until(t0 + next_report)
                        print(
                            live_line(next_report, ours, theirs, breaker.state.value, log),
                            flush=True,
                        )
                        next_report += 1.0

                total = int(duration * args.rate)
                async with anyio.create_task_group() as calls:
                    for i in range(total):
                        due = i / args.rate
                        await report_until(due)
                        await _sleep_until(t0 + due)
                        path = f"/items/{i}"
                        calls.start_soon(one_call, get_a, client_a, path, ours)
                        calls.start_soon(one_call, get_b, client_b, path, theirs)
                    # Keep reporting while the last calls finish (at most BUDGET seconds).
                    while ours.calls < total or theirs.calls < total:
                        await report_until(next_report)
            finally:
                resilio.remove_listener(count_event)
        for tally, service in ((ours, service_a), (theirs, service_b)):
            tally.sent_in_outage = service.counts[Fault.OUTAGE] + service.counts[Fault.OUTAGE_HANG]
    print(summary(args, ours, theirs, log, outage, time.monotonic() - t0), flush=True)


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await anyio.sleep(delay)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=12.0,
        help="seconds of traffic (the run takes up to 3 s more to finish); default 12",
    )
    parser.add_argument("--seed", type=int, default=7, help="fault and jitter seed; default 7")
    parser.add_argument("--rate", type=float, default=40.0, help="calls per second; default 40")
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="inject network faults with resilio.chaos under both clients, on top of the"
        " service's own",
    )
    args = parser.parse_args(argv)
    if not 2.0 <= args.duration <= 25.0:
        parser.error("--duration must be between 2 and 25 seconds")
    if not 1.0 <= args.rate <= 200.0:
        parser.error("--rate must be between 1 and 200 calls per second")
    return args


def main(argv: list[str] | None = None) -> None:
    anyio.run(run, parse_args(argv))


if __name__ == "__main__":
    main()
