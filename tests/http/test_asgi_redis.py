"""The middleware on the Redis store: several uvicorn server processes share one limit."""

from __future__ import annotations

import collections
import contextlib
import uuid
from collections.abc import Iterator

import anyio
import httpx
import pytest

from ..redis.conftest import Endpoint
from .servers import ServerProcess

LIMIT = 25
PROCESSES = 3


@pytest.fixture
def servers(redis_endpoint: Endpoint) -> Iterator[list[ServerProcess]]:
    """Three separate uvicorn processes (own ports) on one Redis limit.

    Separate ports, not ``--workers``: with one shared listening socket the kernel
    may hand every connection to the same worker, which would prove nothing.
    """
    env = {
        "REDIS_URL": redis_endpoint.url,
        "RESILIO_PREFIX": f"test:{uuid.uuid4().hex[:12]}:",
        "RESILIO_LIMIT": str(LIMIT),
    }
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(ServerProcess("tests.http.apps:redis_app", workers=1, env=env))
            for _ in range(PROCESSES)
        ]


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_server_processes_share_one_limit(servers: list[ServerProcess]) -> None:
    statuses: collections.Counter[int] = collections.Counter()
    pids: set[str] = set()
    async with httpx.AsyncClient(timeout=10.0) as http:

        async def limited(number: int) -> None:
            response = await http.get(f"{servers[number % PROCESSES].url}/limited")
            statuses[response.status_code] += 1
            if response.status_code == 200:
                assert response.headers["RateLimit-Policy"] == f'"global";q={LIMIT};w=600'
            else:
                assert response.headers["RateLimit"].startswith('"global";r=0;t=')

        async def exempt(number: int) -> None:
            response = await http.get(f"{servers[number % PROCESSES].url}/pid")
            assert "ratelimit" not in response.headers
            pids.add(response.text)

        async with anyio.create_task_group() as group:
            for number in range(4 * LIMIT):
                group.start_soon(limited, number)
            for number in range(PROCESSES):
                group.start_soon(exempt, number)
    assert statuses == {200: LIMIT, 429: 3 * LIMIT}
    assert len(pids) == PROCESSES  # three processes answered, and together admitted LIMIT
