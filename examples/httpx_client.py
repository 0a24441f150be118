"""An httpx client whose every request goes through resilio's standard HTTP pipeline.

It starts the seeded flaky service from `flaky_service.py` on 127.0.0.1 and
fetches ``--calls`` items with a plain ``httpx.Client`` whose transport is a
`resilio.httpx.ResilientTransport`: a total timeout, retries of transient
failures (GET is safe to repeat) honouring ``Retry-After``, a circuit breaker
per host, and a per-attempt timeout. Nothing else in the calling code changes::

    python examples/httpx_client.py --calls 40 --seed 7
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import httpx

import resilio
from resilio.httpx import ATTEMPT_EXTENSION, ResilientTransport, http_retry, standard_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flaky_service import FaultMix, FlakyService  # the sibling module, found via sys.path


def make_client(base_url: str) -> httpx.Client:
    """Build the client: the standard pipeline with timeouts scaled for a local service."""
    pipeline = standard_pipeline(
        total_timeout=4.0,  # seconds for a whole call, retries and waits included
        attempt_timeout=0.5,  # seconds for one attempt: the service hangs for longer
        retry=http_retry(
            attempts=4,
            statuses={500, 502, 503, 504},  # this service fails with plain 500s too
            backoff=resilio.backoff.exponential(initial=0.05, max=0.5, jitter="full"),
            max_retry_after=1.0,  # the service asks for 1 s; never wait longer
        ),
    )
    # timeout=None: the pipeline owns the timeouts (each attempt's httpx timeouts
    # are shrunk to what is left of them).
    return httpx.Client(
        base_url=base_url, transport=ResilientTransport(pipeline=pipeline), timeout=None
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="items to fetch; default 40")
    parser.add_argument("--seed", type=int, default=7, help="fault seed; default 7")
    args = parser.parse_args(argv)

    outcomes: collections.Counter[str] = collections.Counter()
    attempts: collections.Counter[int] = collections.Counter()
    mix = FaultMix(error=0.15, overloaded=0.05, hang=0.03, drop=0.02)
    with FlakyService(seed=args.seed, mix=mix, hang_seconds=2.0).start() as service:
        started = time.monotonic()
        with make_client(service.url) as client:
            for i in range(args.calls):
                try:
                    response = client.get(f"/items/{i}")
                except (httpx.HTTPError, resilio.ResilioError) as exc:
                    outcomes[type(exc).__name__] += 1
                    print(f"item {i:3}: failed with {type(exc).__name__}")
                    continue
                attempt = response.extensions[ATTEMPT_EXTENSION]
                attempts[attempt] += 1
                outcomes[str(response.status_code)] += 1
                print(f"item {i:3}: {response.status_code} after {attempt} attempt(s)")
        elapsed = time.monotonic() - started
    print()
    print(f"{args.calls} calls in {elapsed:.1f} s; the service saw {service.requests} requests")
    print("outcomes: " + ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items())))
    print("attempts: " + ", ".join(f"{n} needed {a}" for a, n in sorted(attempts.items())))


if __name__ == "__main__":
    main()
