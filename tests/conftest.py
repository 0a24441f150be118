"""Shared fixtures: async tests run on asyncio and trio through anyio's pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilio._clock import runtime
from resilio.testing import FakeClock, use_clock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every `@pytest.mark.anyio` test on both backends."""
    return str(request.param)


@pytest.fixture
def fake_clock() -> Iterator[FakeClock]:
    """A fake clock installed as resilio's global clock for the test."""
    clock = FakeClock(start=1000.0)
    with use_clock(clock):
        yield clock


@pytest.fixture(autouse=True)
def _restore_runtime() -> Iterator[None]:
    """Fail loudly if a test leaves resilio's global switches changed."""
    yield
    assert runtime.waits_enabled
    assert runtime.retries_enabled
