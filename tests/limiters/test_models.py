"""Hypothesis: every algorithm against a small, obviously correct reference model.

The models keep the plain textbook state (token counts as fractions, a count
per window, a list of admissions) and answer only "does ``cost`` fit at time
t?" and "is the key back to its initial state at time t?". Each `Decision` is
checked against those answers: ``allowed`` directly, ``remaining`` by
counting unit requests that still fit, and ``retry_after``/``reset_after`` by
asking the model one microsecond before and exactly at the announced time.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from fractions import Fraction
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilio import (
    AllOf,
    FixedWindow,
    LeakyBucket,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)
from resilio._errors import RateLimitExceeded

from .conftest import STORES

US = 1_000_000


class MicroClock:
    """A clock counting whole microseconds, so times convert back exactly."""

    def __init__(self, start_us: int) -> None:
        self.us = start_us

    def now(self) -> float:
        return self.us / US

    def sleep(self, seconds: float) -> None:
        self.us += round(seconds * US)

    async def sleep_async(self, seconds: float) -> None:
        self.sleep(seconds)


class Model:
    def fits(self, t: int, cost: int) -> bool:
        raise NotImplementedError

    def commit(self, t: int, cost: int) -> None:
        raise NotImplementedError

    def initial(self, t: int) -> bool:
        raise NotImplementedError


class TokenModel(Model):
    def __init__(self, interval: int, capacity: int) -> None:
        self.interval, self.capacity = interval, capacity
        self.tokens, self.last = Fraction(capacity), 0

    def level(self, t: int) -> Fraction:
        return min(Fraction(self.capacity), self.tokens + Fraction(t - self.last, self.interval))

    def fits(self, t: int, cost: int) -> bool:
        return self.level(t) >= cost

    def commit(self, t: int, cost: int) -> None:
        self.tokens, self.last = self.level(t) - cost, t

    def initial(self, t: int) -> bool:
        return self.level(t) == self.capacity


class LeakyModel(Model):
    def __init__(self, interval: int) -> None:
        self.interval, self.busy_until = interval, 0

    def fits(self, t: int, cost: int) -> bool:
        return t >= self.busy_until

    def commit(self, t: int, cost: int) -> None:
        self.busy_until = t + cost * self.interval

    def initial(self, t: int) -> bool:
        return t >= self.busy_until


class FixedModel(Model):
    def __init__(self, limit: int, window: int) -> None:
        self.limit, self.window = limit, window
        self.counts: dict[int, int] = defaultdict(int)

    def fits(self, t: int, cost: int) -> bool:
        return self.counts[t // self.window] + cost <= self.limit

    def commit(self, t: int, cost: int) -> None:
        self.counts[t // self.window] += cost

    def initial(self, t: int) -> bool:
        return self.counts[t // self.window] == 0


class CounterModel(FixedModel):
    def estimate(self, t: int) -> Fraction:
        index, elapsed = divmod(t, self.window)
        weight = Fraction(self.window - elapsed, self.window)
        return self.counts[index - 1] * weight + self.counts[index]

    def fits(self, t: int, cost: int) -> bool:
        return self.estimate(t) + cost <= self.limit

    def initial(self, t: int) -> bool:
        return self.estimate(t) == 0


class LogModel(Model):
    def __init__(self, limit: int, window: int) -> None:
        self.limit, self.window = limit, window
        self.log: list[tuple[int, int]] = []

    def used(self, t: int) -> int:
        return sum(cost for stamp, cost in self.log if stamp <= t < stamp + self.window)

    def fits(self, t: int, cost: int) -> bool:
        return self.used(t) + cost <= self.limit

    def commit(self, t: int, cost: int) -> None:
        self.log.append((t, cost))

    def initial(self, t: int) -> bool:
        return self.used(t) == 0


class BothModel(Model):
    def __init__(self, *parts: Model) -> None:
        self.parts = parts

    def fits(self, t: int, cost: int) -> bool:
        return all(part.fits(t, cost) for part in self.parts)

    def commit(self, t: int, cost: int) -> None:
        for part in self.parts:
            part.commit(t, cost)

    def initial(self, t: int) -> bool:
        return all(part.initial(t) for part in self.parts)


def units_fitting(model: Model, t: int) -> int:
    probe = copy.deepcopy(model)
    count = 0
    while probe.fits(t, 1):
        probe.commit(t, 1)
        count += 1
    return count


@st.composite
def limiter_and_model(draw: st.DrawFn) -> tuple[Any, Any, int]:
    """Return (limiter factory, model factory, max cost)."""
    kind = draw(st.sampled_from(["token", "leaky", "fixed", "counter", "log", "all_of"]))
    if kind in ("token", "leaky"):
        rate = draw(st.integers(1, 20))
        per_us = draw(st.integers(1, 200)) * 1000
        capacity = draw(st.integers(1, 8))
        interval = math.ceil(per_us / rate)
        cls: type[TokenBucket | LeakyBucket] = TokenBucket if kind == "token" else LeakyBucket

        def build(**kw: Any) -> Any:
            return cls(rate=rate, per=per_us / US, capacity=capacity, **kw)

        def model() -> Model:
            return TokenModel(interval, capacity) if kind == "token" else LeakyModel(interval)

        return build, model, capacity
    limit = draw(st.integers(1, 8))
    window = draw(st.integers(1, 100)) * 1000
    if kind == "all_of":
        rate = draw(st.integers(1, 10))
        capacity = draw(st.integers(1, 8))

        def build_all(**kw: Any) -> Any:
            return AllOf(
                TokenBucket(rate=rate, per=window / US, capacity=capacity),
                SlidingWindowLog(limit=limit, window=2 * window / US),
                **kw,
            )

        def model_all() -> Model:
            return BothModel(
                TokenModel(math.ceil(window / rate), capacity), LogModel(limit, 2 * window)
            )

        return build_all, model_all, min(limit, capacity)
    window_cls, model_cls = {
        "fixed": (FixedWindow, FixedModel),
        "counter": (SlidingWindow, CounterModel),
        "log": (SlidingWindowLog, LogModel),
    }[kind]

    def build_window(**kw: Any) -> Any:
        return window_cls(limit=limit, window=window / US, **kw)

    return build_window, lambda: model_cls(limit, window), limit


steps = st.lists(
    st.tuples(
        st.integers(0, 60_000),  # µs to advance before the request
        st.sampled_from(["a", "b", "c"]),
        st.floats(0, 1),  # cost, as a fraction of the largest allowed
    ),
    min_size=1,
    max_size=60,
)


def check_sequence(setup: Any, ops: list[Any], store_name: str, flavour: str) -> None:
    build, new_model, max_cost = setup
    clock = MicroClock(1_000_000_000)
    limiter = build(store=STORES[store_name](), clock=clock)
    models: dict[str, Model] = defaultdict(new_model)

    async def run() -> None:
        for advance, key, fraction in ops:
            clock.us += advance
            now = clock.us
            cost = max(1, math.ceil(fraction * max_cost))
            model = models[key]
            if flavour == "allow":  # the boolean fast path decides as try_acquire does
                allowed = limiter.allow(key, cost)
                assert allowed == model.fits(now, cost), (now, key, cost)
                if allowed:
                    model.commit(now, cost)
                continue
            if flavour == "sync":
                decision = limiter.try_acquire(key, cost)
            else:
                decision = await limiter.try_acquire_async(key, cost)
            assert decision.allowed == model.fits(now, cost), (now, key, cost, decision)
            if decision.allowed:
                model.commit(now, cost)
                assert decision.retry_after == 0
            else:
                retry = round(decision.retry_after * US)
                assert retry > 0
                assert model.fits(now + retry, cost), decision
                assert not model.fits(now + retry - 1, cost), decision
            assert decision.remaining == units_fitting(model, now), decision
            reset = round(decision.reset_after * US)
            assert model.initial(now + reset), decision
            assert reset == 0 or not model.initial(now + reset - 1), decision

    anyio.run(run)


@pytest.mark.parametrize("store_name", sorted(STORES))
@pytest.mark.parametrize("flavour", ["sync", "async", "allow"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=limiter_and_model(), ops=steps)
def test_algorithms_match_their_models(
    setup: Any, ops: list[Any], store_name: str, flavour: str
) -> None:
    check_sequence(setup, ops, store_name, flavour)


def earliest_fit(model: Model, now: int, cost: int) -> int:
    """The first µs at or after ``now`` when ``cost`` fits (availability only grows)."""
    low, high = now, now + 10**9
    while low < high:
        middle = (low + high) // 2
        if model.fits(middle, cost):
            high = middle
        else:
            low = middle + 1
    return low


waits = st.lists(
    st.tuples(
        st.integers(0, 60_000),  # µs to advance before the request
        st.sampled_from(["a", "b"]),
        st.floats(0, 1),  # cost, as a fraction of the largest allowed
        st.integers(0, 150_000),  # timeout in µs
    ),
    min_size=1,
    max_size=30,
)


@pytest.mark.parametrize("store_name", sorted(STORES))
@pytest.mark.parametrize("flavour", ["sync", "async"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=limiter_and_model(), ops=waits)
def test_acquire_waits_exactly_until_the_model_admits(
    setup: Any, ops: list[Any], store_name: str, flavour: str
) -> None:
    build, new_model, max_cost = setup
    clock = MicroClock(1_000_000_000)
    limiter = build(store=STORES[store_name](), clock=clock)
    models: dict[str, Model] = defaultdict(new_model)

    async def run() -> None:
        for advance, key, fraction, timeout_us in ops:
            clock.us += advance
            now = clock.us
            cost = max(1, math.ceil(fraction * max_cost))
            model = models[key]
            due = earliest_fit(model, now, cost)
            outcome: Any
            try:
                if flavour == "sync":
                    outcome = limiter.acquire(key, cost, timeout_us / US)
                else:
                    outcome = await limiter.acquire_async(key, cost, timeout_us / US)
            except RateLimitExceeded as exc:
                outcome = exc
            if isinstance(outcome, RateLimitExceeded):
                assert due - now > timeout_us
                assert round(outcome.retry_after * US) == due - now
                assert clock.us == now  # failed at once, without sleeping
                continue
            assert outcome.allowed
            assert clock.us == due
            model.commit(due, cost)

    anyio.run(run)
