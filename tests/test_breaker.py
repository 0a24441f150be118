"""CircuitBreaker: configuration, the state machine through the sync API, events."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from typing import Any

import pytest

import resilio
from resilio import CircuitBreaker, CircuitOpenError, CircuitState, Event, EventKind
from resilio.testing import FakeClock, capture_events

from .callers import Caller


class Boom(Exception):
    """The failure the tests' dependency raises."""


class Unrelated(Exception):
    """An exception the breaker is not configured to count."""


def failing() -> None:
    raise Boom


def make(clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("failure_threshold", 3)
    options.setdefault("recovery_time", 10.0)
    return CircuitBreaker("test", clock=clock, **options)


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            breaker.call(failing)


def succeed(breaker: CircuitBreaker) -> None:
    assert breaker.call(lambda: "ok") == "ok"


def rejected(breaker: CircuitBreaker) -> CircuitOpenError:
    ran = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: ran.append(1))
    assert ran == []
    return info.value


def open_breaker(clock: FakeClock, **options: Any) -> CircuitBreaker:
    breaker = make(clock, **options)
    threshold = options.get("failure_threshold", 3)
    fail(breaker, threshold)
    assert breaker.state is CircuitState.OPEN
    return breaker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=100.0)


# -- configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": 2.5}, TypeError, "failure_threshold"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"recovery_time": 0}, ValueError, "recovery_time"),
        ({"recovery_time": math.inf}, ValueError, "recovery_time"),
        ({"failure_rate": 0.5}, ValueError, "exactly one window"),
        ({"failure_rate": 0.5, "window": 10, "window_duration": 5.0}, ValueError, "exactly one"),
        ({"failure_rate": 1.5, "window": 10}, ValueError, "between 0 and 1"),
        ({"failure_rate": 0, "window": 10}, ValueError, "failure_rate"),
        ({"failure_rate": 0.5, "failure_threshold": 3, "window": 10}, ValueError, "only one"),
        ({"window": 10}, ValueError, "only apply with failure_rate"),
        ({"failure_rate": 0.5, "window": 5}, ValueError, "lower minimum_calls"),
        ({"failure_rate": 0.5, "window": 10**6 + 1}, ValueError, "at most 1,000,000 calls"),
        ({"failure_rate": 0.5, "window_duration": -1.0}, ValueError, "window_duration"),
        ({"slow_call_duration": 0}, ValueError, "slow_call_duration"),
        ({"half_open_probes": 0}, ValueError, "half_open_probes"),
        ({"success_threshold": 0}, ValueError, "success_threshold"),
        ({"max_recovery_time": 5.0}, ValueError, "shorter than recovery_time"),
        ({"recovery_multiplier": 0.5}, ValueError, "at least 1"),
        ({"half_open_timeout": 0}, ValueError, "half_open_timeout"),
        ({"on": 42}, TypeError, "on="),
        ({"ignore": KeyboardInterrupt}, ValueError, "ignore=KeyboardInterrupt"),
        ({"listeners": [42]}, TypeError, "listeners="),
        ({"clock": object()}, TypeError, "clock="),
    ],
)
def test_invalid_options_say_what_to_change(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        CircuitBreaker(**options)


def test_invalid_name() -> None:
    with pytest.raises(TypeError, match="name"):
        CircuitBreaker(42)  # type: ignore[arg-type]


def test_default_names_are_distinct() -> None:
    first, second = CircuitBreaker(), CircuitBreaker()
    assert first.name != second.name
    assert first.name.startswith("breaker")
    assert repr(first) == f"CircuitBreaker(name={first.name!r}, state='closed')"


def test_circuit_state_values() -> None:
    assert [state.value for state in CircuitState] == ["closed", "open", "half_open", "isolated"]
    assert resilio.CircuitState is CircuitState


def test_decorator_keeps_metadata() -> None:
    breaker = CircuitBreaker()

    @breaker
    def fetch(url: str, *, timeout: float = 1.0) -> str:
        """Fetch a URL."""
        return url

    @breaker
    async def fetch_async(url: str) -> str:
        """Fetch a URL asynchronously."""
        return url

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a URL."
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)  # type: ignore[attr-defined]
    assert not inspect.iscoroutinefunction(fetch)
    assert inspect.iscoroutinefunction(fetch_async)
    assert fetch("a") == "a"
    assert asyncio.run(fetch_async("b")) == "b"


# -- consecutive failures ---------------------------------------------------


