"""resilio.Pipeline: ordering, reuse, validation, sync and async."""

from __future__ import annotations

import inspect

import anyio
import anyio.lowlevel
import pytest

import resilio
from resilio import backoff
from resilio.testing import FakeClock

no_wait = backoff.none()


def test_order_is_outermost_first() -> None:
    trace: list[str] = []

    class Tracing(resilio.Strategy):
        def __init__(self, name: str) -> None:
            self.name = name

        def _wrap_sync(self, fn):  # type: ignore[no-untyped-def]
            def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
                trace.append(f"enter {self.name}")
                try:
                    return fn(*args, **kwargs)
                finally:
                    trace.append(f"exit {self.name}")

            return wrapper

        def _wrap_async(self, fn):  # type: ignore[no-untyped-def]
            async def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
                trace.append(f"enter {self.name}")
                try:
                    return await fn(*args, **kwargs)
                finally:
                    trace.append(f"exit {self.name}")

            return wrapper

    policy = resilio.Pipeline(Tracing("a"), resilio.Pipeline(Tracing("b")), Tracing("c"))
    assert policy(lambda: trace.append("call"))() is None
    assert trace == ["enter a", "enter b", "enter c", "call", "exit c", "exit b", "exit a"]


def test_timeout_inside_retry_is_per_attempt(fake_clock: FakeClock) -> None:
    attempts: list[float | None] = []
    policy = resilio.Pipeline(
        resilio.retry(on=TimeoutError, attempts=3, backoff=no_wait), resilio.timeout(1.0)
    )

    @policy
    def slow() -> None:
        attempts.append(resilio.time_remaining())
        fake_clock.advance(2.0)

    with pytest.raises(resilio.TimeoutExceeded):
        slow()
    assert attempts == [1.0, 1.0, 1.0]


def test_longer_inner_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="could never fire"):
        resilio.Pipeline(resilio.timeout(2.0), resilio.retry(on=OSError), resilio.timeout(5.0))
    with pytest.raises(ValueError, match="could never fire"):
        resilio.Pipeline(resilio.timeout(2.0), resilio.Pipeline(resilio.timeout(3.0)))
    # Equal or shorter is fine.
    resilio.Pipeline(resilio.timeout(2.0), resilio.retry(on=OSError), resilio.timeout(2.0))


def test_non_strategies_are_refused() -> None:
    with pytest.raises(TypeError, match="item 1"):
        resilio.Pipeline(resilio.timeout(1.0), print)  # type: ignore[arg-type]


def test_strategies_are_reusable_across_functions_and_pipelines() -> None:
    retry = resilio.retry(on=KeyError, attempts=2, backoff=no_wait)
    counts = {"a": 0, "b": 0}

    def make(name: str):  # type: ignore[no-untyped-def]
        def fn() -> str:
            counts[name] += 1
            if counts[name] == 1:
                raise KeyError(name)
            return name

        return fn

    assert resilio.Pipeline(retry)(make("a"))() == "a"
    assert retry(make("b"))() == "b"
    assert counts == {"a": 2, "b": 2}


def test_pipeline_checks_every_strategy_against_the_target() -> None:
    async def hook(event: resilio.Event) -> None: ...

    policy = resilio.Pipeline(resilio.timeout(1.0), resilio.retry(on=OSError, on_give_up=hook))
    with pytest.raises(TypeError, match="async"):
        policy(lambda: None)


def test_empty_pipeline_is_a_no_op() -> None:
    assert resilio.Pipeline()(lambda x: x * 2)(21) == 42


@pytest.mark.anyio
async def test_async_pipeline_keeps_coroutine_function_and_works() -> None:
    calls: list[int] = []
    policy = resilio.Pipeline(
        resilio.timeout(1.0),
        resilio.retry(on=ConnectionError, backoff=no_wait),
        resilio.timeout(0.5),
    )

    @policy
    async def fetch(x: int) -> int:
        calls.append(x)
        await anyio.lowlevel.checkpoint()
        if len(calls) < 2:
            raise ConnectionError
        return x

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(7) == 7
    assert calls == [7, 7]


def test_named_pipelines_tag_their_events_and_time_their_calls(fake_clock: FakeClock) -> None:
    heard: list[resilio.Event] = []
    timed: list[resilio.Event] = []
    inner = resilio.retry(on=KeyError, attempts=2, backoff=no_wait, name="inner-retry")
    named = resilio.Pipeline(inner, name="checkout")
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        fake_clock.advance(0.25)
        if len(calls) == 1:
            raise KeyError("once")
        return "ok"

    resilio.add_listener(heard.append)
    resilio.add_listener(timed.append, timings=True)
    try:
        assert named(flaky)() == "ok"
    finally:
        resilio.remove_listener(heard.append)
        resilio.remove_listener(timed.append)
    retry_events = [e for e in heard if e.kind is resilio.EventKind.RETRY]
    assert [(e.source, e.pipeline) for e in retry_events] == [("inner-retry", "checkout")]
    pipeline_calls = [
        e for e in timed if e.kind is resilio.EventKind.CALL and e.source == "checkout"
    ]
    assert len(pipeline_calls) == 1
    assert pipeline_calls[0].duration == pytest.approx(0.5)
    assert pipeline_calls[0].pipeline == "checkout"
    assert resilio.current_attempt() == 0


def test_anonymous_pipelines_add_no_wrapper() -> None:
    retry = resilio.retry(on=KeyError)

    def fn() -> int:
        return 1

    through_pipeline = resilio.Pipeline(retry)(fn)
    direct = retry(fn)
    assert through_pipeline.__code__ is direct.__code__  # the retry's own wrapper, nothing more
    assert resilio.Pipeline(retry, name="named")(fn).__code__ is not direct.__code__
    with pytest.raises(ValueError, match="name"):
        resilio.Pipeline(retry, name="")
    with pytest.raises(TypeError, match="name"):
        resilio.Pipeline(retry, name=5)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_named_async_pipelines_tag_events() -> None:
    heard: list[resilio.Event] = []
    policy = resilio.Pipeline(
        resilio.retry(on=KeyError, attempts=2, backoff=no_wait), name="async-checkout"
    )
    calls: list[int] = []

    @policy
    async def flaky() -> str:
        calls.append(1)
        await anyio.lowlevel.checkpoint()
        if len(calls) == 1:
            raise KeyError("once")
        return "ok"

    resilio.add_listener(heard.append)
    try:
        assert await flaky() == "ok"
    finally:
        resilio.remove_listener(heard.append)
    assert {e.pipeline for e in heard} == {"async-checkout"}
