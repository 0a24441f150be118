"""resilio.retry on sync functions: attempts, deadlines, predicates, hooks, budgets, threads."""

from __future__ import annotations

import _thread
import asyncio
import functools
import inspect
import operator
import sys
import threading
import time
from typing import Any

import anyio
import pytest

import resilio
from resilio import GiveUpReason, backoff
from resilio.testing import FakeClock, capture_events, disable_retries, disable_waits, use_clock

no_wait = backoff.none()


class Flaky:
    """Fails `failures` times with `error`, then returns `value`; records attempt numbers."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError, value: Any = "ok"):
        self.failures = failures
        self.error = error
        self.value = value
        self.seen: list[int] = []

    def __call__(self) -> Any:
        self.seen.append(resilio.current_attempt())
        if len(self.seen) <= self.failures:
            raise self.error(f"failure {len(self.seen)}")
        return self.value


def test_attempts_counts_every_attempt() -> None:
    flaky = Flaky(failures=10)
    call = resilio.retry(on=ConnectionError, attempts=3, backoff=no_wait)(flaky)
    with pytest.raises(ConnectionError, match="failure 3"):
        call()
    assert flaky.seen == [1, 2, 3]


def test_success_after_failures_returns_the_value() -> None:
    flaky = Flaky(failures=2)
    assert resilio.retry(on=ConnectionError, attempts=3, backoff=no_wait)(flaky)() == "ok"
    assert flaky.seen == [1, 2, 3]


def test_last_exception_propagates_unchanged() -> None:
    raised: list[BaseException] = []

    @resilio.retry(on=ValueError, attempts=2, backoff=no_wait)
    def fail() -> None:
        error = ValueError(len(raised))
        raised.append(error)
        raise error

    with pytest.raises(ValueError, match="1") as info:
        fail()
    assert info.value is raised[-1]
    assert type(info.value) is ValueError
    # Later attempts do not chain onto earlier ones.
    assert info.value.__context__ is None


def test_non_matching_exception_is_not_retried() -> None:
    flaky = Flaky(failures=5, error=KeyError)
    with pytest.raises(KeyError):
        resilio.retry(on=ConnectionError, attempts=5, backoff=no_wait)(flaky)()
    assert flaky.seen == [1]


def test_tuple_of_types_and_subclasses_match() -> None:
    flaky = Flaky(failures=2, error=ConnectionResetError)
    assert resilio.retry(on=(TimeoutError, ConnectionError), backoff=no_wait)(flaky)() == "ok"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_interrupts_are_never_retried(interrupt: type[BaseException]) -> None:
    # Case R2 (sync half): even a predicate that says "retry everything".
    calls: list[int] = []
    asked: list[object] = []

    def everything(outcome: resilio.Outcome[Any]) -> bool:
        asked.append(outcome)
        return True

    @resilio.retry(on=everything, attempts=3, backoff=no_wait)
    def body() -> None:
        calls.append(1)
        raise interrupt()

    with pytest.raises(interrupt):
        body()
    assert calls == [1]
    assert asked == []
    assert resilio.current_attempt() == 0


def test_predicate_sees_results_and_can_retry_them() -> None:
    values = iter([503, 503, 200])

    def unavailable(outcome: resilio.Outcome[int]) -> bool:
        return outcome.exception is None and outcome.result == 503

    call = resilio.retry(on=unavailable, attempts=5, backoff=no_wait)(lambda: next(values))
    assert call() == 200


def test_retried_result_is_returned_when_attempts_run_out() -> None:
    # Documented: the last result is returned, not wrapped in an error.
    calls: list[int] = []

    def always_503() -> int:
        calls.append(1)
        return 503

    call = resilio.retry(on=lambda o: o.result == 503, attempts=3, backoff=no_wait)(always_503)
    assert call() == 503
    assert len(calls) == 3


def test_predicate_delay_overrides_backoff(fake_clock: FakeClock) -> None:
    flaky = Flaky(failures=2)
    call = resilio.retry(
        on=lambda o: 7.5 if o.exception else False,
        attempts=3,
        backoff=backoff.constant(1.0),
    )(flaky)
    assert call() == "ok"
    assert fake_clock.sleeps == [7.5, 7.5]


@pytest.mark.parametrize("verdict", [-1.0, float("nan"), float("inf"), 10**400])
def test_bad_predicate_delays_fall_back_to_backoff(fake_clock: FakeClock, verdict: float) -> None:
    flaky = Flaky(failures=1)
    resilio.retry(on=lambda o: verdict, attempts=2, backoff=backoff.constant(1.0))(flaky)()
    assert fake_clock.sleeps == [1.0]


def test_zero_delay_from_predicate_still_retries(fake_clock: FakeClock) -> None:
    flaky = Flaky(failures=1)
    assert resilio.retry(on=lambda o: 0, attempts=2, backoff=backoff.constant(1.0))(flaky)() == "ok"
    assert fake_clock.sleeps == []


def test_waits_follow_the_backoff_without_real_time() -> None:
    # Case R8: swap the clock globally once; waits are exactly 1, 2, 4.
    clock = FakeClock()
    flaky = Flaky(failures=10)
    call = resilio.retry(
        on=ConnectionError, attempts=4, backoff=backoff.exponential(initial=1.0, jitter=None)
    )(flaky)
    started = time.perf_counter()
    with use_clock(clock), pytest.raises(ConnectionError):
        call()
    assert time.perf_counter() - started < 0.5
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_per_policy_clock_wins_over_global() -> None:
    mine, global_clock = FakeClock(), FakeClock()
    call = resilio.retry(on=ConnectionError, attempts=3, backoff=backoff.constant(2.0), clock=mine)(
        Flaky(failures=5)
    )
    with use_clock(global_clock), pytest.raises(ConnectionError):
        call()
    assert mine.sleeps == [2.0, 2.0]
    assert global_clock.sleeps == []


def test_disable_waits_skips_sleeping_but_reports_delays() -> None:
    before: list[float | None] = []
    call = resilio.retry(
        on=ConnectionError,
        attempts=3,
        backoff=backoff.constant(30.0),
        before_sleep=lambda e: before.append(e.delay),
    )(Flaky(failures=5))
    started = time.perf_counter()
    with disable_waits(), pytest.raises(ConnectionError):
        call()
    assert time.perf_counter() - started < 1.0
    assert before == [30.0, 30.0]


def test_disabled_retries_run_once() -> None:
    # Case R9.
    ok, failing = Flaky(failures=0), Flaky(failures=5)
    policy = resilio.retry(on=ConnectionError, attempts=5, backoff=no_wait)
    reasons: list[GiveUpReason | None] = []
    with disable_retries(), capture_events() as events:
        assert policy(ok)() == "ok"
        with pytest.raises(ConnectionError, match="failure 1"):
            policy(failing)()
        reasons = [e.reason for e in events]
    assert ok.seen == [1]
    assert failing.seen == [1]
    assert reasons == [GiveUpReason.DISABLED]


def test_deadline_stops_after_the_attempt_that_passed_it(fake_clock: FakeClock) -> None:
    # Case R10: attempts=10, deadline 1 s, each attempt fails after 0.4 s.
    seen: list[int] = []
    gave_up: list[resilio.Event] = []

    @resilio.retry(
        on=TimeoutError, attempts=10, deadline=1.0, backoff=no_wait, on_give_up=gave_up.append
    )
    def slow_failure() -> None:
        seen.append(resilio.current_attempt())
        fake_clock.advance(0.4)
        raise TimeoutError(f"attempt {len(seen)}")

    with pytest.raises(TimeoutError, match="attempt 3"):
        slow_failure()
    assert seen == [1, 2, 3]
    assert [e.reason for e in gave_up] == [GiveUpReason.DEADLINE]


def test_never_starts_a_sleep_that_ends_past_the_deadline(fake_clock: FakeClock) -> None:
    call = resilio.retry(
        on=ConnectionError, attempts=10, deadline=5.0, backoff=backoff.constant(2.0)
    )(Flaky(failures=10))
    with pytest.raises(ConnectionError):
        call()
    # Sleeps at t=0 and t=2 end at 2 and 4; one at t=4 would end at 6 > 5.
    assert fake_clock.sleeps == [2.0, 2.0]


def test_sync_retry_honours_an_enclosing_timeout(fake_clock: FakeClock) -> None:
    inner = resilio.retry(on=ConnectionError, attempts=10, backoff=backoff.constant(1.0))
    policy = resilio.Pipeline(resilio.timeout(2.5), inner)
    flaky = Flaky(failures=10)
    with capture_events() as events, pytest.raises(ConnectionError):
        policy(flaky)()
    # Sleeps end at 1 s and 2 s; a third would end at 3 s, past the 2.5 s timeout.
    assert fake_clock.sleeps == [1.0, 1.0]
    assert flaky.seen == [1, 2, 3]
    assert events[-1].reason is GiveUpReason.DEADLINE


def test_hooks_receive_attempt_delay_outcome_and_reason(fake_clock: FakeClock) -> None:
    before: list[resilio.Event] = []
    gave_up: list[resilio.Event] = []
    call = resilio.retry(
        on=ConnectionError,
        attempts=3,
        backoff=backoff.constant(0.5),
        before_sleep=before.append,
        on_give_up=gave_up.append,
        name="fetch",
    )(Flaky(failures=5))
    with pytest.raises(ConnectionError):
        call()
    assert [(e.kind, e.attempt, e.delay, e.source) for e in before] == [
        (resilio.EventKind.RETRY, 1, 0.5, "fetch"),
        (resilio.EventKind.RETRY, 2, 0.5, "fetch"),
    ]
    assert all(isinstance(e.outcome.exception, ConnectionError) for e in before if e.outcome)
    assert len(gave_up) == 1
    assert gave_up[0].reason is GiveUpReason.ATTEMPTS
    assert gave_up[0].attempt == 3


def test_a_raising_hook_is_logged_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: resilio.Event) -> None:
        raise RuntimeError("hook bug")

    flaky = Flaky(failures=1)
    call = resilio.retry(on=ConnectionError, backoff=no_wait, before_sleep=broken)(flaky)
    assert call() == "ok"
    assert "hook bug" in caplog.text


def test_budget_exhaustion_is_a_distinct_outcome() -> None:
    clock = FakeClock()
    budget = resilio.RetryBudget(ratio=0.0, min_per_second=1.0, clock=clock)
    policy = resilio.retry(on=ConnectionError, attempts=5, backoff=no_wait, budget=budget)
    first, second = Flaky(failures=10), Flaky(failures=10)
    with capture_events() as events:
        with pytest.raises(ConnectionError):
            policy(first)()
        with pytest.raises(ConnectionError):
            policy(second)()
    # The reserve allows one retry per second: the first call gets it, then the budget is dry.
    assert first.seen == [1, 2]
    assert second.seen == [1]
    gave_up = [e for e in events if e.kind is resilio.EventKind.GAVE_UP]
    assert [e.reason for e in gave_up] == [GiveUpReason.BUDGET, GiveUpReason.BUDGET]
    clock.advance(1.0)
    assert budget.available == 1


def test_budget_is_earned_by_calls_and_shared() -> None:
    clock = FakeClock()
    budget = resilio.RetryBudget(ratio=0.5, min_per_second=0.0, capacity=10, clock=clock)
    a = resilio.retry(on=ConnectionError, attempts=2, backoff=no_wait, budget=budget)
    b = resilio.retry(on=ConnectionError, attempts=2, backoff=no_wait, budget=budget)
    for _ in range(3):
        a(lambda: 1)()
        b(lambda: 2)()
    assert budget.available == 3  # 6 calls x 0.5
    flaky = Flaky(failures=1)
    assert b(flaky)() == "ok"
    assert budget.available == 2  # 3 + 0.5 for this call - 1 for its retry = 2.5 whole retries: 2
    with pytest.raises(ValueError, match="ratio"):
        resilio.RetryBudget(ratio=-1)


def test_per_call_state_in_threads() -> None:
    # Case R1 with threads: each call sees its own attempt numbers.
    barrier = threading.Barrier(2)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    failures = {"a": 3, "b": 1}

    @resilio.retry(on=ConnectionError, attempts=5, backoff=backoff.constant(0.01))
    def work(name: str) -> str:
        if not seen[name]:
            barrier.wait(timeout=5)
        seen[name].append(resilio.current_attempt())
        if len(seen[name]) <= failures[name]:
            raise ConnectionError(name)
        return name

    results: list[str] = []
    threads = [threading.Thread(target=lambda n=n: results.append(work(n))) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(results) == ["a", "b"]
    assert seen == {"a": [1, 2, 3, 4], "b": [1, 2]}


def test_current_attempt_is_visible_through_other_decorators() -> None:
    # Case R6.
    def logged(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    flaky = Flaky(failures=2)
    call = logged(resilio.retry(on=ConnectionError, backoff=no_wait)(flaky))
    assert call() == "ok"
    assert flaky.seen == [1, 2, 3]
    assert resilio.current_attempt() == 0


def test_nested_retries_each_count_their_own_attempts() -> None:
    inner_seen: list[int] = []
    outer_seen: list[int] = []

    @resilio.retry(on=KeyError, attempts=2, backoff=no_wait)
    def outer() -> None:
        outer_seen.append(resilio.current_attempt())
        inner()
        outer_seen.append(resilio.current_attempt())
        raise KeyError("outer")

    @resilio.retry(on=ValueError, attempts=2, backoff=no_wait)
    def inner() -> None:
        inner_seen.append(resilio.current_attempt())
        if len(inner_seen) % 2:
            raise ValueError

    with pytest.raises(KeyError):
        outer()
    assert outer_seen == [1, 1, 2, 2]
    assert inner_seen == [1, 2, 1, 2]


def test_introspection_survives_decoration() -> None:
    # Case R5 (sync half).
    def documented(a: int, *, b: str = "x") -> str:
        """Docs."""
        return f"{a}{b}"

    wrapped = resilio.retry(on=OSError)(documented)
    assert wrapped.__name__ == "documented"
    assert wrapped.__doc__ == "Docs."
    assert wrapped.__wrapped__ is documented  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(documented)
    assert not inspect.iscoroutinefunction(wrapped)
    assert wrapped(1, b="y") == "1y"


def test_methods_staticmethods_and_classmethods() -> None:
    policy = resilio.retry(on=ConnectionError, backoff=no_wait)

    class Client:
        def __init__(self) -> None:
            self.flaky = Flaky(failures=1)

        @policy
        def get(self) -> str:
            return str(self.flaky())

        @policy
        @staticmethod
        def static() -> str:
            return "static"

        @policy
        @classmethod
        def name(cls) -> str:
            return cls.__name__

    client = Client()
    assert client.get() == "ok"
    assert Client.static() == "static"
    assert Client.name() == "Client"


def test_generators_are_refused_at_decoration_time() -> None:
    def gen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        resilio.retry(on=OSError)(gen)


def test_async_hook_on_sync_function_is_refused_at_decoration() -> None:
    # Case R7.
    async def hook(event: resilio.Event) -> None:
        pass

    policy = resilio.retry(on=OSError, before_sleep=hook)
    with pytest.raises(TypeError, match="async"):
        policy(lambda: None)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"on": OSError, "attempts": 0}, ValueError, "attempts must be at least 1"),
        ({"on": OSError, "attempts": None}, ValueError, "give attempts= or deadline="),
        ({"on": OSError, "deadline": -1}, ValueError, "deadline"),
        ({"on": OSError, "attempts": 2.5}, TypeError, "attempts must be an int"),
        ({"on": KeyboardInterrupt}, ValueError, "never retries"),
        ({"on": BaseException}, ValueError, "never retries"),
        ({"on": "OSError"}, TypeError, "exception types or a predicate"),
        ({"on": int}, TypeError, "not an exception type"),
        ({"on": (OSError, int)}, TypeError, "not an exception type"),
        ({"on": ()}, ValueError, "matches nothing"),
        ({"on": OSError, "backoff": 3}, TypeError, "resilio.backoff"),
        ({"on": OSError, "before_sleep": 3}, TypeError, "before_sleep"),
        ({"on": OSError, "budget": object()}, TypeError, "RetryBudget"),
    ],
)
def test_bad_options_fail_at_construction(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        resilio.retry(**options)


class AsyncVerdict:
    async def __call__(self, outcome: resilio.Outcome[Any]) -> bool:
        return outcome.failed


async def async_verdict(outcome: resilio.Outcome[Any]) -> bool:
    return outcome.failed


@pytest.mark.parametrize(
    "predicate", [async_verdict, AsyncVerdict(), functools.partial(async_verdict)]
)
@pytest.mark.parametrize(
    "build",
    [
        lambda on: resilio.retry(on=on),
        lambda on: resilio.CircuitBreaker(on=on),
        lambda on: resilio.CircuitBreaker(on=OSError, ignore=on),
        lambda on: resilio.fallback(value=None, on=on),
        lambda on: resilio.hedge(delay=0.1, on=on),
    ],
    ids=["retry", "breaker", "breaker-ignore", "fallback", "hedge"],
)
def test_async_predicates_are_refused(build: Any, predicate: Any) -> None:
    """Called without being awaited, an async predicate's coroutine would match everything."""
    with pytest.raises(TypeError, match="async predicate"):
        build(predicate)