def test_opens_after_threshold_and_rejects_without_running(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.retry_after == 0.0
    fail(breaker)
    assert breaker.state is CircuitState.OPEN
    error = rejected(breaker)
    assert error.breaker == "test"
    assert error.state is CircuitState.OPEN
    assert error.retry_after == pytest.approx(10.0)
    assert "'test' is open" in str(error)
    assert isinstance(error, resilio.RejectedError)


def test_success_resets_consecutive_count(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    succeed(breaker)
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker)
    assert breaker.state is CircuitState.OPEN


def test_non_matching_exception_counts_as_success(clock: FakeClock) -> None:
    breaker = make(clock, on=Boom)
    fail(breaker, 2)

    def unrelated() -> None:
        raise Unrelated

    with pytest.raises(Unrelated):
        breaker.call(unrelated)
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED


def test_ignored_exception_counts_as_neither(clock: FakeClock) -> None:
    breaker = make(clock, ignore=Unrelated)

    def unrelated() -> None:
        raise Unrelated

    fail(breaker, 2)
    with pytest.raises(Unrelated):
        breaker.call(unrelated)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker)  # the count was kept: 3 failures in a row, ignoring the ignored one
    assert breaker.state is CircuitState.OPEN


def test_predicate_on_results(clock: FakeClock) -> None:
    breaker = make(
        clock,
        failure_threshold=2,
        on=lambda outcome: outcome.failed or outcome.result == 503,
        ignore=lambda outcome: outcome.result == 429,
    )
    assert breaker.call(lambda: 429) == 429
    assert breaker.call(lambda: 503) == 503
    assert breaker.call(lambda: 429) == 429  # ignored: neither resets nor counts
    assert breaker.state is CircuitState.CLOSED
    assert breaker.call(lambda: 503) == 503
    assert breaker.state is CircuitState.OPEN


def test_failing_predicate_propagates_and_releases_the_probe(clock: FakeClock) -> None:
    def predicate(outcome: resilio.Outcome[Any]) -> bool:
        if outcome.result == "bad":
            raise RuntimeError("predicate bug")
        return outcome.failed

    breaker = open_breaker(clock, on=predicate)
    clock.advance(10)
    with pytest.raises(RuntimeError, match="predicate bug"):
        breaker.call(lambda: "bad")
    assert breaker.state is CircuitState.HALF_OPEN
    succeed(breaker)  # the slot was released, so a new probe runs
    assert breaker.state is CircuitState.CLOSED


# -- open, half-open, recovery ----------------------------------------------


def test_open_becomes_half_open_after_recovery_time(clock: FakeClock) -> None:
    breaker = open_breaker(clock)
    clock.advance(4)
    assert breaker.retry_after == pytest.approx(6.0)
    assert rejected(breaker).retry_after == pytest.approx(6.0)
    clock.advance(6)
    assert breaker.retry_after == 0.0
    assert breaker.state is CircuitState.HALF_OPEN
    succeed(breaker)
    assert breaker.state is CircuitState.CLOSED


def test_probe_failure_reopens(clock: FakeClock) -> None:
    breaker = open_breaker(clock)
    clock.advance(10)
    fail(breaker)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(10.0)  # no growth without max_recovery_time


def test_success_threshold_needs_that_many_probe_successes(clock: FakeClock) -> None:
    breaker = open_breaker(clock, success_threshold=3)
    clock.advance(10)
    succeed(breaker)
    succeed(breaker)
    assert breaker.state is CircuitState.HALF_OPEN
    succeed(breaker)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, 2)  # counts start over after closing
    assert breaker.state is CircuitState.CLOSED


def test_half_open_rejects_beyond_its_probe_slots(clock: FakeClock) -> None:
    breaker = open_breaker(clock, half_open_probes=2)
    clock.advance(10)
    probes = [Caller(), Caller()]
    for probe in probes:
        probe.run(breaker.__enter__)
    error = rejected(breaker)
    assert error.state is CircuitState.HALF_OPEN
    assert "probe slot" in str(error)
    assert error.retry_after == pytest.approx(10.0)  # until the probes' leases end
    for probe in probes:
        probe.run(breaker.__exit__, None, None, None)
    assert breaker.state is CircuitState.CLOSED


def test_recovery_time_grows_and_is_capped(clock: FakeClock) -> None:
    """B6: failed probes in a row give open periods of d, 2d, 4d... up to the cap."""
    breaker = open_breaker(clock, recovery_time=1.0, max_recovery_time=5.0)
    periods = [breaker.retry_after]
    for _ in range(4):
        clock.advance(periods[-1])
        assert breaker.state is CircuitState.HALF_OPEN
        fail(breaker)
        periods.append(breaker.retry_after)
    assert periods == [1.0, 2.0, 4.0, 5.0, 5.0]
    clock.advance(5.0)
    succeed(breaker)  # closing resets the growth
    fail(breaker, 3)
    assert breaker.retry_after == 1.0


