"""Clock-skew chaos through resilio.testing: offsets, drift, partial skew and switches."""

from __future__ import annotations

import pytest

import resilio
from resilio import chaos
from resilio._clock import runtime
from resilio.testing import FakeClock, SkewedClock, skew_clock, use_clock


def test_offset_and_drift() -> None:
    base = FakeClock(start=100.0)
    clock = SkewedClock(base, offset=5.0, drift=0.5)
    assert clock.now() == 105.0
    base.advance(10.0)
    assert clock.now() == 120.0  # 110 + 5 + 0.5 * 10


def test_sleeps_go_to_the_base_clock() -> None:
    base = FakeClock()
    clock = SkewedClock(base, offset=-3.0)
    clock.sleep(1.5)
    assert base.sleeps == [1.5]
    assert clock.now() == -1.5


@pytest.mark.anyio
async def test_async_sleeps_go_to_the_base_clock() -> None:
    base = FakeClock()
    await SkewedClock(base, offset=1.0).sleep_async(2.0)
    assert base.sleeps == [2.0]


def test_partial_skew_jumps_and_repeats_with_a_seed() -> None:
    def readings(seed: int) -> list[float]:
        clock = SkewedClock(FakeClock(), offset=10.0, injection_rate=0.5, seed=seed)
        return [clock.now() for _ in range(40)]

    first = readings(1)
    assert set(first) == {0.0, 10.0}
    assert first == readings(1)
    assert first != readings(2)


def test_switches_turn_the_skew_off() -> None:
    base = FakeClock()
    assert SkewedClock(base, offset=10.0, enabled=False).now() == 0.0
    assert SkewedClock(base, offset=10.0, enabled=lambda ctx: ctx.name == "clock_skew").now() == 10
    with chaos.disabled():
        assert SkewedClock(base, offset=10.0).now() == 0.0


def test_skew_clock_installs_and_restores() -> None:
    base = FakeClock(start=50.0)
    with use_clock(base):
        with skew_clock(offset=7.0) as skewed:
            assert runtime.clock is skewed
            assert skewed.base is base
            assert resilio.time_remaining() is None
            assert runtime.clock.now() == 57.0
        assert runtime.clock is base


def test_a_clock_jumping_forward_ends_a_breaker_open_period_early() -> None:
    with use_clock(FakeClock()), skew_clock() as skewed:
        breaker = resilio.CircuitBreaker(failure_threshold=1, recovery_time=30.0)
        with pytest.raises(OSError, match="down"), breaker:
            raise OSError("down")
        assert breaker.state is resilio.CircuitState.OPEN
        skewed.offset = 31.0
        assert breaker.state is resilio.CircuitState.HALF_OPEN


def test_a_clock_jumping_back_keeps_a_breaker_open() -> None:
    with use_clock(FakeClock()), skew_clock() as skewed:
        breaker = resilio.CircuitBreaker(failure_threshold=1, recovery_time=30.0)
        with pytest.raises(OSError, match="down"), breaker:
            raise OSError("down")
        skewed.offset = -120.0
        assert breaker.state is resilio.CircuitState.OPEN
        assert breaker.retry_after >= 30.0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"offset": float("nan")}, ValueError),
        ({"offset": "1"}, TypeError),
        ({"drift": -1.0}, ValueError),
        ({"injection_rate": 2.0}, ValueError),
        ({"base": object()}, TypeError),
        ({"seed": "x"}, TypeError),
    ],
)
def test_rejects_bad_configuration(options: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        SkewedClock(**options)  # type: ignore[arg-type]
