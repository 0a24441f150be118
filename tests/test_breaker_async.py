"""CircuitBreaker on real event loops (asyncio and trio through anyio)."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from resilio import CircuitBreaker, CircuitOpenError, CircuitState, Event, EventKind
from resilio.testing import FakeClock

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """The failure the tests' dependency raises."""


class Unrelated(Exception):
    """An exception a breaker is told to ignore."""


async def open_breaker(clock: FakeClock, **options: object) -> CircuitBreaker:
    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_time=5.0,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )

    @breaker
    async def failing() -> None:
        raise Boom

    with pytest.raises(Boom):
        await failing()
    assert breaker.state is CircuitState.OPEN
    return breaker


async def test_no_lock_is_held_around_the_call() -> None:
    """B1: 8 tasks making a 200 ms call through one closed breaker take ~200 ms."""
    breaker = CircuitBreaker(failure_threshold=5)
    done: list[int] = []

    @breaker
    async def slow_call(i: int) -> None:
        await anyio.sleep(0.2)
        done.append(i)

    start = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for i in range(8):
            tasks.start_soon(slow_call, i)
    assert sorted(done) == list(range(8))
    assert time.perf_counter() - start < 0.8


async def test_async_failures_count() -> None:
    """B2: awaited failures open the breaker; the next call does not run."""
    ran: list[int] = []
    breaker = CircuitBreaker(failure_threshold=3)

    @breaker
    async def failing() -> None:
        ran.append(1)
        await anyio.lowlevel.checkpoint()
        raise Boom

    for _ in range(3):
        with pytest.raises(Boom):
            await failing()
    with pytest.raises(CircuitOpenError) as info:
        await failing()
    assert len(ran) == 3
    assert info.value.state is CircuitState.OPEN
    assert info.value.retry_after == pytest.approx(30.0, abs=1.0)


async def test_listeners_and_a_raising_listener(caplog: pytest.LogCaptureFixture) -> None:
    """B3 on the async path: every failure heard; a broken listener changes nothing."""
    failures: list[Event] = []

    def record(event: Event) -> None:
        if event.kind is EventKind.BREAKER_FAILURE:
            failures.append(event)

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    breaker = CircuitBreaker(failure_threshold=2, listeners=[broken, record])
    error = Boom()

    @breaker
    async def failing() -> None:
        raise error

    with caplog.at_level(logging.ERROR, logger="resilio"):
        for _ in range(2):
            with pytest.raises(Boom) as info:
                await failing()
            assert info.value is error
    assert [e.state for e in failures] == [CircuitState.CLOSED, CircuitState.OPEN]
    assert breaker.state is CircuitState.OPEN
    assert "listener bug" in caplog.text


@pytest.mark.parametrize("probes", [1, 2])
async def test_half_open_admits_only_its_probes(probes: int) -> None:
    """B6: 10 concurrent slow calls after the recovery time: only the probes run."""
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=probes)
    clock.advance(5.0)
    release = anyio.Event()
    ran: list[int] = []
    rejected: list[CircuitOpenError] = []

    @breaker
    async def slow_probe(i: int) -> None:
        ran.append(i)
        await release.wait()

    async def caller(i: int) -> None:
        try:
            await slow_probe(i)
        except CircuitOpenError as error:
            rejected.append(error)
            if len(rejected) == 10 - probes:
                release.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            for i in range(10):
                tasks.start_soon(caller, i)
    assert len(ran) == probes
    assert len(rejected) == 10 - probes
    assert all(e.retry_after > 0 and e.state is CircuitState.HALF_OPEN for e in rejected)
    assert breaker.state is CircuitState.CLOSED


async def test_ignored_probes_release_their_slots() -> None:
    """B9: both probes raise an ignored error; the next call is admitted as a probe."""
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=2, ignore=Unrelated)
    clock.advance(5.0)
    both_in = anyio.Event()
    entered: list[int] = []

    @breaker
    async def probe() -> None:
        entered.append(1)
        if len(entered) == 2:
            both_in.set()
        await both_in.wait()
        raise Unrelated

    async def run_probe() -> None:
        with pytest.raises(Unrelated):
            await probe()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_probe)
            tasks.start_soon(run_probe)
    assert breaker.state is CircuitState.HALF_OPEN

    @breaker
    async def healthy() -> str:
        return "ok"

    assert await healthy() == "ok"
    assert breaker.state is CircuitState.CLOSED