def test_recovery_multiplier(clock: FakeClock) -> None:
    breaker = open_breaker(clock, recovery_time=1.0, max_recovery_time=100.0, recovery_multiplier=3)
    clock.advance(1.0)
    fail(breaker)
    assert breaker.retry_after == 3.0


def test_hung_probe_lease_expires_and_a_fresh_probe_runs(clock: FakeClock) -> None:
    """B9: a probe that never returns re-opens the breaker after half_open_timeout."""
    breaker = open_breaker(clock, half_open_timeout=5.0)
    clock.advance(10)
    hung = Caller()
    hung.run(breaker.__enter__)  # the hung probe
    assert rejected(breaker).state is CircuitState.HALF_OPEN
    clock.advance(5.5)
    assert breaker.state is CircuitState.OPEN
    # It re-opened when the lease ended (0.5 s ago).
    assert breaker.retry_after == pytest.approx(9.5)
    clock.advance(9.5)
    assert breaker.state is CircuitState.HALF_OPEN
    with breaker:  # a fresh probe is admitted
        pass
    assert breaker.state is CircuitState.CLOSED
    # The abandoned probe's late success belongs to an old generation: no effect.
    hung.run(breaker.__exit__, None, None, None)
    assert breaker.state is CircuitState.CLOSED


def test_late_failure_from_an_older_state_is_not_counted(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)

    def closed_era_call() -> None:
        with breaker:  # admitted while closed...
            fail(breaker)  # ...a sibling call opens the breaker meanwhile
            clock.advance(10)
            with breaker:  # a probe succeeds and closes it
                pass
            assert breaker.state is CircuitState.CLOSED
            raise Boom  # the closed-era failure lands in a newer generation

    with pytest.raises(Boom):
        closed_era_call()
    assert breaker.state is CircuitState.CLOSED


def test_ignored_probe_outcomes_release_their_slots(clock: FakeClock) -> None:
    """B9: two probes raise an ignored error; the next call is admitted as a probe."""
    breaker = open_breaker(clock, half_open_probes=2, ignore=Unrelated)
    clock.advance(10)

    def probe() -> None:
        with breaker:
            raise Unrelated

    def two_probes() -> None:
        with breaker:
            with pytest.raises(Unrelated):
                probe()
            raise Unrelated

    with pytest.raises(Unrelated):
        two_probes()
    assert breaker.state is CircuitState.HALF_OPEN
    succeed(breaker)
    assert breaker.state is CircuitState.CLOSED


INTERRUPTS = [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError]


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_interrupts_change_nothing_when_closed(clock: FakeClock, interrupt: type) -> None:
    """B10: never counted (neither failure nor success), same object propagates."""
    breaker = make(clock)
    fail(breaker, 2)
    error = interrupt()

    def interrupted() -> None:
        raise error

    with pytest.raises(interrupt) as info:
        breaker.call(interrupted)
    assert info.value is error
    assert breaker.state is CircuitState.CLOSED
    fail(breaker)  # 2 + 1: the count was neither reset nor incremented
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_interrupts_release_the_probe_slot(clock: FakeClock, interrupt: type) -> None:
    breaker = open_breaker(clock)
    clock.advance(10)
    error = interrupt()
    with pytest.raises(interrupt) as info, breaker:
        raise error
    assert info.value is error
    assert breaker.state is CircuitState.HALF_OPEN
    succeed(breaker)
    assert breaker.state is CircuitState.CLOSED


# -- isolate and reset ------------------------------------------------------


def test_isolate_holds_open_until_reset(clock: FakeClock) -> None:
    breaker = make(clock)
    breaker.isolate()
    assert breaker.state is CircuitState.ISOLATED
    assert breaker.retry_after == math.inf
    clock.advance(1e6)
    error = rejected(breaker)
    assert error.state is CircuitState.ISOLATED
    assert error.retry_after == math.inf
    assert "reset()" in str(error)
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    succeed(breaker)


def test_reset_clears_counts(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    breaker.reset()
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker)
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.retry_after == 0.0


# -- failure rate -----------------------------------------------------------


