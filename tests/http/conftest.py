"""Fixtures of the HTTP tests: real uvicorn servers on 127.0.0.1 and fresh keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ..redis.conftest import redis_endpoint  # the shared Redis server fixture
from .servers import ServerThread, free_port
from .upstream import Upstream

__all__ = ["Service", "redis_endpoint"]


class Service:
    """A running `Upstream` and its URL."""

    def __init__(self, upstream: Upstream, url: str) -> None:
        self.upstream = upstream
        self.url = url

    def hits(self, key: str) -> int:
        return self.upstream.hits[key]


@pytest.fixture(scope="session")
def service() -> Iterator[Service]:
    """The scripted upstream service, one for the whole session."""
    upstream = Upstream()
    with ServerThread(upstream) as server:
        yield Service(upstream, server.url)


@pytest.fixture(scope="session")
def other_service() -> Iterator[Service]:
    """A second upstream on another port: another authority."""
    upstream = Upstream()
    with ServerThread(upstream) as server:
        yield Service(upstream, server.url)


@pytest.fixture
def key() -> str:
    """A key no other test uses, so server-side counts start at zero."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting fails at once."""
    return f"http://127.0.0.1:{free_port()}"
