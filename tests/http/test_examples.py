"""The HTTP examples run as they are: the FastAPI app on Redis, and the resilient httpx client."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from examples.fastapi_app import create_app

from ..redis.conftest import Endpoint
from .servers import ServerThread

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_fastapi_example_limits_per_client_and_login(redis_endpoint: Endpoint) -> None:
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