def test_count_window_rate(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=None, failure_rate=0.5, window=4, minimum_calls=4)
    fail(breaker, 3)  # 3 of 3, but fewer than minimum_calls
    assert breaker.state is CircuitState.CLOSED
    succeed(breaker)  # window F F F S: the rate is judged on failures only
    succeed(breaker)  # F F S S
    succeed(breaker)  # F S S S
    assert breaker.state is CircuitState.CLOSED
    fail(breaker)  # S S S F: 25 %
    assert breaker.state is CircuitState.CLOSED
    fail(breaker)  # S S F F: 50 %
    assert breaker.state is CircuitState.OPEN


def test_rate_comparison_is_exact_for_decimal_rates(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=None, failure_rate=0.3, window=10)
    for _ in range(7):
        succeed(breaker)
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker)  # 3 / 10 >= 0.3
    assert breaker.state is CircuitState.OPEN


def test_time_window_forgets_old_outcomes(clock: FakeClock) -> None:
    breaker = make(
        clock, failure_threshold=None, failure_rate=0.5, window_duration=10.0, minimum_calls=4
    )
    fail(breaker, 3)
    clock.advance(10.0)  # those failures left the window
    succeed(breaker)
    fail(breaker)
    assert breaker.state is CircuitState.CLOSED
    clock.advance(5.0)
    fail(breaker)
    succeed(breaker)
    assert breaker.state is CircuitState.CLOSED  # 2 of 4 only reached now, on a success
    fail(breaker)  # 3 of 5
    assert breaker.state is CircuitState.OPEN


# -- slow calls -------------------------------------------------------------


def test_slow_success_counts_as_failure(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2, slow_call_duration=1.0)

    def slow() -> str:
        clock.advance(1.5)
        return "late"

    assert breaker.call(slow) == "late"
    assert breaker.call(slow) == "late"
    assert breaker.state is CircuitState.OPEN


def test_slow_calls_in_flight_open_the_breaker_before_they_return(clock: FakeClock) -> None:
    """B8 (fake time): calls still running past slow_call_duration already count."""
    breaker = make(clock, failure_threshold=3, slow_call_duration=1.0)

    def three_slow_calls() -> None:
        with breaker, breaker, breaker:
            clock.advance(1.5)
            assert breaker.state is CircuitState.OPEN
            rejected(breaker)
            raise Boom  # the real failures arrive late: not counted again

    with capture_events() as events, pytest.raises(Boom):
        three_slow_calls()
    failures = [e for e in events if e.kind is EventKind.BREAKER_FAILURE]
    assert len(failures) == 3
    assert all(e.outcome is None for e in failures)
    assert breaker.state is CircuitState.OPEN


def test_slow_probe_fails(clock: FakeClock) -> None:
    breaker = open_breaker(clock, slow_call_duration=1.0, half_open_timeout=20.0)
    clock.advance(10)
    with breaker:
        clock.advance(2)
    assert breaker.state is CircuitState.OPEN


# -- events -----------------------------------------------------------------


def test_events_in_order(clock: FakeClock) -> None:
    seen: list[Event] = []
    breaker = make(clock, failure_threshold=1, listeners=[seen.append])
    succeed(breaker)
    fail(breaker)
    rejected(breaker)
    clock.advance(10)
    succeed(breaker)
    kinds = [(e.kind, e.state, e.previous_state) for e in seen]
    assert kinds == [
        (EventKind.BREAKER_SUCCESS, CircuitState.CLOSED, None),
        (EventKind.BREAKER_FAILURE, CircuitState.OPEN, None),
        (EventKind.BREAKER_STATE_CHANGED, CircuitState.OPEN, CircuitState.CLOSED),
        (EventKind.BREAKER_REJECTED, CircuitState.OPEN, None),
        (EventKind.BREAKER_STATE_CHANGED, CircuitState.HALF_OPEN, CircuitState.OPEN),
        (EventKind.BREAKER_SUCCESS, CircuitState.CLOSED, None),
        (EventKind.BREAKER_STATE_CHANGED, CircuitState.CLOSED, CircuitState.HALF_OPEN),
    ]
    assert all(e.source == "test" for e in seen)
    assert seen[0].outcome is not None
    assert seen[0].outcome.result == "ok"
    assert seen[1].outcome is not None
    assert isinstance(seen[1].outcome.exception, Boom)
    assert seen[2].time == 100.0
    assert seen[4].time == 110.0


def test_ignored_event(clock: FakeClock) -> None:
    breaker = make(clock, ignore=Unrelated)

    def unrelated() -> None:
        raise Unrelated

    with capture_events() as events, pytest.raises(Unrelated):
        breaker.call(unrelated)
    assert [e.kind for e in events] == [EventKind.BREAKER_IGNORED]


