"""resilio.timeout: async cancellation (asyncio, trio), sync cooperative deadlines, threads."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.lowlevel
import pytest

import resilio
from resilio.testing import FakeClock, capture_events


@pytest.mark.anyio
async def test_async_call_is_cancelled_at_the_timeout() -> None:
    finished: list[bool] = []

    @resilio.timeout(0.05)
    async def slow() -> None:
        await anyio.sleep(1)
        finished.append(True)

    started = time.perf_counter()
    with pytest.raises(resilio.TimeoutExceeded) as info:
        await slow()
    assert time.perf_counter() - started < 0.5
    assert finished == []
    assert isinstance(info.value, TimeoutError)
    assert info.value.timeout == 0.05


@pytest.mark.anyio
async def test_async_fast_call_returns_its_value() -> None:
    @resilio.timeout(1.0)
    async def fast(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x + 1

    assert await fast(1) == 2


@pytest.mark.anyio
async def test_inner_timeout_never_outlives_the_outer_one() -> None:
    inner = resilio.timeout(0.5, name="inner")

    @inner
    async def slow() -> None:
        await anyio.sleep(1)

    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.05):
            await slow()
    assert time.perf_counter() - started < 0.3


@pytest.mark.anyio
async def test_outer_cancellation_is_not_turned_into_a_timeout() -> None:
    @resilio.timeout(5.0)
    async def slow() -> None:
        await anyio.sleep(5)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await anyio.sleep(0.01)
            scope.cancel()
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_time_remaining_inside_async_timeout() -> None:
    @resilio.timeout(10.0)
    async def read() -> float | None:
        return resilio.time_remaining()

    remaining = await read()
    assert remaining is not None
    assert 9.0 < remaining <= 10.0
    assert resilio.time_remaining() is None


def test_sync_deadline_is_cooperative_and_visible(fake_clock: FakeClock) -> None:
    seen: list[float | None] = []

    @resilio.timeout(2.0)
    def work() -> str:
        seen.append(resilio.time_remaining())
        fake_clock.advance(0.5)
        seen.append(resilio.time_remaining())
        return "done"

    assert work() == "done"
    assert seen == [2.0, 1.5]
    assert resilio.time_remaining() is None


def test_sync_call_finishing_late_raises(fake_clock: FakeClock) -> None:
    @resilio.timeout(1.0, name="db")
    def late() -> str:
        fake_clock.advance(1.5)
        return "too late"

    with capture_events() as events, pytest.raises(resilio.TimeoutExceeded, match="db"):
        late()
    assert [e.kind for e in events] == [resilio.EventKind.TIMEOUT]


def test_sync_late_failure_becomes_a_timeout_with_its_cause(fake_clock: FakeClock) -> None:
    @resilio.timeout(1.0)
    def late() -> None:
        fake_clock.advance(2)
        raise ConnectionError("socket gave up")

    with pytest.raises(resilio.TimeoutExceeded) as info:
        late()
    assert isinstance(info.value.__cause__, ConnectionError)


def test_sync_in_time_failure_propagates_unchanged(fake_clock: FakeClock) -> None:
    error = ConnectionError("fast failure")

    @resilio.timeout(1.0)
    def fail() -> None:
        raise error

    with pytest.raises(ConnectionError) as info:
        fail()
    assert info.value is error


def test_sync_inner_deadline_is_clamped_by_the_outer(fake_clock: FakeClock) -> None:
    seen: list[float | None] = []

    @resilio.timeout(1.0)
    def outer() -> None:
        inner()

    @resilio.timeout(5.0)
    def inner() -> None:
        seen.append(resilio.time_remaining())

    outer()
    assert seen == [1.0]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_async_timeout_inside_a_sync_one_ends_at_the_outer_deadline(
    fake_clock: FakeClock, backend: str
) -> None:
    """A sync handler that runs an event loop: the loop's calls share its deadline."""
    events: list[resilio.Event] = []

    @resilio.timeout(5.0, name="fetch", listeners=[events.append])
    async def fetch() -> None:
        await anyio.sleep(30)  # real time: cancelled when the outer deadline comes

    @resilio.timeout(1.0, name="handler")
    def handler() -> None:
        fake_clock.advance(0.995)  # the handler's own work: 5 ms of its second left
        anyio.run(fetch, backend=backend)

    started = time.perf_counter()
    with pytest.raises(resilio.TimeoutExceeded, match=r"fetch: .* enclosing timeout") as info:
        handler()
    assert time.perf_counter() - started < 2.0
    assert info.value.timeout == pytest.approx(0.005)
    assert [event.timeout for event in events] == [pytest.approx(0.005)]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_sync_interrupts_pass_through(
    fake_clock: FakeClock, interrupt: type[BaseException]
) -> None:
    @resilio.timeout(1.0)
    def body() -> None:
        fake_clock.advance(5)
        raise interrupt

    with pytest.raises(interrupt):
        body()
    assert resilio.time_remaining() is None


