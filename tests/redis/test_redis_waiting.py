"""The FIFO waiting tests, run on Redis: standalone and cluster, sync and async clients.

The tests are the ones of ``tests/limiters/test_waiting.py`` that take a
``store``, imported as they are, so a waiting test added there runs here too.
The fixtures of this directory bind ``store`` to a `RedisStore` on caller
time, so the fake and manual clocks of the tests drive the Lua scripts. Every
test runs on the sync clients; the async tests, which call only the limiters'
async methods, run on the async clients as well (marked ``async_api``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ..limiters import test_waiting as suite
from .conftest import suite_tests

pytestmark = pytest.mark.anyio


def _on_async_clients_too(test: Callable[..., Coroutine[Any, Any, None]]) -> Any:
    """The async ``test``, marked to run on the async clients as well (the original is left be)."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        await test(*args, **kwargs)

    return pytest.mark.async_api(run)


_imported = suite_tests(
    suite,
    "store",
    lambda test: _on_async_clients_too(test) if inspect.iscoroutinefunction(test) else test,
)
globals().update(_imported)


def test_the_whole_suite_is_here() -> None:
    assert len(_imported) >= 11
    assert "test_a_timed_out_waiting_thread_does_not_block_those_behind" in _imported
    assert "test_a_swapped_global_clock_starts_the_limiter_afresh" not in _imported  # no store
    on_async_clients = [
        name
        for name, test in _imported.items()
        if any(mark.name == "async_api" for mark in getattr(test, "pytestmark", ()))
    ]
    assert "test_cancelled_waiters_consume_nothing_and_wake_the_next" in on_async_clients
    assert len(on_async_clients) >= 5