def test_listener_sees_every_counted_failure(clock: FakeClock) -> None:
    """B3: including the one that opens the breaker."""
    failures: list[Event] = []

    def on_failure(event: Event) -> None:
        if event.kind is EventKind.BREAKER_FAILURE:
            failures.append(event)

    breaker = make(clock, listeners=[on_failure])
    fail(breaker, 3)
    rejected(breaker)
    assert [e.state for e in failures] == [CircuitState.CLOSED] * 2 + [CircuitState.OPEN]


def test_raising_listener_changes_nothing(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """B3: same exception for the caller, opens on time, the listener's error is logged."""

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    breaker = make(clock, listeners=[broken])
    with caplog.at_level(logging.ERROR, logger="resilio"):
        fail(breaker, 2)
        assert breaker.state is CircuitState.CLOSED
        fail(breaker)
        assert breaker.state is CircuitState.OPEN
        rejected(breaker)
    assert "listener" in caplog.text
    assert "breaker_failure" in caplog.text
    assert any(r.exc_info and "listener bug" in str(r.exc_info[1]) for r in caplog.records)


def test_listener_may_read_the_breaker(clock: FakeClock) -> None:
    """Listeners run outside the lock: reading the breaker from one cannot deadlock."""
    states: list[CircuitState] = []
    breaker = make(
        clock, failure_threshold=1, listeners=[lambda event: states.append(breaker.state)]
    )
    fail(breaker)
    assert states == [CircuitState.OPEN, CircuitState.OPEN]


def test_context_manager_counts(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2)

    def block() -> None:
        with breaker as entered:
            assert entered is breaker
            raise Boom

    for _ in range(2):
        with pytest.raises(Boom):
            block()
    with pytest.raises(CircuitOpenError), breaker:
        pytest.fail("the block must not run")


def test_global_clock_is_used_by_default(fake_clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=5.0)
    fail(breaker)
    fake_clock.advance(5.0)
    assert breaker.state is CircuitState.HALF_OPEN


def test_a_generator_block_finished_inside_a_probe_ends_its_own_block(clock: FakeClock) -> None:
    """Blocks ending out of order: each frame's block releases its own permit."""
    breaker = make(clock, failure_threshold=1)

    def stream() -> Any:
        with breaker:  # admitted while closed
            yield "chunk"
            yield "chunk"

    chunks = stream()
    next(chunks)
    fail(breaker)  # opens
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN

    def probe() -> None:
        with breaker:
            list(chunks)  # the old block succeeds here: a success of the closed era
            raise Boom

    with pytest.raises(Boom):
        probe()
    assert breaker.state is CircuitState.OPEN  # the probe's own failure decided


def test_blocks_nested_in_a_probe_are_part_of_it(clock: FakeClock) -> None:
    breaker = open_breaker(clock, success_threshold=2)
    clock.advance(10)
    with breaker, breaker:  # one probe: the inner block takes no slot and counts nothing
        pass
    assert breaker.state is CircuitState.HALF_OPEN
    with breaker, breaker:
        pass
    assert breaker.state is CircuitState.CLOSED


def test_a_probe_held_by_a_suspended_generator_does_not_cover_its_caller(
    clock: FakeClock,
) -> None:
    """The caller runs in the generator's context, but not inside its probe."""
    breaker = open_breaker(clock)
    clock.advance(10)
    reached: list[int] = []

    def stream() -> Any:
        with breaker:  # the probe
            yield "chunk"
            breaker.call(lambda: reached.append(1))  # inside it, while the generator runs
            yield "chunk"

    chunks = stream()
    next(chunks)
    for _ in range(3):
        rejected(breaker)  # its slot is taken, and this call is not inside it
    next(chunks)
    assert reached == [1]
    with pytest.raises(StopIteration):
        next(chunks)
    assert breaker.state is CircuitState.CLOSED


def test_threads_inside_a_probe_only_with_its_context(clock: FakeClock) -> None:
    """asyncio.to_thread and anyio copy the context: part of the probe; a bare thread is not."""
    import concurrent.futures
    import contextvars

    breaker = open_breaker(clock)
    clock.advance(10)
    outcomes: list[str] = []

    def inner() -> str:
        return "ok"

    def probe() -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                outcomes.append(pool.submit(breaker.call, inner).result())
            except CircuitOpenError:
                outcomes.append("refused")  # a bare thread: not inside
            context = contextvars.copy_context()
            outcomes.append(pool.submit(context.run, breaker.call, inner).result())

    breaker.call(probe)
    assert outcomes == ["refused", "ok"]
    assert breaker.state is CircuitState.CLOSED
