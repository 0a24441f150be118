"""Fallback: handled failures become answers; everything else, cancellation above all, passes."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import resilio
from resilio._bulkhead import Bulkhead, BulkheadFullError
from resilio._fallback import DEFAULT_ON, Fallback, fallback
from resilio.testing import capture_events

from .test_bulkhead_async import wait_until


def raiser(exc: BaseException) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


@pytest.mark.parametrize(
    "error",
    [
        resilio.CircuitOpenError("open", retry_after=1.0, breaker="b", state="open"),
        resilio.RateLimitExceeded("limited", retry_after=1.0),
        resilio.TimeoutExceeded("slow", timeout=1.0),
        BulkheadFullError("full", bulkhead="db"),
    ],
)
def test_handles_resilio_refusals_and_timeouts_by_default(error: Exception) -> None:
    with capture_events() as events:
        assert fallback(value="cached")(raiser(error))() == "cached"
    assert [e.kind for e in events] == [resilio.EventKind.FALLBACK]
    assert events[0].outcome is not None
    assert events[0].outcome.exception is error


def test_other_exceptions_pass_unchanged() -> None:
    error = ValueError("bad input")
    with pytest.raises(ValueError, match="bad input") as caught:
        fallback(value="cached")(raiser(error))()
    assert caught.value is error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(2), GeneratorExit()])
def test_never_catches_base_exceptions(error: BaseException) -> None:
    broad = fallback(value="x", on=lambda outcome: True)
    with pytest.raises(type(error)):
        broad(raiser(error))()


def test_func_gets_the_outcome_and_the_call_arguments() -> None:
    seen: list[Any] = []

    def from_cache(outcome: resilio.Outcome[Any], user: str, *, fresh: bool = False) -> str:
        seen.append((type(outcome.exception), user, fresh))
        return f"cached {user}"

    @fallback(func=from_cache)
    def profile(user: str, *, fresh: bool = False) -> str:
        raise resilio.TimeoutExceeded("slow", timeout=1.0)

    assert profile("ada", fresh=True) == "cached ada"
    assert seen == [(resilio.TimeoutExceeded, "ada", True)]


def test_user_chosen_exceptions_replace_the_default() -> None:
    guarded = fallback(value=0, on=(ConnectionError, resilio.TimeoutExceeded))
    assert guarded(raiser(ConnectionError()))() == 0
    with pytest.raises(resilio.RateLimitExceeded):
        guarded(raiser(resilio.RateLimitExceeded("no", retry_after=1.0)))()


def test_results_can_be_handled_with_a_predicate() -> None:
    def unavailable(outcome: resilio.Outcome[Any]) -> bool:
        return outcome.result == 503 or isinstance(outcome.exception, OSError)

    @fallback(value=200, on=unavailable)
    def status(code: int) -> int:
        return code

    assert status(503) == 200
    assert status(404) == 404


def test_a_failing_fallback_raises_its_own_error() -> None:
    def broken(outcome: resilio.Outcome[Any]) -> str:
        raise LookupError("cache miss")

    with pytest.raises(LookupError, match="cache miss"):
        fallback(func=broken)(raiser(resilio.TimeoutExceeded("x", timeout=1.0)))()


def test_sits_outermost_in_a_pipeline() -> None:
    breaker = resilio.CircuitBreaker(failure_threshold=1, recovery_time=60.0)
    policy = resilio.Pipeline(fallback(value="degraded"), breaker)
    calls = 0

    @policy
    def fetch() -> str:
        nonlocal calls
        calls += 1
        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        fetch()  # trips the breaker; OSError itself is not handled
    assert fetch() == "degraded"  # the open breaker's rejection is
    assert calls == 1


def test_keeps_the_signature() -> None:
    def add(a: int, b: int = 1) -> int:
        """Add."""
        return a + b

    wrapped = fallback(value=0)(add)
    assert inspect.signature(wrapped) == inspect.signature(add)
    assert wrapped.__doc__ == "Add."
    assert wrapped(2) == 3


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, TypeError),
        ({"value": 1, "func": lambda o: 2}, TypeError),
        ({"func": 3}, TypeError),
        ({"value": 1, "on": KeyboardInterrupt}, ValueError),
        ({"value": 1, "on": 5}, TypeError),
    ],
)
def test_rejects_bad_configuration(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Fallback(**options)


def test_async_func_cannot_serve_a_sync_function() -> None:
    async def later(outcome: resilio.Outcome[Any]) -> int:
        return 1

    with pytest.raises(TypeError, match="async"):
        fallback(func=later)(lambda: 0)


def test_the_default_is_resilio_refusals_and_timeouts() -> None:
    assert (resilio.RejectedError, resilio.TimeoutExceeded) == DEFAULT_ON


# -- async ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_timeout_falls_back() -> None:
    @fallback(value="stale")
    @resilio.timeout(0.01)
    async def slow() -> str:
        await anyio.sleep(1)
        return "fresh"

    assert await slow() == "stale"


@pytest.mark.anyio
async def test_async_func_is_awaited_and_sync_func_works_too() -> None:
    async def async_cache(outcome: resilio.Outcome[Any], key: str) -> str:
        await anyio.lowlevel.checkpoint()
        return f"async {key}"

    def sync_cache(outcome: resilio.Outcome[Any], key: str) -> str:
        return f"sync {key}"

    async def limited(key: str) -> str:
        raise resilio.RateLimitExceeded("no", retry_after=1.0)

    assert await fallback(func=async_cache)(limited)("k") == "async k"
    assert await fallback(func=sync_cache)(limited)("k") == "sync k"


@pytest.mark.anyio
async def test_cancellation_is_never_handled() -> None:
    ran = False

    @fallback(value="x", on=lambda outcome: True)
    async def forever() -> str:
        await anyio.sleep_forever()
        return "never"

    with anyio.move_on_after(0.01) as scope:
        await forever()
        ran = True
    assert scope.cancelled_caught
    assert not ran


@pytest.mark.anyio
async def test_a_full_bulkhead_falls_back() -> None:
    bulkhead = Bulkhead(max_concurrent=1)
    release = anyio.Event()

    @fallback(value="busy")
    @bulkhead
    async def work() -> str:
        await release.wait()
        return "done"

    results: list[str] = []

    async def run() -> None:
        results.append(await work())

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await wait_until(lambda: bulkhead.in_use == 1)
        assert await work() == "busy"
        release.set()
    assert results == ["done"]


def test_a_full_bulkhead_falls_back_in_threads() -> None:
    bulkhead = Bulkhead(max_concurrent=1)
    bulkhead._enter(lambda: pytest.fail("the bulkhead is free"))  # type: ignore[arg-type, return-value]

    @fallback(value="busy")
    @bulkhead
    def work() -> str:
        return "done"

    assert work() == "busy"


def test_serves_many_threads_with_per_call_arguments() -> None:
    @fallback(func=lambda outcome, n: -n)
    def maybe(n: int) -> int:
        if n % 2:
            raise resilio.RateLimitExceeded("odd", retry_after=0.0)
        return n

    results: dict[int, int] = {}

    def worker(start: int) -> None:
        for n in range(start, start + 100):
            results[n] = maybe(n)

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {n: (-n if n % 2 else n) for n in range(400)}
