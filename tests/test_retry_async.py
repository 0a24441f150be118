"""resilio.retry on async functions, on asyncio and trio."""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import resilio
from resilio import GiveUpReason, backoff
from resilio.testing import FakeClock, disable_retries, use_clock

pytestmark = pytest.mark.anyio
no_wait = backoff.none()


async def test_per_call_state_in_concurrent_tasks() -> None:
    # Case R1: A fails 3 times, B once; each sees only its own attempt numbers.
    seen: dict[str, list[int]] = {"a": [], "b": []}
    failures = {"a": 3, "b": 1}

    @resilio.retry(on=ConnectionError, attempts=5, backoff=backoff.constant(0.01))
    async def work(name: str) -> str:
        seen[name].append(resilio.current_attempt())
        await anyio.sleep(0.005)
        if len(seen[name]) <= failures[name]:
            raise ConnectionError(name)
        return name

    async with anyio.create_task_group() as tg:
        tg.start_soon(work, "a")
        tg.start_soon(work, "b")
    assert seen == {"a": [1, 2, 3, 4], "b": [1, 2]}


async def test_cancellation_by_outer_timeout_is_never_retried() -> None:
    # Case R2: a predicate retrying everything, 3 attempts, no wait, under a 50 ms timeout.
    attempts: list[int] = []

    @resilio.retry(on=lambda outcome: True, attempts=3, backoff=no_wait)
    async def slow() -> None:
        attempts.append(resilio.current_attempt())
        await anyio.sleep(0.2)

    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.05):
            await slow()
    elapsed = time.perf_counter() - started
    assert attempts == [1]
    assert elapsed < 0.15


