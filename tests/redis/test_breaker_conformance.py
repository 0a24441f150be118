"""The breaker conformance suite: one set of scenarios for every store and both APIs.

Each test runs on the in-memory breaker and on Redis (standalone and
cluster, sync and async clients), through the sync forms (``call``,
``with``, ``state``) and the async ones (``call_async``, ``async with``,
``state_async``), on the combinations that exist: an async client serves
only the async forms, on asyncio. Redis runs on caller time, so the fake
clock of each test drives the Lua script, and both stores must decide alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from resilio import CircuitBreaker, CircuitOpenError, CircuitState, Event, EventKind
from resilio._redis_breaker import RedisCircuitBreaker
from resilio.redis import RedisStore
from resilio.testing import FakeClock

from ..callers import Caller

pytestmark = pytest.mark.anyio

# (store kind, api, anyio backend): every combination that exists, each once.
COMBOS = [
    ("memory", "sync", "asyncio"),
    ("memory", "async", "asyncio"),
    ("memory", "async", "trio"),
    ("redis", "sync", "asyncio"),
    ("redis", "async", "asyncio"),
    ("redis", "async", "trio"),
    ("cluster", "sync", "asyncio"),
    ("cluster", "async", "asyncio"),
    ("redis-async", "async", "asyncio"),
    ("cluster-async", "async", "asyncio"),
]
CLIENTS = {
    "redis": "sync_client",
    "cluster": "cluster_client",
    "redis-async": "async_client",
    "cluster-async": "async_cluster_client",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kind" in metafunc.fixturenames:
        combos = COMBOS
        if getattr(metafunc.function, "async_only", False):
            combos = [combo for combo in COMBOS if combo[1] == "async"]
        ids = [f"{kind}-{api}-{backend}" for kind, api, backend in combos]
        metafunc.parametrize(("kind", "api", "anyio_backend"), combos, ids=ids)


class Boom(Exception):
    """The failure the tests' dependency raises."""


class Unrelated(Exception):
    """An exception the breaker is not configured to count."""


def failing() -> None:
    raise Boom


class Harness:
    """Builds breakers on one store and drives them through the sync or the async forms."""

    def __init__(self, store: RedisStore | None, api: str, clock: FakeClock) -> None:
        self.store = store
        self.sync = api == "sync"
        self.clock = clock
        self.callers: list[Caller] = []

    def make(self, name: str = "test", **options: Any) -> CircuitBreaker:
        if "failure_rate" not in options:
            options.setdefault("failure_threshold", 3)
        options.setdefault("recovery_time", 10.0)
        breaker = CircuitBreaker(name, clock=self.clock, store=self.store, **options)
        assert isinstance(breaker, RedisCircuitBreaker) is (self.store is not None)
        return breaker

    async def call(self, breaker: CircuitBreaker, fn: Callable[[], Any]) -> Any:
        if self.sync:
            return breaker.call(fn)

        async def run() -> Any:
            return fn()

        return await breaker.call_async(run)

    async def fail(self, breaker: CircuitBreaker, times: int = 1) -> None:
        for _ in range(times):
            with pytest.raises(Boom):
                await self.call(breaker, failing)

    async def succeed(self, breaker: CircuitBreaker) -> None:
        assert await self.call(breaker, lambda: "ok") == "ok"

    async def rejected(self, breaker: CircuitBreaker) -> CircuitOpenError:
        ran: list[int] = []
        with pytest.raises(CircuitOpenError) as info:
            await self.call(breaker, lambda: ran.append(1))
        assert ran == []
        return info.value

    async def state(self, breaker: CircuitBreaker) -> CircuitState:
        return breaker.state if self.sync else await breaker.state_async()

    async def retry_after(self, breaker: CircuitBreaker) -> float:
        return breaker.retry_after if self.sync else await breaker.retry_after_async()

    async def isolate(self, breaker: CircuitBreaker) -> None:
        if self.sync:
            breaker.isolate()
        else:
            await breaker.isolate_async()

    async def reset(self, breaker: CircuitBreaker) -> None:
        if self.sync:
            breaker.reset()
        else:
            await breaker.reset_async()

    async def enter(self, breaker: CircuitBreaker) -> None:
        """Start a call of another caller that runs until `leave` (they leave last first).

        Each call is a caller of its own (as if in a thread or task of its
        own): calls of one caller inside another of the same breaker would be
        nested in it.
        """
        caller = Caller()
        if self.sync:
            caller.run(breaker.__enter__)
        else:
            await caller.run_async(breaker.__aenter__())
        self.callers.append(caller)

    async def leave(self, breaker: CircuitBreaker, exc: BaseException | None = None) -> None:
        info = (None, None, None) if exc is None else (type(exc), exc, None)
        caller = self.callers.pop()
        if self.sync:
            caller.run(breaker.__exit__, *info)
        else:
            await caller.run_async(breaker.__aexit__(*info))

    async def open(self, breaker: CircuitBreaker, failures: int = 3) -> None:
        await self.fail(breaker, failures)
        assert await self.state(breaker) is CircuitState.OPEN


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_000.0)


