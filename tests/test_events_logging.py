"""EventLogger: structured standard-library logging of resilio events, quiet by default."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

import resilio
from resilio import Event, EventKind, GiveUpReason
from resilio._logging import DEFAULT_LEVELS, EventLogger
from resilio.testing import FakeClock


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="resilio.events")
    listener = EventLogger()
    resilio.add_listener(listener, timings=True)
    try:
        yield caplog
    finally:
        resilio.remove_listener(listener)


def test_a_retry_is_info_and_a_give_up_is_a_warning(logged: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()

    def down() -> None:
        clock.advance(0.125)
        raise ConnectionError("refused")

    policy = resilio.retry(
        on=ConnectionError,
        attempts=2,
        backoff=resilio.backoff.constant(0.5),
        clock=clock,
        name="fetch",
    )
    with pytest.raises(ConnectionError):
        policy(down)()
    levels = [(r.resilio["event"], r.levelname) for r in logged.records]  # type: ignore[attr-defined]
    assert levels == [
        ("attempt", "DEBUG"),
        ("retry", "INFO"),
        ("attempt", "DEBUG"),
        ("gave_up", "WARNING"),
        ("call", "DEBUG"),
    ]
    retry = logged.records[1]
    assert retry.name == "resilio.events"
    assert retry.getMessage() == (
        "resilio retry fetch attempt=1 delay=0.5 error.type=ConnectionError error.message=refused"
    )
    assert retry.resilio == {  # type: ignore[attr-defined]
        "event": "retry",
        "source": "fetch",
        "attempt": 1,
        "delay": 0.5,
        "error.type": "ConnectionError",
        "error.message": "refused",
    }
    assert logged.records[3].resilio["reason"] == "attempts"  # type: ignore[attr-defined]
    assert logged.records[4].resilio["duration"] == pytest.approx(0.75)  # type: ignore[attr-defined]


def test_breaker_opening_is_a_warning_and_closing_is_info(
    logged: pytest.LogCaptureFixture,
) -> None:
    breaker = resilio.CircuitBreaker(name="db", failure_threshold=1, clock=FakeClock())
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError
    breaker.reset()
    changes = [r for r in logged.records if r.resilio["event"] == "breaker_state_changed"]  # type: ignore[attr-defined]
    assert [(r.resilio["state"], r.levelname) for r in changes] == [  # type: ignore[attr-defined]
        ("open", "WARNING"),
        ("closed", "INFO"),
    ]
    assert changes[0].resilio["previous_state"] == "closed"  # type: ignore[attr-defined]


def test_levels_can_be_changed_or_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="app.resilience")
    listener = EventLogger(
        "app.resilience",
        levels={EventKind.RETRY: logging.ERROR, EventKind.BREAKER_STATE_CHANGED: None},
    )
    listener(Event(EventKind.RETRY, "x", 0.0, attempt=1, delay=0.1))
    listener(Event(EventKind.BREAKER_STATE_CHANGED, "b", 0.0, state="open"))
    assert [(r.name, r.levelname) for r in caplog.records] == [("app.resilience", "ERROR")]
    assert listener.level_of(Event(EventKind.HEDGE, "h", 0.0)) == logging.INFO


def test_nothing_is_formatted_below_the_logger_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="resilio.events")

    class Exploding:
        @property
        def value(self) -> str:
            raise AssertionError("formatted although disabled")

    listener = EventLogger()
    listener(Event(EventKind.RETRY, "x", 0.0, state=Exploding()))
    assert caplog.records == []


def test_keys_are_logged_only_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resilio.events")
    event = Event(EventKind.LIMITER_REJECTED, "api", 0.0, delay=2.0, key="user 1")
    EventLogger()(event)
    EventLogger(record_keys=True)(event)
    first, second = caplog.records
    assert "key" not in first.resilio  # type: ignore[attr-defined]
    assert second.resilio["key"] == "user 1"  # type: ignore[attr-defined]
    assert second.getMessage() == "resilio limiter_rejected api delay=2 key='user 1'"


def test_every_kind_has_a_default_level() -> None:
    assert set(DEFAULT_LEVELS) == set(EventKind)
    listener = EventLogger()
    gave_up = Event(EventKind.GAVE_UP, "x", 0.0, reason=GiveUpReason.DEADLINE)
    assert listener.level_of(gave_up) == logging.WARNING
    assert listener.fields(gave_up)["reason"] == "deadline"
    assert repr(listener) == "EventLogger(logger='resilio.events')"


def test_bad_options_are_refused() -> None:
    with pytest.raises(TypeError, match=r"logging\.Logger"):
        EventLogger(logger=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EventKind"):
        EventLogger(levels={"retry": logging.INFO})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="levels"):
        EventLogger(levels={EventKind.RETRY: "loud"})  # type: ignore[dict-item]


def test_quiet_when_the_application_configures_no_logging() -> None:
    # In a fresh interpreter with no logging configured, even a WARNING from the
    # event logger prints nothing (Python's last-resort handler would otherwise).
    code = (
        "import resilio\n"
        "from resilio._logging import EventLogger\n"
        "EventLogger()(resilio.Event(resilio.EventKind.GAVE_UP, 'x', 0.0))\n"
        "import logging; logging.getLogger('resilio.events').warning('direct')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr == ""
    assert done.stdout == ""
