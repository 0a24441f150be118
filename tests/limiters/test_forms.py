"""The decorator, `with`, Pipeline and limit-string forms, and construction errors."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import resilio
from resilio import (
    AllOf,
    FixedWindow,
    LeakyBucket,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)
from resilio._core.limiters import Decision, parse_limit
from resilio._errors import RateLimitExceeded
from resilio._pipeline import Pipeline
from resilio.stores import MemoryStore
from resilio.testing import FakeClock


def test_decorator_keys_and_costs_come_from_the_arguments() -> None:
    limiter = FixedWindow(limit=3, window=60.0, clock=FakeClock())

    @limiter.limit(key=lambda user_id, **_: f"user:{user_id}", cost=lambda _, size=1: size)
    def upload(user_id: int, size: int = 1) -> str:
        """Upload something."""
        return f"{user_id}:{size}"

    assert upload.__name__ == "upload"
    assert upload.__doc__ == "Upload something."
    assert inspect.signature(upload) == inspect.signature(upload.__wrapped__)  # type: ignore[attr-defined]
    assert list(inspect.signature(upload).parameters) == ["user_id", "size"]
    assert upload(1, size=2) == "1:2"
    assert upload(1) == "1:1"
    with pytest.raises(RateLimitExceeded) as caught:
        upload(1)
    assert caught.value.retry_after > 0
    assert upload(2, size=3) == "2:3"  # another key
    assert limiter.peek("user:1").remaining == 0


@pytest.mark.anyio
async def test_async_decorator_waits_when_given_a_timeout() -> None:
    clock = FakeClock()
    limiter = TokenBucket(rate=1, capacity=1, clock=clock)

    @limiter.limit(key="shared", timeout=2.0)
    async def call(x: int) -> int:
        return x * 2

    assert inspect.iscoroutinefunction(call)
    assert await call(1) == 2
    assert await call(2) == 4
    assert clock.sleeps == [1.0]
    with pytest.raises(RateLimitExceeded):
        await limiter.limit(key="shared", timeout=0.5)(call)(3)


@pytest.mark.anyio
async def test_limit_timeout_none_waits_as_long_as_it_takes() -> None:
    # None is a timeout of its own here, not "the limiter's default" (which is 0).
    clock = FakeClock()
    limiter = TokenBucket(rate=1, per=10.0, capacity=1, clock=clock)
    waiting = limiter.limit(key="k", timeout=None)

    @waiting
    def call() -> str:
        return "done"

    assert [call(), call()] == ["done", "done"]
    with waiting:
        pass
    async with waiting:
        pass
    assert clock.sleeps == [10.0, 10.0, 10.0]
    with pytest.raises(RateLimitExceeded), limiter.limit(key="k"):  # the limiter's timeout: 0
        pass


def test_keys_must_be_strings() -> None:
    limiter = TokenBucket(rate=10, clock=FakeClock())
    for call in (limiter.allow, limiter.try_acquire, limiter.peek, limiter.acquire):
        with pytest.raises(TypeError, match="key must be a string, got 1"):
            call(1)  # type: ignore[operator]

    class Name(str):
        pass

    assert limiter.allow(Name("user:1"))
    assert limiter.peek("user:1").remaining == 8

    @limiter.limit(key=lambda user: None)
    def by_user(user: str) -> None:
        return None

    with pytest.raises(TypeError, match="got None"):
        by_user("u")


def test_unknown_keywords_name_the_method() -> None:
    limiter = TokenBucket(rate=10)
    for _ in range(2):  # before the first decision, and after (one-frame decisions built)
        with pytest.raises(TypeError, match=r"RateLimiter\.try_acquire\(\) got an unexpected"):
            limiter.try_acquire("k", bogus=1)  # type: ignore[call-arg]
        assert limiter.allow.__doc__ == resilio.RateLimiter.allow.__doc__
        limiter.try_acquire("k")


def test_limiter_itself_is_a_decorator_and_a_pipeline_strategy() -> None:
    limiter = SlidingWindowLog(limit=2, window=1.0, clock=FakeClock())

    @limiter
    def ping() -> str:
        return "pong"

    assert ping() == "pong"
    assert ping() == "pong"
    with pytest.raises(RateLimitExceeded):
        ping()

    other = FixedWindow(limit=1, window=1.0, clock=FakeClock())
    calls: list[int] = []
    policy = Pipeline(other, other.limit(key="inner"))

    def record() -> None:
        calls.append(1)

    wrapped = policy(record)
    wrapped()
    with pytest.raises(RateLimitExceeded):
        wrapped()
    assert calls == [1]


def test_with_blocks() -> None:
    clock = FakeClock()
    limiter = TokenBucket(rate=1, capacity=2, clock=clock, timeout=None)
    with limiter as first:
        assert isinstance(first, Decision)
        assert first.allowed
    with limiter.limit(key="k", cost=2):
        pass
    with limiter:
        pass
    with limiter:  # waits: the limiter's timeout is None
        pass
    assert clock.sleeps == [1.0]
    with pytest.raises(RateLimitExceeded), limiter.limit(key="k", cost=2, timeout=0):
        pass
    with pytest.raises(TypeError, match="plain key"), limiter.limit(key=lambda: "x"):
        pass


@pytest.mark.anyio
async def test_async_with_blocks() -> None:
    limiter = LeakyBucket(rate=1, clock=FakeClock())
    async with limiter as decision:
        assert decision.allowed
    with pytest.raises(RateLimitExceeded):
        async with limiter:
            pass
    async with limiter.limit(key="other"):
        pass


def test_generators_are_refused() -> None:
    limiter = TokenBucket(rate=1)

    def numbers() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        limiter(numbers)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/second", (10, 1.0)),
        ("1000/hour", (1000, 3600.0)),
        ("5 per minute", (5, 60.0)),
        ("20/5s", (20, 5.0)),
        ("3/2 minutes", (3, 120.0)),
        ("100/day", (100, 86400.0)),
        ("7/250ms", (7, 0.25)),
        (" 1 / Seconds ", (1, 1.0)),
    ],
)
def test_parse_limit(text: str, expected: tuple[int, float]) -> None:
    assert parse_limit(text) == expected


@pytest.mark.parametrize("text", ["", "ten/second", "10/fortnight", "10", "0/second", "10/0s"])
def test_parse_limit_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="limit"):
        parse_limit(text)


def test_limit_strings_in_constructors() -> None:
    clock = FakeClock()
    bucket = TokenBucket("10/second", capacity=2, clock=clock)
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    assert bucket.peek().retry_after == pytest.approx(0.1)
    window = FixedWindow("3/minute", clock=clock)
    assert window.max_cost == 3
    assert SlidingWindow("100/hour").max_cost == 100
    assert LeakyBucket("4/s").max_cost == 4
    assert AllOf("10/second", "1000/hour", algorithm=FixedWindow).max_cost == 10


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: TokenBucket(rate=0), ValueError, "rate must be a positive"),
        (lambda: TokenBucket(rate=-1), ValueError, "rate must be a positive"),
        (lambda: TokenBucket(rate=float("inf")), ValueError, "finite"),
        (lambda: TokenBucket(rate=1, per=0), ValueError, "per must be a positive"),
        (lambda: TokenBucket(rate=1, capacity=0), ValueError, "capacity must be a positive"),
        # Spans of 2**52 µs or more, added to the server's clock, pass 2**53 on Redis.
        (lambda: TokenBucket(rate=1, per=3e7, capacity=10**6), ValueError, "2\\*\\*52"),
        (lambda: SlidingWindow(limit=1, window=4.6e9), ValueError, "shorter window"),
        (lambda: LeakyBucket(rate=1, per=3e7, capacity=10**6), ValueError, "refill or drain"),
        (lambda: FixedWindow(limit=1, window=1e10), ValueError, "shorter window"),
        (lambda: SlidingWindowLog(limit=1, window=1e10), ValueError, "shorter window"),
        (lambda: TokenBucket(rate=1, capacity=1.5), TypeError, "capacity must be an integer"),  # type: ignore[arg-type]
        (lambda: TokenBucket(), TypeError, "rate= and per= are required"),
        (lambda: TokenBucket("10/s", rate=3), TypeError, "either a limit string"),
        (lambda: TokenBucket("10/second", per=60.0), TypeError, "or per=, not both"),
        (lambda: LeakyBucket("5/second", per=2.0), TypeError, "or per=, not both"),
        (lambda: FixedWindow("5/minute", window=10.0), TypeError, "or window=, not both"),
        (lambda: SlidingWindow("5/minute", window=10.0), TypeError, "or window=, not both"),
        (lambda: SlidingWindowLog("5/minute", window=10.0), TypeError, "or window=, not both"),
        (lambda: TokenBucket(rate=1, burst=3), TypeError, "burst"),  # type: ignore[call-arg]
        (lambda: LeakyBucket(rate=1, per=-2.0), ValueError, "per must be a positive"),
        (lambda: FixedWindow(limit=0, window=1.0), ValueError, "limit must be a positive"),
        (lambda: FixedWindow(limit=5), TypeError, "window= are required"),
        (lambda: SlidingWindow(limit=5, window=0), ValueError, "window must be a positive"),
        (lambda: SlidingWindow(limit=5, window=1e-9), ValueError, "one microsecond"),
        (lambda: SlidingWindowLog(limit=True, window=1.0), TypeError, "limit must be an integer"),
        (lambda: SlidingWindowLog("5/fortnight"), ValueError, "cannot parse"),
        (lambda: FixedWindow(limit=1, window=1.0, timeout=-1), ValueError, "timeout"),
        (lambda: FixedWindow(limit=1, window=1.0, store=object()), TypeError, "store="),  # type: ignore[arg-type]
        (lambda: FixedWindow(limit=1, window=1.0, clock=object()), TypeError, "clock="),  # type: ignore[arg-type]
        (lambda: FixedWindow(limit=1, window=1.0, name=""), ValueError, "name"),
        (lambda: FixedWindow(limit=1, window=1.0, listeners=[3]), TypeError, "listeners"),  # type: ignore[list-item]
        (lambda: FixedWindow(limit=1, window=1.0).limit(cost=2), ValueError, "capacity"),
        (lambda: FixedWindow(limit=1, window=1.0).limit(key=3), TypeError, "key must be"),  # type: ignore[arg-type]
        (lambda: MemoryStore(sweep_every=0), ValueError, "sweep_every"),
        (lambda: FixedWindow(limit=2**53, window=1.0), ValueError, "2\\*\\*53 or more"),
        (lambda: AllOf("10/second", algorithm=int), TypeError, "algorithm= takes"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration_fails_at_once(build: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_names_and_repr() -> None:
    bucket = TokenBucket(rate=10, per=1.0, capacity=20)
    assert bucket.name == "gcra:100000:20"
    assert repr(bucket) == "<TokenBucket 'gcra:100000:20'>"
    assert TokenBucket(rate=10, name="api").name == "api"
    assert isinstance(bucket.store, MemoryStore)
    assert repr(Decision(True, 1, 0.0, 0.5, 2)) == (
        "Decision(allowed=True, remaining=1, retry_after=0.0, reset_after=0.5, limit=2)"
    )


def test_decisions_are_immutable_values() -> None:
    decision = Decision(False, 0, 0.5, 1.0, 3)
    assert not decision
    assert (decision.allowed, decision.remaining, decision.limit) == (False, 0, 3)
    assert (decision.retry_after, decision.reset_after) == (0.5, 1.0)
    with pytest.raises(AttributeError):
        decision.allowed = True  # type: ignore[misc]
    assert decision == Decision(False, 0, 0.5, 1.0, 3)
    assert hash(decision) == hash(Decision(False, 0, 0.5, 1.0, 3))


def test_allof_keeps_the_store_clock_and_listeners_of_its_parts() -> None:
    store = MemoryStore()
    clock = FakeClock()
    heard: list[resilio.Event] = []
    burst = resilio.TokenBucket(rate=10, capacity=10, name="burst", store=store, clock=clock)
    hourly = resilio.FixedWindow(
        limit=1000, window=3600.0, name="hourly", store=store, listeners=[heard.append]
    )
    # Two combinators over the same parts, as two processes would build them.
    first, second = resilio.AllOf(burst, hourly), resilio.AllOf(burst, hourly)
    assert first.store is store
    admitted = sum(first.allow("u") for _ in range(10)) + sum(second.allow("u") for _ in range(10))
    assert admitted == 10  # one shared budget, not one per combinator
    assert heard  # the part's listener hears the combined decisions
    assert first._clock is clock


def test_allof_refuses_parts_in_different_stores_or_clocks() -> None:
    a = resilio.TokenBucket(rate=10, capacity=10, name="a", store=MemoryStore())
    b = resilio.FixedWindow(limit=100, window=60.0, name="b", store=MemoryStore())
    with pytest.raises(ValueError, match="one store"):
        resilio.AllOf(a, b)
    with pytest.raises(ValueError, match="one store"):
        resilio.AllOf(a, "5/second", store=MemoryStore())
    c = resilio.TokenBucket(rate=10, capacity=10, name="c", clock=FakeClock())
    d = resilio.FixedWindow(limit=100, window=60.0, name="d", clock=FakeClock())
    with pytest.raises(ValueError, match="one clock"):
        resilio.AllOf(c, d)


@pytest.mark.parametrize("cls", [resilio.TokenBucket, resilio.LeakyBucket])
def test_rates_finer_than_a_microsecond_are_refused(cls: type[resilio.RateLimiter]) -> None:
    with pytest.raises(ValueError, match="one admission per microsecond"):
        cls(rate=2_000_000, per=1.0)  # type: ignore[call-arg]
    cls(rate=1_000_000, per=1.0)  # type: ignore[call-arg]  # exactly one per microsecond


def test_nan_timeouts_are_refused() -> None:
    limiter = resilio.TokenBucket(rate=1, per=5.0, capacity=1)
    with pytest.raises(ValueError, match="timeout"):
        limiter.acquire("k", timeout=float("nan"))
    with pytest.raises(ValueError, match="timeout"):
        resilio.TokenBucket(rate=1, timeout=float("nan"))
