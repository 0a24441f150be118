"""CircuitBreaker under real threads: no lock around calls, one transition, probe gating."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from resilio import CircuitBreaker, CircuitOpenError, CircuitState, Event, EventKind
from resilio.testing import FakeClock


class Boom(Exception):
    """The failure the tests' dependency raises."""


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads far more often than usual, to shake out interleavings."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_no_lock_is_held_around_the_call() -> None:
    """B1: 8 threads making a 200 ms call through one closed breaker take ~200 ms."""
    breaker = CircuitBreaker(failure_threshold=5)

    @breaker
    def slow_call() -> str:
        time.sleep(0.2)
        return "ok"

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: slow_call(), range(8)))
    elapsed = time.perf_counter() - start
    assert results == ["ok"] * 8
    assert elapsed < 0.8  # serialised, it would take 1.6 s


def test_no_lock_is_held_around_probes_or_slow_call_tracking() -> None:
    """B1, tracked path: slow-call detection and probes also run concurrently."""
    breaker = CircuitBreaker(failure_threshold=5, slow_call_duration=10.0)

    def slow_call(_: int) -> None:
        with breaker:
            time.sleep(0.2)

    start = time.perf_counter()
    run_threads(8, slow_call)
    assert time.perf_counter() - start < 0.8
    assert breaker.state is CircuitState.CLOSED


def test_exactly_one_transition_under_contention(busy_switching: None) -> None:
    """B5: 50 threads, threshold 10: one closed->open event, exactly 10 counted failures."""
    events: list[Event] = []
    opened = threading.Event()

    def listener(event: Event) -> None:
        events.append(event)
        if event.kind is EventKind.BREAKER_STATE_CHANGED:
            opened.set()

    breaker = CircuitBreaker(failure_threshold=10, recovery_time=60.0, listeners=[listener])
    started_after_open = []
    runs = []

    @breaker
    def failing() -> None:
        runs.append(1)
        raise Boom

    barrier = threading.Barrier(50)
    rejections: list[CircuitOpenError] = []

    def hammer(_: int) -> None:
        barrier.wait()
        for _ in range(200):
            visible = opened.is_set()
            try:
                failing()
            except Boom:
                if visible:
                    started_after_open.append(1)
            except CircuitOpenError as error:
                rejections.append(error)

    run_threads(50, hammer)
    changes = [e for e in events if e.kind is EventKind.BREAKER_STATE_CHANGED]
    assert [(e.previous_state, e.state) for e in changes] == [
        (CircuitState.CLOSED, CircuitState.OPEN)
    ]
    failures = [e for e in events if e.kind is EventKind.BREAKER_FAILURE]
    assert len(failures) == 10
    assert [e.state for e in failures].count(CircuitState.OPEN) == 1
    assert started_after_open == []
    assert len(runs) >= 10
    assert rejections
    assert all(e.state is CircuitState.OPEN and e.retry_after > 0 for e in rejections)
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_admits_only_its_probes(probes: int) -> None:
    """B6: 10 concurrent slow calls after the recovery time: only the probes run."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_time=5.0, half_open_probes=probes, clock=clock
    )
    with pytest.raises(Boom):
        breaker.call(lambda: (_ for _ in ()).throw(Boom()))
    clock.advance(5.0)

    release = threading.Event()
    ran: list[int] = []
    rejections: list[CircuitOpenError] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    @breaker
    def slow_probe(i: int) -> None:
        with lock:
            ran.append(i)
        assert release.wait(10)

    def caller(i: int) -> None:
        barrier.wait()
        try:
            slow_probe(i)
        except CircuitOpenError as error:
            with lock:
                rejections.append(error)
            if len(rejections) == 10 - probes:
                release.set()

    run_threads(10, caller)
    assert len(ran) == probes
    assert len(rejections) == 10 - probes
    assert all(e.state is CircuitState.HALF_OPEN and e.retry_after > 0 for e in rejections)
    assert breaker.state is CircuitState.CLOSED


def test_with_blocks_keep_their_own_permits_per_thread() -> None:
    """A closed-era block ending late does not consume a probe's permit in another thread."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=5.0, clock=clock)
    in_closed_block = threading.Event()
    probe_done = threading.Event()
    outcome: list[str] = []

    def closed_era() -> None:
        try:
            with breaker:
                in_closed_block.set()
                assert probe_done.wait(10)
                raise Boom
        except Boom:
            outcome.append("closed-era failure")

    thread = threading.Thread(target=closed_era)
    thread.start()
    assert in_closed_block.wait(10)
    with pytest.raises(Boom):
        breaker.call(lambda: (_ for _ in ()).throw(Boom()))  # opens
    clock.advance(5.0)
    with breaker:  # the probe, in this thread
        probe_done.set()
        thread.join(10)
    assert outcome == ["closed-era failure"]
    assert breaker.state is CircuitState.CLOSED  # the stale failure changed nothing