def test_an_error_in_a_predicate_keeps_the_exception_it_judged() -> None:
    def judge(outcome: resilio.Outcome[Any]) -> bool:
        raise LookupError("the predicate's own bug")

    @resilio.retry(on=judge, backoff=no_wait)
    def call() -> None:
        raise ConnectionError("the call's failure")

    with pytest.raises(LookupError) as info:
        call()
    assert isinstance(info.value.__context__, ConnectionError)


def test_unknown_options_are_refused() -> None:
    with pytest.raises(TypeError):
        resilio.retry(on=OSError, tries=3)  # type: ignore[call-arg]


def test_call_helper() -> None:
    policy = resilio.retry(on=ConnectionError, backoff=no_wait)
    assert policy.call(Flaky(failures=1)) == "ok"

    async def coro() -> None: ...

    with pytest.raises(TypeError, match="call_async"):
        policy.call(coro)  # type: ignore[arg-type]


def test_rejections_are_retried_no_sooner_than_their_retry_after(fake_clock: FakeClock) -> None:
    rejections = iter([resilio.RateLimitExceeded("busy", retry_after=3.0)])

    @resilio.retry(on=resilio.RejectedError, attempts=3, backoff=backoff.constant(0.5))
    def call() -> str:
        error = next(rejections, None)
        if error is not None:
            raise error
        return "admitted"

    assert call() == "admitted"
    assert fake_clock.sleeps == [3.0]


