"""Backoff formulas against a reference model, and the floor/cap/overflow cases (R3, R4)."""

from __future__ import annotations

import math
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilio import backoff

seconds = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=0.999999)
attempts = st.integers(min_value=1, max_value=10**9)
jitters = st.sampled_from(["none", "full", "equal"])


def reference_base(initial: float, multiplier: float, cap: float, attempt: int) -> float:
    """Exponential base computed the slow, obvious way (with logs to avoid overflow)."""
    if initial == 0 or cap == 0:
        return 0.0
    log_value = math.log(initial) + (attempt - 1) * math.log(multiplier)
    return cap if log_value >= math.log(cap) else min(cap, math.exp(log_value))


@given(
    initial=seconds,
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    floor=seconds,
    span=seconds,
    attempt=attempts,
    jitter=jitters,
    r=unit,
)
def test_exponential_stays_within_floor_and_cap(
    initial: float,
    multiplier: float,
    floor: float,
    span: float,
    attempt: int,
    jitter: str,
    r: float,
) -> None:
    cap = floor + span
    rule = backoff.exponential(
        initial=initial,
        multiplier=multiplier,
        min=floor,
        max=cap,
        jitter=jitter,  # type: ignore[arg-type]
    )
    delay = rule.delay(attempt, None, lambda: r)
    assert floor - 1e-9 <= delay <= cap + 1e-9
    base = reference_base(initial, multiplier, cap, attempt)
    width = min(base, cap - floor)
    if jitter == "none":
        assert delay == pytest.approx(max(floor, base), rel=1e-9, abs=1e-12)
    elif jitter == "full":
        assert delay == pytest.approx(floor + r * width, rel=1e-9, abs=1e-9)
    else:
        assert delay == pytest.approx(floor + width / 2 + r * width / 2, rel=1e-9, abs=1e-9)


@given(step=seconds, initial=seconds, attempt=attempts, r=unit)
def test_linear_is_step_times_attempt(step: float, initial: float, attempt: int, r: float) -> None:
    rule = backoff.linear(step, initial=initial, max=1e12)
    assert rule.delay(attempt, None, lambda: r) == pytest.approx(
        min(1e12, initial + step * attempt), rel=1e-9
    )


def test_linear_classic_form() -> None:
    rule = backoff.linear(1.0)
    assert [rule.delay(n, None, random.random) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]


@given(
    initial=st.floats(min_value=1e-3, max_value=10),
    multiplier=st.floats(min_value=1.01, max_value=5),
    cap=st.floats(min_value=10, max_value=100),
    previous=st.none() | st.floats(min_value=0, max_value=1000),
    r=unit,
)
def test_decorrelated_bounds(
    initial: float, multiplier: float, cap: float, previous: float | None, r: float
) -> None:
    rule = backoff.decorrelated(initial=initial, multiplier=multiplier, max=cap)
    delay = rule.delay(3, previous, lambda: r)
    prev = initial if previous is None or previous < initial else previous
    assert initial - 1e-9 <= delay <= min(cap, prev * multiplier) + 1e-9


def test_decorrelated_spread_survives_at_cap() -> None:
    rule = backoff.decorrelated(initial=1.0, max=5.0)
    rng = random.Random(7)
    delays = {rule.delay(50, 5.0, rng.random) for _ in range(500)}
    assert max(delays) == 5.0
    assert min(delays) < 5.0


@pytest.mark.parametrize("jitter", ["full", "equal"])
def test_floor_never_collapses_the_spread(jitter: str) -> None:
    # Case R3: full-jitter exponential with min 5 s and max 60 s.
    rule = backoff.exponential(min=5.0, max=60.0, jitter=jitter)  # type: ignore[arg-type]
    rng = random.Random(1)
    first = [rule.delay(1, None, rng.random) for _ in range(1000)]
    assert min(first) >= 5.0
    assert len(set(first)) > 900
    at_cap = [rule.delay(500, None, rng.random) for _ in range(1000)]
    assert min(at_cap) >= 5.0
    assert max(at_cap) <= 60.0
    assert max(at_cap) - min(at_cap) > 20.0  # jitter survives at the cap


def test_floor_without_jitter_is_a_clamp() -> None:
    rule = backoff.exponential(initial=1.0, min=5.0, max=60.0, jitter="none")
    assert [rule.delay(n, None, random.random) for n in (1, 3, 4, 7, 20)] == [5, 5, 8, 60, 60]


@pytest.mark.parametrize("attempt", [1025, 2000, 10_000, 10**6, 10**18])
def test_huge_attempt_numbers_are_exact_and_constant_time(attempt: int) -> None:
    # Case R4.
    rule = backoff.exponential(initial=0.1, max=5.0, jitter="none")
    started = time.perf_counter()
    for _ in range(1000):
        assert rule.delay(attempt, None, random.random) == 5.0
    assert time.perf_counter() - started < 0.5


def test_zero_initial_stays_zero() -> None:
    rule = backoff.exponential(initial=0.0, max=5.0, jitter="full")
    assert {rule.delay(n, None, random.random) for n in (1, 2, 1025, 10**6)} == {0.0}


def test_multiplier_one_is_constant() -> None:
    rule = backoff.exponential(initial=0.5, multiplier=1.0, max=5.0, jitter="none")
    assert {rule.delay(n, None, random.random) for n in (1, 10, 10**9)} == {0.5}


def test_constant_and_none() -> None:
    assert backoff.constant(0.25).delay(99, None, random.random) == 0.25
    assert backoff.none().delay(1, None, random.random) == 0.0
    jittered = backoff.constant(1.0, jitter="full")
    assert 0.0 <= jittered.delay(1, None, lambda: 0.5) == 0.5


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: backoff.exponential(initial=-1), "initial must be 0 or more"),
        (
            lambda: backoff.exponential(multiplier=0.5),
            "multiplier must be a finite number of at least 1",
        ),
        (lambda: backoff.exponential(min=10, max=5), "must not be below min"),
        (lambda: backoff.exponential(max=math.inf), "finite"),
        (lambda: backoff.exponential(jitter="wobbly"), "jitter must be one of"),  # type: ignore[arg-type]
        (lambda: backoff.linear(-1.0), "step must be 0 or more"),
        (lambda: backoff.decorrelated(initial=0), "initial must be greater than 0"),
        (
            lambda: backoff.decorrelated(multiplier=1.0),
            "multiplier must be a finite number above 1",
        ),
        (lambda: backoff.constant(math.nan), "finite"),
    ],
)
def test_bad_configuration_is_refused_at_construction(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_non_numbers_are_type_errors() -> None:
    with pytest.raises(TypeError, match="seconds"):
        backoff.constant("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="multiplier"):
        backoff.exponential(multiplier=True)