@pytest.fixture
def h(
    kind: str, api: str, request: pytest.FixtureRequest, prefix: str, clock: FakeClock
) -> Harness:
    store = None
    if kind != "memory":
        client = request.getfixturevalue(CLIENTS[kind])
        store = RedisStore(client, prefix=prefix, time_source="caller")
    return Harness(store, api, clock)


# -- closed and open ---------------------------------------------------------------


async def test_opens_after_threshold_and_rejects_without_running(h: Harness) -> None:
    breaker = h.make()
    await h.succeed(breaker)
    await h.fail(breaker, 2)
    assert await h.state(breaker) is CircuitState.CLOSED
    await h.fail(breaker)
    error = await h.rejected(breaker)
    assert error.state is CircuitState.OPEN
    assert error.breaker == "test"
    assert error.retry_after == pytest.approx(10.0)
    h.clock.advance(4.0)
    assert await h.retry_after(breaker) == pytest.approx(6.0)
    assert (await h.rejected(breaker)).retry_after == pytest.approx(6.0)


async def test_success_resets_consecutive_count(h: Harness) -> None:
    breaker = h.make()
    for _ in range(3):
        await h.fail(breaker, 2)
        await h.succeed(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED
    await h.fail(breaker, 3)
    assert await h.state(breaker) is CircuitState.OPEN


async def test_non_matching_exceptions_count_as_success_and_ignored_as_neither(
    h: Harness,
) -> None:
    breaker = h.make(on=Boom, ignore=KeyError)

    def unrelated() -> None:
        raise Unrelated

    def ignored() -> None:
        raise KeyError("x")

    await h.fail(breaker, 2)
    with pytest.raises(KeyError):
        await h.call(breaker, ignored)
    await h.fail(breaker)  # the ignored call did not reset the count
    assert await h.state(breaker) is CircuitState.OPEN
    await h.reset(breaker)
    await h.fail(breaker, 2)
    with pytest.raises(Unrelated):
        await h.call(breaker, unrelated)  # a success: resets the count
    await h.fail(breaker, 2)
    assert await h.state(breaker) is CircuitState.CLOSED


async def test_failure_decided_from_the_result(h: Harness) -> None:
    breaker = h.make(failure_threshold=2, on=lambda outcome: outcome.result == "bad")
    assert await h.call(breaker, lambda: "bad") == "bad"
    assert await h.call(breaker, lambda: "bad") == "bad"
    assert await h.state(breaker) is CircuitState.OPEN


# -- half-open ------------------------------------------------------------------------


async def test_probe_success_closes_and_probe_failure_reopens(h: Harness) -> None:
    breaker = h.make()
    await h.open(breaker)
    h.clock.advance(10.0)
    assert await h.state(breaker) is CircuitState.HALF_OPEN
    await h.fail(breaker)
    assert await h.state(breaker) is CircuitState.OPEN
    assert await h.retry_after(breaker) == pytest.approx(10.0)
    h.clock.advance(10.0)
    await h.succeed(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED
    await h.fail(breaker, 2)  # counts start from zero again
    assert await h.state(breaker) is CircuitState.CLOSED


async def test_success_threshold_needs_that_many_probe_successes(h: Harness) -> None:
    breaker = h.make(success_threshold=2)
    await h.open(breaker)
    h.clock.advance(10.0)
    await h.succeed(breaker)
    assert await h.state(breaker) is CircuitState.HALF_OPEN
    await h.succeed(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED


async def test_half_open_admits_only_its_probes(h: Harness) -> None:
    """B6: extra calls are rejected at once, with a retry_after."""
    breaker = h.make(half_open_probes=2, half_open_timeout=5.0)
    await h.open(breaker)
    h.clock.advance(10.0)
    await h.enter(breaker)
    await h.enter(breaker)
    error = await h.rejected(breaker)
    assert error.state is CircuitState.HALF_OPEN
    assert error.retry_after == pytest.approx(5.0)
    await h.leave(breaker)
    await h.leave(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED


async def test_open_periods_grow_and_are_capped(h: Harness) -> None:
    """B6: three failed probes in a row give open periods of d, 2d, 4d, capped."""
    breaker = h.make(recovery_time=1.0, max_recovery_time=3.0)
    await h.open(breaker)
    periods = []
    for _ in range(3):
        periods.append(await h.retry_after(breaker))
        h.clock.advance(periods[-1])
        await h.fail(breaker)
    periods.append(await h.retry_after(breaker))
    assert periods == pytest.approx([1.0, 2.0, 3.0, 3.0])
    h.clock.advance(3.0)
    await h.succeed(breaker)  # closing forgets the grown period
    await h.open(breaker)
    assert await h.retry_after(breaker) == pytest.approx(1.0)


async def test_a_hung_probe_never_wedges_the_breaker(h: Harness) -> None:
    """B9: a probe that never returns is abandoned after half_open_timeout."""
    breaker = h.make(half_open_timeout=2.0)
    await h.open(breaker)
    h.clock.advance(10.0)
    await h.enter(breaker)  # the hung probe
    await h.rejected(breaker)
    h.clock.advance(2.5)
    assert await h.state(breaker) is CircuitState.OPEN  # re-opened when its lease ended
    h.clock.advance(10.0)
    await h.succeed(breaker)  # a fresh probe
    assert await h.state(breaker) is CircuitState.CLOSED
    await h.leave(breaker, Boom())  # the hung probe returns at last: an old generation
    assert await h.state(breaker) is CircuitState.CLOSED


async def nested_call(h: Harness, breaker: CircuitBreaker, inner: Callable[[], Any]) -> Any:
    """Call through ``breaker`` a function that calls ``inner`` through it too."""
    if h.sync:
        return breaker.call(lambda: breaker.call(inner))

    async def inner_async() -> Any:
        return inner()

    async def outer() -> Any:
        return await breaker.call_async(inner_async)

    return await breaker.call_async(outer)


async def test_calls_inside_a_probe_are_part_of_it(h: Harness) -> None:
    """A guarded function calling another guarded by the same breaker can still close it."""
    breaker = h.make(failure_threshold=1, success_threshold=2)
    await h.open(breaker, 1)
    h.clock.advance(10.0)
    assert await nested_call(h, breaker, lambda: "ok") == "ok"
    # The nested call took no probe slot and counted nothing: one probe success of two.
    assert await h.state(breaker) is CircuitState.HALF_OPEN
    assert await nested_call(h, breaker, lambda: "ok") == "ok"
    assert await h.state(breaker) is CircuitState.CLOSED
    await h.open(breaker, 1)
    h.clock.advance(10.0)
    with pytest.raises(Boom):
        await nested_call(h, breaker, failing)  # the probe fails with it: open again
    assert await h.state(breaker) is CircuitState.OPEN
    assert await h.retry_after(breaker) == pytest.approx(10.0)


async def test_a_probe_holds_its_slot_for_its_own_calls_only(h: Harness) -> None:
    breaker = h.make(failure_threshold=1)
    await h.open(breaker, 1)
    h.clock.advance(10.0)
    await h.enter(breaker)  # another caller's probe
    await h.rejected(breaker)  # this caller is not inside it
    await h.leave(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED


async def test_late_outcomes_from_an_older_state_are_not_counted(h: Harness) -> None:
    breaker = h.make(failure_threshold=1)
    await h.enter(breaker)  # admitted while closed
    await h.fail(breaker)
    h.clock.advance(10.0)
    await h.succeed(breaker)  # probe closes it: a new generation
    await h.leave(breaker, Boom())
    assert await h.state(breaker) is CircuitState.CLOSED


async def test_ignored_probes_release_their_slots(h: Harness) -> None:
    """B9: probes that raise ignored exceptions free their slots."""
    breaker = h.make(half_open_probes=2, ignore=KeyError)
    await h.open(breaker)
    h.clock.advance(10.0)
    await h.enter(breaker)
    await h.enter(breaker)
    await h.leave(breaker, KeyError("a"))
    await h.leave(breaker, KeyError("b"))
    assert await h.state(breaker) is CircuitState.HALF_OPEN
    await h.succeed(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED


async def test_a_cancelled_probe_releases_its_slot(h: Harness) -> None:
    """B9 and B10: cancellation counts as nothing and frees the probe slot."""
    breaker = h.make()
    await h.open(breaker)
    h.clock.advance(10.0)
    started = anyio.Event()

    @breaker
    async def hang() -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as group:
        group.start_soon(hang)
        await started.wait()
        await h.rejected(breaker)  # the probe holds the only slot
        group.cancel_scope.cancel()
    assert await h.state(breaker) is CircuitState.HALF_OPEN
    await h.succeed(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED


test_a_cancelled_probe_releases_its_slot.async_only = True  # type: ignore[attr-defined]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, GeneratorExit])
async def test_interrupts_change_nothing(h: Harness, interrupt: type[BaseException]) -> None:
    """B10: counts unchanged, the probe slot released, the exception unchanged."""
    breaker = h.make()
    raised = interrupt()

    def interrupted() -> None:
        raise raised

    await h.fail(breaker, 2)
    with pytest.raises(interrupt) as info:
        await h.call(breaker, interrupted)
    assert info.value is raised
    await h.succeed(breaker)  # reset the count: the interrupt did not count as a failure
    await h.fail(breaker, 2)
    assert await h.state(breaker) is CircuitState.CLOSED
    await h.fail(breaker)
    h.clock.advance(10.0)
    with pytest.raises(interrupt):
        await h.call(breaker, interrupted)
    assert await h.state(breaker) is CircuitState.HALF_OPEN
    await h.succeed(breaker)  # the slot was released
    assert await h.state(breaker) is CircuitState.CLOSED


async def test_isolate_holds_open_until_reset(h: Harness) -> None:
    breaker = h.make()
    await h.isolate(breaker)
    error = await h.rejected(breaker)
    assert error.state is CircuitState.ISOLATED
    assert math.isinf(error.retry_after)
    h.clock.advance(1_000.0)
    assert await h.state(breaker) is CircuitState.ISOLATED
    await h.reset(breaker)
    await h.succeed(breaker)


async def test_reset_clears_counts(h: Harness) -> None:
    breaker = h.make()
    await h.fail(breaker, 2)
    await h.reset(breaker)
    await h.fail(breaker, 2)
    assert await h.state(breaker) is CircuitState.CLOSED
    await h.fail(breaker)
    await h.reset(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED
    await h.succeed(breaker)


# -- failure rates --------------------------------------------------------------------


async def test_count_window_rate(h: Harness) -> None:
    breaker = h.make(failure_rate=0.3, window=10, minimum_calls=5)
    await h.fail(breaker, 4)
    assert await h.state(breaker) is CircuitState.CLOSED  # under minimum_calls
    await h.reset(breaker)
    for _ in range(7):
        await h.succeed(breaker)
    await h.fail(breaker, 2)
    assert await h.state(breaker) is CircuitState.CLOSED  # 2 / 9
    await h.fail(breaker)  # 3 / 10 >= 0.3
    assert await h.state(breaker) is CircuitState.OPEN


async def test_count_window_pushes_out_old_outcomes(h: Harness) -> None:
    breaker = h.make(failure_rate=0.5, window=4, minimum_calls=4)
    await h.fail(breaker)
    for _ in range(4):
        await h.succeed(breaker)  # the failure left the window
    await h.fail(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED  # 1 / 4
    await h.fail(breaker)  # 2 / 4
    assert await h.state(breaker) is CircuitState.OPEN


async def test_time_window_forgets_old_outcomes(h: Harness) -> None:
    breaker = h.make(failure_rate=0.5, window_duration=10.0, minimum_calls=4)
    await h.fail(breaker, 3)
    h.clock.advance(10.0)  # those failures left the window
    await h.succeed(breaker)
    await h.fail(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED
    h.clock.advance(5.0)
    await h.fail(breaker)
    await h.succeed(breaker)
    assert await h.state(breaker) is CircuitState.CLOSED  # 2 of 4 only reached on a success
    await h.fail(breaker)  # 3 of 5
    assert await h.state(breaker) is CircuitState.OPEN


# -- slow calls -------------------------------------------------------------------------


async def test_slow_success_counts_as_failure(h: Harness) -> None:
    breaker = h.make(failure_threshold=2, slow_call_duration=1.0)

    def slow() -> str:
        h.clock.advance(1.5)
        return "late"

    assert await h.call(breaker, slow) == "late"
    assert await h.state(breaker) is CircuitState.CLOSED
    assert await h.call(breaker, slow) == "late"
    assert await h.state(breaker) is CircuitState.OPEN


async def test_slow_calls_in_flight_open_the_breaker_before_they_return(h: Harness) -> None:
    """B8: calls still running past slow_call_duration already count."""
    failures: list[Event] = []
    breaker = h.make(
        slow_call_duration=1.0,
        listeners=[lambda e: failures.append(e) if e.kind is EventKind.BREAKER_FAILURE else None],
    )
    for _ in range(3):
        await h.enter(breaker)
    h.clock.advance(1.5)
    assert await h.state(breaker) is CircuitState.OPEN
    await h.rejected(breaker)
    for _ in range(3):
        await h.leave(breaker, Boom())  # the real failures arrive late: not counted again
    assert len(failures) == 3
    assert all(e.outcome is None for e in failures)


async def test_slow_probe_fails(h: Harness) -> None:
    breaker = h.make(slow_call_duration=1.0, half_open_timeout=20.0)
    await h.open(breaker)
    h.clock.advance(10.0)

    def slow() -> str:
        h.clock.advance(1.5)
        return "late"

    assert await h.call(breaker, slow) == "late"
    assert await h.state(breaker) is CircuitState.OPEN


# -- events --------------------------------------------------------------------------------


async def test_events_in_order(h: Harness) -> None:
    seen: list[Event] = []
    breaker = h.make(failure_threshold=1, listeners=[seen.append])
    await h.succeed(breaker)
    await h.fail(breaker)
    await h.rejected(breaker)
    h.clock.advance(10.0)
    await h.succeed(breaker)
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


async def test_a_raising_listener_changes_nothing(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """B3: same exception, the breaker still opens on time, the error is logged."""
    failures: list[Event] = []

    def broken(event: Event) -> None:
        if event.kind is EventKind.BREAKER_FAILURE:
            failures.append(event)
        raise RuntimeError("listener bug")

    breaker = h.make(listeners=[broken])
    await h.fail(breaker, 3)
    await h.rejected(breaker)
    assert [e.state for e in failures] == [CircuitState.CLOSED] * 2 + [CircuitState.OPEN]
    assert "listener bug" in caplog.text