async def test_cancellation_by_task_group_is_never_retried() -> None:
    attempts: list[int] = []

    @resilio.retry(on=Exception, attempts=3, backoff=no_wait)
    async def slow() -> None:
        attempts.append(1)
        await anyio.sleep(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert attempts == [1]


async def test_resilio_timeout_outside_retry_bounds_all_attempts() -> None:
    attempts: list[int] = []
    policy = resilio.Pipeline(
        resilio.timeout(0.05), resilio.retry(on=lambda o: True, attempts=3, backoff=no_wait)
    )

    @policy
    async def slow() -> None:
        attempts.append(1)
        await anyio.sleep(0.2)

    with pytest.raises(resilio.TimeoutExceeded):
        await slow()
    assert attempts == [1]


async def test_per_attempt_timeout_is_retried_until_the_deadline() -> None:
    # Case R10 (async): each attempt would take 0.4 s; a 0.1 s per-attempt timeout cuts it,
    # and the retry's 0.35 s deadline stops the series.
    attempts: list[int] = []
    reasons: list[GiveUpReason | None] = []
    policy = resilio.Pipeline(
        resilio.retry(
            on=TimeoutError,
            attempts=10,
            deadline=0.35,
            backoff=no_wait,
            on_give_up=lambda e: reasons.append(e.reason),
        ),
        resilio.timeout(0.1),
    )

    @policy
    async def slow() -> None:
        attempts.append(resilio.current_attempt())
        await anyio.sleep(0.4)

    started = time.perf_counter()
    with pytest.raises(resilio.TimeoutExceeded):
        await slow()
    elapsed = time.perf_counter() - started
    assert attempts == [1, 2, 3, 4]
    assert reasons == [GiveUpReason.DEADLINE]
    assert 0.35 <= elapsed < 0.6


async def test_waits_follow_backoff_on_a_fake_clock() -> None:
    # Case R8 (async).
    clock = FakeClock()
    calls: list[int] = []

    @resilio.retry(
        on=ConnectionError, attempts=4, backoff=backoff.exponential(initial=1.0, jitter=None)
    )
    async def fail() -> None:
        calls.append(1)
        raise ConnectionError

    started = time.perf_counter()
    with use_clock(clock), pytest.raises(ConnectionError):
        await fail()
    assert time.perf_counter() - started < 0.5
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert len(calls) == 4


async def test_disabled_retries_run_once() -> None:
    # Case R9 (async).
    calls: list[int] = []

    @resilio.retry(on=ConnectionError, attempts=5, backoff=no_wait)
    async def fail() -> None:
        calls.append(1)
        raise ConnectionError("once")

    with disable_retries(), pytest.raises(ConnectionError, match="once"):
        await fail()
    assert calls == [1]


async def test_async_hooks_are_awaited() -> None:
    seen: list[tuple[str, int | None]] = []

    async def before(event: resilio.Event) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(("before", event.attempt))

    async def gave_up(event: resilio.Event) -> None:
        seen.append((str(event.reason.value if event.reason else None), event.attempt))

    @resilio.retry(
        on=ConnectionError, attempts=2, backoff=no_wait, before_sleep=before, on_give_up=gave_up
    )
    async def fail() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await fail()
    assert seen == [("before", 1), ("attempts", 2)]


async def test_result_predicate_and_last_result() -> None:
    values = iter([1, 2, 3, 4])

    @resilio.retry(on=lambda o: o.result is not None and o.result < 3, attempts=5, backoff=no_wait)
    async def count() -> int:
        return next(values)

    assert await count() == 3

    @resilio.retry(on=lambda o: True, attempts=2, backoff=no_wait)
    async def always() -> str:
        return "last"

    assert await always() == "last"


async def test_last_exception_propagates_unchanged() -> None:
    raised: list[Exception] = []

    @resilio.retry(on=ValueError, attempts=3, backoff=no_wait)
    async def fail() -> None:
        raised.append(ValueError(len(raised)))
        raise raised[-1]

    with pytest.raises(ValueError, match="2") as info:
        await fail()
    assert info.value is raised[-1]
    assert len(raised) == 3


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x * 2


async def test_async_detection_and_introspection() -> None:
    # Case R5: async function, async method, staticmethod, partial, async __call__.
    policy = resilio.retry(on=OSError)

    async def fetch(a: int, *, b: int = 2) -> int:
        """Fetch docs."""
        return a + b

    class Service:
        @policy
        async def method(self, x: int) -> int:
            return x

        @policy
        @staticmethod
        async def static(x: int) -> int:
            return -x

        @staticmethod
        @policy
        async def static_inner(x: int) -> int:
            return x + 100

    wrapped = policy(fetch)
    assert inspect.iscoroutinefunction(wrapped)
    assert wrapped.__name__ == "fetch"
    assert wrapped.__doc__ == "Fetch docs."
    assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert await wrapped(1, b=3) == 4
    assert inspect.iscoroutinefunction(Service.method)
    assert inspect.iscoroutinefunction(Service.static)
    assert inspect.iscoroutinefunction(Service.static_inner)
    assert await Service().method(5) == 5
    assert await Service.static(5) == -5
    assert await Service.static_inner(5) == 105
    partial = policy(functools.partial(fetch, 10))
    assert inspect.iscoroutinefunction(partial)
    assert await partial(b=1) == 11
    obj = policy(AsyncCallable())
    assert inspect.iscoroutinefunction(obj)
    assert await obj(4) == 8


async def test_async_generators_are_refused() -> None:
    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        resilio.retry(on=OSError)(agen)


async def test_call_async_helper() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError
        return "ok"

    policy = resilio.retry(on=ConnectionError, backoff=no_wait)
    assert await policy.call_async(flaky) == "ok"
    with pytest.raises(TypeError, match="not async"):
        await policy.call_async(lambda: 1)  # type: ignore[arg-type, return-value]


async def test_current_attempt_is_inherited_by_threads_and_tasks_an_attempt_starts() -> None:
    # Off the retry's stack, in a worker thread or a child task that copied the
    # context, the async retry's number still shows; a sync retry in the
    # thread counts its own.
    seen: list[tuple[str, int]] = []

    @resilio.retry(on=ValueError, attempts=2, backoff=no_wait)
    def sync_retried() -> None:
        seen.append(("sync retry", resilio.current_attempt()))

    def in_thread() -> None:
        seen.append(("thread", resilio.current_attempt()))
        sync_retried()
        seen.append(("thread", resilio.current_attempt()))

    async def child() -> None:
        seen.append(("task", resilio.current_attempt()))

    @resilio.retry(on=ConnectionError, attempts=2, backoff=no_wait)
    async def call() -> None:
        if not seen:
            seen.append(("call", resilio.current_attempt()))
            raise ConnectionError
        await anyio.to_thread.run_sync(in_thread)
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)

    await call()
    assert seen == [("call", 1), ("thread", 2), ("sync retry", 1), ("thread", 2), ("task", 2)]
    assert resilio.current_attempt() == 0
