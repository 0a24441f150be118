"""The HTTP examples run as they are: the FastAPI app on Redis, and the resilient httpx client."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from examples.fastapi_app import create_app

from ..redis.conftest import Endpoint
from .servers import ServerThread

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def clear_of_a_minute_boundary(redis_url: str) -> None:
    """Return once the Redis server's clock has at least 5 s left in its current minute.

    The login limit is an aligned fixed window on the server's time: calls on both
    sides of a minute boundary fall in two windows (the documented fixed-window
    behaviour), which the test's count of 5 + 1 must not straddle.
    """
    with redis.Redis.from_url(redis_url) as client:
        seconds, micros = client.time()
    into_minute = seconds % 60 + micros / 1e6
    if into_minute > 55:
        time.sleep(60 - into_minute + 0.05)


def test_fastapi_example_limits_per_client_and_login(redis_endpoint: Endpoint) -> None:
    clear_of_a_minute_boundary(redis_endpoint.url)
    app = create_app(
        redis_endpoint.url, prefix=f"test:{uuid.uuid4().hex[:12]}:", trusted_proxies="127.0.0.1"
    )
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:

        def hello(client: str) -> httpx.Response:
            return http.get("/hello", headers={"X-Forwarded-For": client})

        alice = [hello("198.51.100.1").status_code for _ in range(21)]
        bob = hello("198.51.100.2")
        logins = [
            http.post("/login", headers={"X-Forwarded-For": "198.51.100.3"}).status_code
            for _ in range(6)
        ]
    assert alice == [200] * 20 + [429]
    assert bob.status_code == 200
    assert 'per-client";r=19' in bob.headers["RateLimit"]
    assert '"service";q=300;w=60' in bob.headers["RateLimit-Policy"]
    assert logins == [200] * 5 + [429]


@pytest.mark.slow
def test_httpx_client_example_recovers_from_faults() -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "httpx_client.py"), "--calls", "30", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    summary = re.search(
        r"^30 calls in [\d.]+ s; the service saw (\d+) requests$", completed.stdout, re.M
    )
    assert summary is not None, completed.stdout
    assert int(summary.group(1)) > 30  # some calls needed retries...
    assert "outcomes: 200 30" in completed.stdout  # ...and every one of them succeeded