async def test_cancelled_probe_releases_its_slot() -> None:
    """B9/B10: a cancelled probe frees its slot; the same cancellation propagates."""
    clock = FakeClock()
    breaker = await open_breaker(clock)
    clock.advance(5.0)
    seen: list[BaseException] = []
    caught: list[BaseException] = []

    @breaker
    async def hanging_probe() -> None:
        try:
            await anyio.sleep_forever()
        except BaseException as error:
            seen.append(error)
            raise

    async def caller(scope_started: anyio.Event) -> None:
        with anyio.CancelScope() as scope:
            scope_started.set()
            try:
                await hanging_probe()
            except anyio.get_cancelled_exc_class() as error:
                caught.append(error)
                raise
        assert scope.cancelled_caught

    async with anyio.create_task_group() as tasks:
        started = anyio.Event()
        tasks.start_soon(caller, started)
        await started.wait()
        await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    assert len(seen) == 1
    assert caught == seen  # the very same object
    assert breaker.state is CircuitState.HALF_OPEN

    @breaker
    async def healthy() -> str:
        return "ok"

    assert await healthy() == "ok"
    assert breaker.state is CircuitState.CLOSED


async def test_cancellation_changes_no_count_when_closed() -> None:
    """B10: a cancelled call is neither a failure nor a success."""
    breaker = CircuitBreaker(failure_threshold=2)

    @breaker
    async def call(fail: bool) -> None:
        if fail:
            raise Boom
        await anyio.sleep_forever()

    with pytest.raises(Boom):
        await call(True)
    with anyio.move_on_after(0.01) as scope:
        await call(False)
    assert scope.cancelled_caught
    assert breaker.state is CircuitState.CLOSED
    with pytest.raises(Boom):
        await call(True)  # 1 + 1: the cancellation did not reset the count
    assert breaker.state is CircuitState.OPEN


async def test_hung_probe_is_abandoned_after_half_open_timeout() -> None:
    """B9: a probe that never returns does not keep the breaker half-open forever."""
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_timeout=2.0)
    clock.advance(5.0)
    started = anyio.Event()

    @breaker
    async def hanging() -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hanging)
        await started.wait()
        with pytest.raises(CircuitOpenError):
            async with breaker:
                pass
        clock.advance(2.5)
        assert breaker.state is CircuitState.OPEN
        clock.advance(5.0)
        async with breaker:  # a fresh probe
            pass
        assert breaker.state is CircuitState.CLOSED
        tasks.cancel_scope.cancel()
    assert breaker.state is CircuitState.CLOSED