def test_slow_failures_admit_nothing_after_opening() -> None:
    """B8 (threads): 200 calls failing after 0.5 s; none admitted after the breaker opened."""
    events: list[Event] = []
    opened_at: list[float] = []

    def listener(event: Event) -> None:
        events.append(event)
        if event.kind is EventKind.BREAKER_STATE_CHANGED:
            opened_at.append(time.perf_counter())

    breaker = CircuitBreaker(failure_threshold=5, recovery_time=60.0, listeners=[listener])
    starts: list[float] = []

    @breaker
    def slow_failure() -> None:
        starts.append(time.perf_counter())
        time.sleep(0.5)
        raise Boom

    ran_after_open_was_visible = []
    together = threading.Barrier(200, timeout=10)

    def caller(_: int) -> None:
        together.wait()  # start the 200 first calls as one wave
        deadline = time.perf_counter() + 0.8
        while time.perf_counter() < deadline:
            visible = bool(opened_at)
            try:
                slow_failure()
            except Boom:
                if visible:
                    ran_after_open_was_visible.append(1)
            except CircuitOpenError:
                pass
            time.sleep(0.02)

    run_threads(200, caller)
    assert len(opened_at) == 1
    # Normally all 200 first calls start before any fails; on a saturated machine a
    # thread may reach its first call only after the breaker opened, and is refused.
    assert len(starts) >= 5
    assert ran_after_open_was_visible == []
    # Every call was admitted before the breaker opened: the first wave only.
    assert max(starts) < opened_at[0]
    assert len([e for e in events if e.kind is EventKind.BREAKER_FAILURE]) == 5


def test_slow_call_rate_opens_before_the_first_failure_returns() -> None:
    """B8 (threads): with slow_call_duration=0.1 the breaker opens while calls still run."""
    breaker = CircuitBreaker(failure_threshold=5, recovery_time=60.0, slow_call_duration=0.1)
    returned = threading.Event()
    started = threading.Barrier(51, timeout=10)
    admitted: list[int] = []
    rejected: list[int] = []

    @breaker
    def slow_failure() -> None:
        time.sleep(1.0)
        returned.set()
        raise Boom

    def caller(i: int) -> None:
        started.wait()
        if i == 50:
            time.sleep(0.15)
            assert breaker.state is CircuitState.OPEN
            assert not returned.is_set()
            with pytest.raises(CircuitOpenError):
                slow_failure()
            return
        # On a loaded machine a thread can start its call after the first ones have
        # been slow for 0.1 s: it then finds the breaker open, which is correct.
        try:
            slow_failure()
        except Boom:
            admitted.append(i)
        except CircuitOpenError:
            rejected.append(i)

    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            caller(i)
        except BaseException as error:
            errors.append(error)

    run_threads(51, guarded)
    assert errors == []
    assert len(admitted) >= 5  # enough slow calls ran to trip it
    assert len(admitted) + len(rejected) == 50
    assert breaker.state is CircuitState.OPEN
