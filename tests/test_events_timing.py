"""ATTEMPT and CALL events: attempt and call durations for timing listeners only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import resilio
from resilio import Event, EventKind, GiveUpReason, _events
from resilio.testing import FakeClock


@pytest.fixture
def timed() -> Iterator[list[Event]]:
    """Events heard by a process-wide timing listener."""
    heard: list[Event] = []
    resilio.add_listener(heard.append, timings=True)
    try:
        yield heard
    finally:
        resilio.remove_listener(heard.append)
    assert _events.timing_listeners == ()


class Slow:
    """A function that takes ``cost`` fake seconds per call and fails ``failures`` times."""

    def __init__(self, clock: FakeClock, cost: float, failures: int = 0) -> None:
        self.clock, self.cost, self.failures, self.calls = clock, cost, failures, 0

    def __call__(self) -> str:
        self.calls += 1
        self.clock.advance(self.cost)
        if self.calls <= self.failures:
            raise ConnectionError(f"down {self.calls}")
        return "ok"


def policy(clock: FakeClock, **options: object) -> resilio.Retry:
    defaults: dict[str, object] = {
        "on": ConnectionError,
        "attempts": 3,
        "backoff": resilio.backoff.constant(0.5),
        "clock": clock,
        "name": "fetch",
    }
    defaults.update(options)
    return resilio.retry(**defaults)  # type: ignore[arg-type]


def kinds(events: list[Event]) -> list[EventKind]:
    return [event.kind for event in events]


def test_success_on_the_first_attempt_is_timed(timed: list[Event]) -> None:
    clock = FakeClock()
    fn = policy(clock)(Slow(clock, 0.25))
    assert fn() == "ok"
    assert kinds(timed) == [EventKind.ATTEMPT, EventKind.CALL]
    attempt, call = timed
    assert (attempt.source, attempt.attempt, attempt.duration) == ("fetch", 1, 0.25)
    assert attempt.handled is False
    assert attempt.outcome is not None
    assert attempt.outcome.result == "ok"
    assert (call.attempt, call.duration, call.handled) == (1, 0.25, False)


def test_each_attempt_and_the_whole_call_with_its_waits(timed: list[Event]) -> None:
    clock = FakeClock()
    fn = policy(clock)(Slow(clock, 0.25, failures=2))
    assert fn() == "ok"
    assert kinds(timed) == [
        EventKind.ATTEMPT,
        EventKind.RETRY,
        EventKind.ATTEMPT,
        EventKind.RETRY,
        EventKind.ATTEMPT,
        EventKind.CALL,
    ]
    attempts = [e for e in timed if e.kind is EventKind.ATTEMPT]
    assert [e.attempt for e in attempts] == [1, 2, 3]
    assert [e.duration for e in attempts] == [0.25, 0.25, 0.25]
    assert [e.handled for e in attempts] == [True, True, False]
    assert isinstance(attempts[0].outcome and attempts[0].outcome.exception, ConnectionError)
    call = timed[-1]
    # Three attempts of 0.25 s and two waits of 0.5 s.
    assert call.duration == pytest.approx(1.75)
    assert (call.attempt, call.handled) == (3, False)


def test_a_call_that_gives_up_is_handled_and_keeps_its_error(timed: list[Event]) -> None:
    clock = FakeClock()
    fn = policy(clock, attempts=2)(Slow(clock, 0.1, failures=5))
    with pytest.raises(ConnectionError, match="down 2"):
        fn()
    assert kinds(timed)[-3:] == [EventKind.ATTEMPT, EventKind.GAVE_UP, EventKind.CALL]
    gave_up, call = timed[-2], timed[-1]
    assert gave_up.reason is GiveUpReason.ATTEMPTS
    assert call.handled is True
    assert call.attempt == 2
    assert call.duration == pytest.approx(0.1 + 0.5 + 0.1)
    assert call.outcome is not None
    assert str(call.outcome.exception) == "down 2"


def test_an_error_the_policy_does_not_handle_is_not_handled(timed: list[Event]) -> None:
    clock = FakeClock()

    def broken() -> None:
        clock.advance(0.2)
        raise KeyError("nope")

    with pytest.raises(KeyError):
        policy(clock)(broken)()
    assert kinds(timed) == [EventKind.ATTEMPT, EventKind.CALL]
    assert [e.handled for e in timed] == [False, False]
    assert timed[1].outcome is not None
    assert isinstance(timed[1].outcome.exception, KeyError)


def test_results_checked_by_a_predicate_are_timed(timed: list[Event]) -> None:
    clock = FakeClock()
    answers = iter([503, 503, 200])

    def status() -> int:
        clock.advance(0.1)
        return next(answers)

    fn = policy(clock, on=lambda o: o.result == 503)(status)
    assert fn() == 200
    attempts = [e for e in timed if e.kind is EventKind.ATTEMPT]
    assert [e.handled for e in attempts] == [True, True, False]
    assert [e.outcome.result for e in attempts if e.outcome] == [503, 503, 200]
    assert timed[-1].kind is EventKind.CALL
    assert timed[-1].handled is False
    assert timed[-1].duration == pytest.approx(1.3)


@pytest.mark.anyio
async def test_async_attempts_and_calls_are_timed(timed: list[Event]) -> None:
    clock = FakeClock()
    slow = Slow(clock, 0.25, failures=1)

    async def fetch() -> str:
        return slow()

    assert await policy(clock)(fetch)() == "ok"
    assert kinds(timed) == [
        EventKind.ATTEMPT,
        EventKind.RETRY,
        EventKind.ATTEMPT,
        EventKind.CALL,
    ]
    assert [e.duration for e in timed if e.kind is EventKind.ATTEMPT] == [0.25, 0.25]
    assert timed[-1].duration == pytest.approx(1.0)


@pytest.mark.anyio
async def test_async_first_attempt_success_and_give_up(timed: list[Event]) -> None:
    clock = FakeClock()

    async def fine() -> int:
        clock.advance(0.5)
        return 1

    async def down() -> int:
        clock.advance(0.5)
        raise ConnectionError

    assert await policy(clock)(fine)() == 1
    assert kinds(timed) == [EventKind.ATTEMPT, EventKind.CALL]
    assert timed[1].duration == 0.5
    timed.clear()
    with pytest.raises(ConnectionError):
        await policy(clock, attempts=2)(down)()
    assert kinds(timed) == [
        EventKind.ATTEMPT,
        EventKind.RETRY,
        EventKind.ATTEMPT,
        EventKind.GAVE_UP,
        EventKind.CALL,
    ]
    assert timed[-1].handled is True


def test_plain_listeners_never_hear_timings() -> None:
    clock = FakeClock()
    own: list[Event] = []
    with resilio.testing.capture_events() as heard:
        fn = policy(clock, listeners=[own.append])(Slow(clock, 0.25, failures=1))
        assert fn() == "ok"
    assert kinds(heard) == [EventKind.RETRY]
    assert kinds(own) == [EventKind.RETRY]


def test_a_timing_listener_hears_every_other_event_too(timed: list[Event]) -> None:
    breaker = resilio.CircuitBreaker(name="db", failure_threshold=1, clock=FakeClock())

    @breaker
    def down() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        down()
    with pytest.raises(resilio.CircuitOpenError):
        down()
    assert EventKind.BREAKER_STATE_CHANGED in kinds(timed)
    assert kinds(timed)[-1] is EventKind.BREAKER_REJECTED


def test_remove_listener_clears_the_timing_flag() -> None:
    def listener(event: Event) -> None:
        raise AssertionError("never called")

    resilio.add_listener(listener, timings=True)
    assert _events.timing_listeners == (listener,)
    assert listener in _events.global_listeners
    resilio.remove_listener(listener)
    assert listener not in _events.timing_listeners
    assert listener not in _events.global_listeners
    with pytest.raises(ValueError, match="remove"):
        resilio.remove_listener(listener)


def test_the_same_listener_with_and_without_timings() -> None:
    heard: list[Event] = []
    resilio.add_listener(heard.append)
    resilio.add_listener(heard.append, timings=True)
    try:
        clock = FakeClock()
        policy(clock)(Slow(clock, 0.1))()
        # ATTEMPT and CALL once (timing registry), nothing else emitted on success.
        assert kinds(heard) == [EventKind.ATTEMPT, EventKind.CALL]
    finally:
        resilio.remove_listener(heard.append)
        assert _events.timing_listeners == (heard.append,)
        resilio.remove_listener(heard.append)
    assert heard.append not in _events.timing_listeners
    assert heard.append not in _events.global_listeners


def test_a_failing_timing_listener_is_logged_and_harmless(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    resilio.add_listener(broken, timings=True)
    try:
        clock = FakeClock()
        assert policy(clock)(Slow(clock, 0.1))() == "ok"
    finally:
        resilio.remove_listener(broken)
    failures = [r for r in caplog.records if "listener" in r.getMessage()]
    assert [r.levelname for r in failures] == ["ERROR", "ERROR"]
    assert "attempt" in failures[0].getMessage()
    assert "call" in failures[1].getMessage()


def test_event_fields_default_to_none() -> None:
    event = Event(EventKind.RETRY, "x", 1.0)
    assert (event.duration, event.handled, event.key) == (None, None, None)
    assert EventKind.ATTEMPT.value == "attempt"
    assert EventKind.CALL.value == "call"