def test_a_predicate_delay_wins_over_retry_after(fake_clock: FakeClock) -> None:
    rejections = iter([resilio.RateLimitExceeded("busy", retry_after=3.0)])

    def flaky() -> str:
        error = next(rejections, None)
        if error is not None:
            raise error
        return "admitted"

    policy = resilio.retry(
        on=lambda o: 0.25 if o.exception else False, attempts=3, backoff=backoff.constant(0.5)
    )
    assert policy(flaky)() == "admitted"
    assert fake_clock.sleeps == [0.25]


def test_a_rejection_that_never_ends_is_not_waited_for(fake_clock: FakeClock) -> None:
    calls: list[int] = []
    gave_up: list[resilio.Event] = []

    @resilio.retry(on=resilio.RejectedError, attempts=5, on_give_up=gave_up.append)
    def isolated() -> None:
        calls.append(1)
        raise resilio.CircuitOpenError(
            "isolated", retry_after=float("inf"), breaker="b", state=None
        )

    with pytest.raises(resilio.CircuitOpenError):
        isolated()
    assert calls == [1]
    assert fake_clock.sleeps == []
    assert [e.reason for e in gave_up] == [GiveUpReason.DEADLINE]


def test_current_attempt_with_a_sync_retry_around_an_event_loop() -> None:
    # The innermost retry's number, whichever kind: an async retry run by
    # asyncio.run inside a sync retry's attempt, and a sync one inside that.
    seen: list[tuple[str, int]] = []

    @resilio.retry(on=ValueError, attempts=2, backoff=no_wait)
    def innermost() -> None:
        seen.append(("innermost", resilio.current_attempt()))
        if sum(1 for name, _ in seen if name == "innermost") == 1:
            raise ValueError

    @resilio.retry(on=KeyError, attempts=2, backoff=no_wait)
    async def middle() -> None:
        seen.append(("middle", resilio.current_attempt()))
        innermost()
        seen.append(("middle", resilio.current_attempt()))
        if sum(1 for name, _ in seen if name == "middle") == 2:
            raise KeyError

    async def unretried() -> None:
        seen.append(("unretried", resilio.current_attempt()))
        await middle()

    @resilio.retry(on=ConnectionError, attempts=2, backoff=no_wait)
    def outer() -> None:
        seen.append(("outer", resilio.current_attempt()))
        if len(seen) == 1:
            raise ConnectionError
        asyncio.run(unretried())
        seen.append(("outer", resilio.current_attempt()))

    outer()
    assert seen == [
        ("outer", 1),
        ("outer", 2),
        ("unretried", 2),  # a task of asyncio.run, on the stack of the sync attempt
        ("middle", 1),
        ("innermost", 1),
        ("innermost", 2),
        ("middle", 1),
        ("middle", 2),
        ("innermost", 1),
        ("middle", 2),
        ("outer", 2),
    ]
    assert resilio.current_attempt() == 0


