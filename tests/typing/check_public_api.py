"""Checked by mypy --strict and pyright (`nox -s typecheck`): decorators keep signatures."""

from __future__ import annotations

from typing_extensions import assert_type

import resilio
from resilio import backoff
from resilio.testing import FakeClock, use_clock

policy = resilio.retry(on=ConnectionError, attempts=3, backoff=backoff.exponential(max=2.0))


@policy
def fetch(url: str, *, retries: int = 0) -> bytes:
    return url.encode()


@resilio.timeout(1.0)
async def fetch_async(url: str) -> int:
    return len(url)


pipeline = resilio.Pipeline(resilio.timeout(5.0), policy, resilio.timeout(1.0))


@pipeline
async def get_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


def predicate(outcome: resilio.Outcome[object]) -> float | bool:
    return 1.0 if outcome.exception is not None else False


on_result = resilio.retry(on=predicate, deadline=3.0)


async def main() -> None:
    assert_type(fetch("x", retries=1), bytes)
    assert_type(await fetch_async("y"), int)
    assert_type(await get_user(3), dict[str, int])
    assert_type(resilio.current_attempt(), int)
    assert_type(resilio.time_remaining(), float | None)
    with use_clock(FakeClock()):
        pass
    try:
        fetch("z")
    except resilio.RejectedError as error:
        assert_type(error.retry_after, float)
    budget = resilio.RetryBudget(ratio=0.1)
    assert_type(budget.available, int)


breaker = resilio.CircuitBreaker(name="typed", failure_threshold=3, recovery_time=5.0)


@breaker
def charge(amount: int) -> str:
    return str(amount)


@breaker
async def charge_async(amount: int) -> str:
    return str(amount)


async def use_breaker() -> None:
    assert_type(charge(3), str)
    assert_type(await charge_async(3), str)
    assert_type(breaker.state, resilio.CircuitState)
    assert_type(breaker.retry_after, float)
    with breaker:
        pass
    async with breaker:
        pass
    try:
        charge(1)
    except resilio.CircuitOpenError as error:
        assert_type(error.retry_after, float)


limiter = resilio.TokenBucket(rate=10, per=1.0, capacity=20)
both = resilio.AllOf("10/second", "1000/hour")


@limiter
def limited(user: str) -> int:
    return len(user)


@limiter.limit(key=lambda user: f"user:{user}")
async def limited_async(user: str) -> int:
    return len(user)


async def use_limiters() -> None:
    assert_type(limited("a"), int)
    assert_type(await limited_async("a"), int)
    decision = limiter.try_acquire("user:1", cost=1)
    assert_type(decision, resilio.Decision)
    assert_type(decision.allowed, bool)
    assert_type(decision.retry_after, float)
    assert_type(limiter.allow("user:1"), bool)
    assert_type(await both.acquire_async("user:1", timeout=2.0), resilio.Decision)
    try:
        limiter.acquire("user:1", timeout=0.5)
    except resilio.RateLimitExceeded as error:
        assert_type(error.retry_after, float)