async def test_async_with_keeps_permits_per_task() -> None:
    """A closed-era block that ends late in one task cannot spend another task's probe."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=5.0, clock=clock)
    entered = anyio.Event()
    probe_done = anyio.Event()

    async def closed_era_block() -> None:
        async with breaker:
            entered.set()
            await probe_done.wait()
            raise Boom

    async def closed_era() -> None:
        with pytest.raises(Boom):
            await closed_era_block()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(closed_era)
        await entered.wait()
        with pytest.raises(Boom):
            async with breaker:
                raise Boom
        clock.advance(5.0)
        async with breaker:  # the probe, in this task, still open when the other ends
            probe_done.set()
            await anyio.sleep(0.01)
        assert breaker.state is CircuitState.CLOSED
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.slow
async def test_slow_failures_admit_nothing_after_opening() -> None:
    """B8: 200 concurrent calls failing after 1 s, threshold 5."""
    events: list[Event] = []
    opened_at: list[float] = []

    def listener(event: Event) -> None:
        events.append(event)
        if event.kind is EventKind.BREAKER_STATE_CHANGED:
            opened_at.append(time.perf_counter())

    breaker = CircuitBreaker(failure_threshold=5, recovery_time=60.0, listeners=[listener])
    starts: list[float] = []
    ran_after_open_was_visible: list[int] = []

    @breaker
    async def slow_failure() -> None:
        starts.append(time.perf_counter())
        await anyio.sleep(1.0)
        raise Boom

    async def caller() -> None:
        deadline = time.perf_counter() + 1.3
        while time.perf_counter() < deadline:
            visible = bool(opened_at)
            try:
                await slow_failure()
            except Boom:
                if visible:
                    ran_after_open_was_visible.append(1)
            except CircuitOpenError:
                pass
            await anyio.sleep(0.02)

    async with anyio.create_task_group() as tasks:
        for _ in range(200):
            tasks.start_soon(caller)
    assert len(opened_at) == 1
    assert len(starts) == 200
    assert max(starts) < opened_at[0]
    assert ran_after_open_was_visible == []
    assert len([e for e in events if e.kind is EventKind.BREAKER_FAILURE]) == 5


@pytest.mark.slow
async def test_slow_call_rate_opens_before_the_first_failure_arrives() -> None:
    """B8: with slow_call_duration=0.1 s the breaker opens long before the 1 s failures."""
    breaker = CircuitBreaker(failure_threshold=5, recovery_time=60.0, slow_call_duration=0.1)
    returned: list[float] = []
    opened: list[float] = []
    start = time.perf_counter()

    @breaker
    async def slow_failure() -> None:
        await anyio.sleep(1.0)
        returned.append(time.perf_counter())
        raise Boom

    rejected: list[float] = []

    async def call() -> None:
        # On a loaded machine, starting 200 tasks can take longer than the slow-call
        # threshold: the late starters then find the breaker open, which is correct.
        try:
            await slow_failure()
        except Boom:
            pass
        except CircuitOpenError:
            rejected.append(time.perf_counter())

    async def watch() -> None:
        # Polling is the point: reading the state applies the in-flight slow-call check.
        while breaker.state is CircuitState.CLOSED:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        opened.append(time.perf_counter())
        with pytest.raises(CircuitOpenError):
            await slow_failure()

    async with anyio.create_task_group() as tasks:
        for _ in range(200):
            tasks.start_soon(call)
        tasks.start_soon(watch)
    assert opened
    assert opened[0] - start < 0.5
    assert len(returned) >= 5  # enough slow calls were admitted to trip it
    assert len(returned) + len(rejected) == 200
    assert opened[0] < min(returned)
    assert breaker.state is CircuitState.OPEN


async def _boom() -> None:
    raise Boom


async def _ok() -> str:
    return "ok"


async def _half_open() -> CircuitBreaker:
    """A breaker that one failure opened, past its recovery time: its next call is a probe."""
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=10.0, clock=clock)
    with pytest.raises(Boom):
        await breaker.call_async(_boom)
    clock.advance(10.0)
    return breaker


async def test_a_task_started_in_a_probe_joins_it_only_while_it_runs() -> None:
    """Tasks inherit their starter's context: a task a probe starts is inside the probe."""
    breaker = await _half_open()
    joined, probe_over = anyio.Event(), anyio.Event()
    outcomes: list[str] = []

    async def child() -> None:
        outcomes.append(await breaker.call_async(_ok))  # while the probe runs
        joined.set()
        await probe_over.wait()
        with pytest.raises(CircuitOpenError):
            await breaker.call_async(_ok)  # the probe failed and is over
        outcomes.append("rejected")

    async with anyio.create_task_group() as group:

        async def probe() -> None:
            group.start_soon(child)  # started from inside the probe
            await joined.wait()
            raise Boom

        with pytest.raises(Boom):
            await breaker.call_async(probe)
        assert breaker.state is CircuitState.OPEN
        probe_over.set()
    assert outcomes == ["ok", "rejected"]


async def test_an_async_generator_block_finished_inside_a_probe_ends_its_own_block() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=10.0, clock=clock)

    async def stream() -> Any:
        async with breaker:  # admitted while closed
            yield "chunk"
            yield "chunk"

    chunks = stream()
    await chunks.__anext__()
    with pytest.raises(Boom):
        await breaker.call_async(_boom)
    clock.advance(10.0)

    async def probe() -> None:
        async with breaker:
            assert [chunk async for chunk in chunks] == ["chunk"]  # a closed-era success
            raise Boom

    with pytest.raises(Boom):
        await probe()
    assert breaker.state is CircuitState.OPEN


async def test_a_probe_held_by_a_suspended_async_generator_does_not_cover_its_caller() -> None:
    breaker = await _half_open()

    async def stream() -> Any:
        async with breaker:  # the probe
            yield "chunk"
            yield await breaker.call_async(_ok)  # inside it, while the generator runs

    chunks = stream()
    assert await chunks.__anext__() == "chunk"
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(_ok)  # the caller is not inside the suspended probe
    assert await chunks.__anext__() == "ok"
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
    assert breaker.state is CircuitState.CLOSED