def test_current_attempt_in_hooks_and_predicates_and_deep_calls() -> None:
    seen: list[tuple[str, int]] = []

    def deep(depth: int) -> int:
        return resilio.current_attempt() if depth == 0 else deep(depth - 1)

    def retry_on(outcome: resilio.Outcome[Any]) -> bool:
        seen.append(("predicate", resilio.current_attempt()))
        return outcome.exception is not None

    @resilio.retry(
        on=retry_on,
        attempts=3,
        backoff=no_wait,
        before_sleep=lambda event: seen.append(("hook", resilio.current_attempt())),
    )
    def call() -> None:
        seen.append(("call", deep(200)))
        if len([name for name, _ in seen if name == "call"]) < 3:
            raise ConnectionError

    call()
    assert seen == [
        ("call", 1), ("predicate", 1), ("hook", 1),
        ("call", 2), ("predicate", 2), ("hook", 2),
        ("call", 3), ("predicate", 3),
    ]  # fmt: skip


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_tasks_of_an_async_attempt_run_inside_a_sync_attempt_see_the_async_number(
    backend: str,
) -> None:
    # The event loop runs inside the sync attempt, so a child task's stack
    # reaches the sync retry; the async attempt that started the task is the
    # innermost all the same.
    seen: list[tuple[int, int]] = []

    @resilio.retry(on=ValueError, attempts=2, backoff=no_wait)
    async def inner() -> None:
        number = resilio.current_attempt()

        async def child() -> None:
            seen.append((number, resilio.current_attempt()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
        if number < 2:
            raise ValueError

    @resilio.retry(on=KeyError, attempts=3, backoff=no_wait)
    def outer() -> None:
        if resilio.current_attempt() < 3:
            raise KeyError
        anyio.run(inner, backend=backend)

    outer()
    assert seen == [(1, 1), (2, 2)]


def test_a_thread_timeout_carries_the_attempt_number_into_its_thread() -> None:
    seen: list[int] = []

    @resilio.Pipeline(
        resilio.retry(on=ValueError, attempts=3, backoff=no_wait),
        resilio.timeout(5.0, thread=True),
    )
    def call() -> None:
        seen.append(resilio.current_attempt())
        raise ValueError("always")

    with pytest.raises(ValueError, match="always"):
        call()
    assert seen == [1, 2, 3]


def test_current_attempt_never_fails_in_a_profiler_or_without_a_caller() -> None:
    # A profile hook runs at every call, before a driver frame has set its
    # locals; a thread started from C calls current_attempt with no Python frame.
    seen: list[int] = []
    errors: list[BaseException] = []

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            try:
                seen.append(resilio.current_attempt())
            except BaseException as exc:
                errors.append(exc)

    @resilio.retry(on=ValueError, attempts=2, backoff=no_wait)
    def call() -> None:
        raise ValueError("always")

    sys.setprofile(hook)
    try:
        with pytest.raises(ValueError, match="always"):
            call()
    finally:
        sys.setprofile(None)
    assert errors == []
    assert set(seen) <= {0, 1, 2}
    assert 2 in seen

    # In a thread started from C, C calls current_attempt and then sets the
    # event: no Python frame is on that thread's stack during the call.
    results: list[object] = []
    finished = threading.Event()
    calls = map(operator.methodcaller("__call__"), [resilio.current_attempt, finished.set])
    _thread.start_new_thread(results.extend, (calls,))
    assert finished.wait(5)
    assert results == [0, None]