def test_thread_timeout_walks_away_from_a_stuck_call() -> None:
    release = threading.Event()

    @resilio.timeout(0.05, thread=True)
    def stuck() -> str:
        release.wait(5)
        return "late"

    started = time.perf_counter()
    with pytest.raises(resilio.TimeoutExceeded):
        stuck()
    assert time.perf_counter() - started < 1.0
    release.set()


def test_thread_timeout_returns_values_and_raises_errors() -> None:
    @resilio.timeout(2.0, thread=True)
    def add(a: int, b: int) -> int:
        remaining = resilio.time_remaining()
        assert remaining is not None
        assert remaining > 0
        return a + b

    @resilio.timeout(2.0, thread=True)
    def fail() -> None:
        raise KeyError("x")

    assert add(1, 2) == 3
    with pytest.raises(KeyError):
        fail()


def test_thread_timeout_refuses_async_functions() -> None:
    async def coro() -> None: ...

    with pytest.raises(TypeError, match="thread=True"):
        resilio.timeout(1.0, thread=True)(coro)


@pytest.mark.parametrize(
    ("seconds", "error"),
    [(0, ValueError), (-1, ValueError), (float("inf"), ValueError), ("1", TypeError)],
)
def test_bad_timeouts_are_refused(seconds: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="seconds"):
        resilio.timeout(seconds)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_many_concurrent_calls_expire_exactly_when_due() -> None:
    policy = resilio.timeout(0.05)
    outcomes: dict[int, str] = {}

    @policy
    async def work(i: int) -> str:
        await anyio.sleep(1 if i % 2 == 0 else 0.001)
        return "done"

    async def run(i: int) -> None:
        try:
            outcomes[i] = await work(i)
        except resilio.TimeoutExceeded:
            outcomes[i] = "timeout"

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(run, i)
    assert time.perf_counter() - started < 0.5
    assert outcomes == {i: "timeout" if i % 2 == 0 else "done" for i in range(50)}


@pytest.mark.anyio
async def test_timer_rearms_after_many_fast_calls() -> None:
    @resilio.timeout(0.05)
    async def maybe_slow(slow: bool) -> None:
        await anyio.sleep(1 if slow else 0)

    for _ in range(200):
        await maybe_slow(False)
    started = time.perf_counter()
    with pytest.raises(resilio.TimeoutExceeded):
        await maybe_slow(True)
    assert 0.04 <= time.perf_counter() - started < 0.5
    # The task is not left cancelled: it can await again.
    await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_timeouts_of_the_same_length_share_nothing_but_the_timer() -> None:
    short_a, short_b = resilio.timeout(0.05, name="a"), resilio.timeout(0.05, name="b")

    @short_a
    async def fast() -> str:
        await anyio.lowlevel.checkpoint()
        return "fast"

    @short_b
    async def slow() -> None:
        await anyio.sleep(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(fast)
        with pytest.raises(resilio.TimeoutExceeded, match="b:"):
            await slow()
    assert await fast() == "fast"


@pytest.mark.anyio
async def test_a_call_that_swallows_its_cancellation_keeps_its_result() -> None:
    @resilio.timeout(0.02)
    async def stubborn() -> str:
        try:
            await anyio.sleep(1)
        except BaseException:
            return "kept"
        return "never"

    assert await stubborn() == "kept"
    await anyio.lowlevel.checkpoint()  # and the task is usable afterwards
