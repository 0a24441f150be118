"""The middleware on the Redis store: several uvicorn worker processes share one limit."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterator

import anyio
import httpx
import pytest

from ..redis.conftest import Endpoint
from .servers import ServerProcess

LIMIT = 25
WORKERS = 3


@pytest.fixture
def workers(redis_endpoint: Endpoint) -> Iterator[ServerProcess]:
    env = {
        "REDIS_URL": redis_endpoint.url,
        "RESILIO_PREFIX": f"test:{uuid.uuid4().hex[:12]}:",
        "RESILIO_LIMIT": str(LIMIT),
    }
    with ServerProcess("tests.http.apps:redis_app", workers=WORKERS, env=env) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_worker_processes_share_one_limit(workers: ServerProcess) -> None:
    statuses: collections.Counter[int] = collections.Counter()
    pids: set[str] = set()
    # A new connection per request, so the kernel spreads them over the workers.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=workers.url, limits=limits, timeout=10.0) as http:

        async def limited() -> None:
            response = await http.get("/limited")
            statuses[response.status_code] += 1
            if response.status_code == 200:
                assert response.headers["RateLimit-Policy"] == f'"global";q={LIMIT};w=600'
            else:
                assert response.headers["RateLimit"].startswith('"global";r=0;t=')

        async def exempt() -> None:
            response = await http.get("/pid")
            assert "ratelimit" not in response.headers
            pids.add(response.text)

        async with anyio.create_task_group() as group:
            for _ in range(4 * LIMIT):
                group.start_soon(limited)
            for _ in range(40):
                group.start_soon(exempt)
    assert statuses == {200: LIMIT, 429: 3 * LIMIT}
    assert len(pids) >= 2, f"only {pids} answered: the workers did not share the traffic"
