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


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every skipped test: in this suite a skip is a defect, not a pass."""
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say why the run fails when tests were skipped."""
    if _skipped:
        terminalreporter.write_line(
            f"{len(_skipped)} test(s) skipped, and skips fail this suite: "
            + ", ".join(_skipped[:5]),
            red=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any test was skipped (for example a missing Redis or package)."""
    if _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
