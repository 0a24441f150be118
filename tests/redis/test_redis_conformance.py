"""The limiter conformance suite, run on Redis: standalone and cluster, sync and async clients.

The tests are the ones of ``tests/limiters/test_conformance.py``, imported
as they are (every test there that builds its limiters with ``make``), so a
test added to the suite runs here too. The fixtures of this directory bind
``make`` to a `RedisStore` on caller time, so the fake clock of each test
drives the Lua scripts, and decisions must equal the in-memory ones exactly.
"""

from __future__ import annotations

import pytest

from ..limiters import test_conformance as suite
from .conftest import suite_tests

pytestmark = pytest.mark.anyio

_imported = suite_tests(suite, "make")
globals().update(_imported)


def test_the_whole_suite_is_here() -> None:
    assert len(_imported) >= 15
    assert "test_all_of_is_all_or_nothing" in _imported
