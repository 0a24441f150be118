"""Chaos strategies: fault, latency and outcome injection, seeds, switches and contexts."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import resilio
from resilio import chaos
from resilio.testing import FakeClock, capture_events


@pytest.fixture(autouse=True)
def _switch_restored() -> Iterator[None]:
    yield
    assert chaos.is_enabled(), "a test left the global chaos switch off"


def ok(*args: Any, **kwargs: Any) -> str:
    return "real"


def run_many(strategy: resilio.Strategy, calls: int = 200) -> list[str]:
    wrapped = strategy(ok)
    results = []
    for _ in range(calls):
        try:
            results.append(wrapped())
        except ConnectionError:
            results.append("fault")
    return results


# -- fault ----------------------------------------------------------------------------


def test_fault_rate_one_always_raises_and_zero_never() -> None:
    assert set(run_many(chaos.fault(injection_rate=1.0, error=ConnectionError))) == {"fault"}
    assert set(run_many(chaos.fault(injection_rate=0.0, error=ConnectionError))) == {"real"}


def test_fault_rate_is_roughly_honoured() -> None:
    results = run_many(chaos.fault(injection_rate=0.3, error=ConnectionError, seed=1), 2000)
    assert 0.25 < results.count("fault") / 2000 < 0.35


def test_same_seed_same_injections() -> None:
    first = run_many(chaos.fault(injection_rate=0.5, error=ConnectionError, seed=42))
    second = run_many(chaos.fault(injection_rate=0.5, error=ConnectionError, seed=42))
    other = run_many(chaos.fault(injection_rate=0.5, error=ConnectionError, seed=43))
    assert first == second
    assert first != other


def test_fault_error_forms() -> None:
    by_type = chaos.fault(injection_rate=1.0, error=ConnectionError, name="db-chaos")(ok)
    with pytest.raises(ConnectionError, match="injected by db-chaos"):
        by_type()

    template = OSError(5, "disk")
    by_instance = chaos.fault(injection_rate=1.0, error=template)(ok)
    with pytest.raises(OSError, match="disk") as caught:
        by_instance()
    assert caught.value is not template  # a fresh copy: tracebacks never pile up
    assert caught.value.errno == 5

    uncopyable = resilio.TimeoutExceeded("slow", timeout=2.0)
    with pytest.raises(resilio.TimeoutExceeded) as timed_out:
        chaos.fault(injection_rate=1.0, error=uncopyable)(ok)()
    assert timed_out.value.timeout == 2.0

    def per_call(context: chaos.ChaosContext) -> Exception:
        return LookupError(f"{context.name}: {context.args[0]}")

    with pytest.raises(LookupError, match=r"chaos\.fault: user-7"):
        chaos.fault(injection_rate=1.0, error=per_call)(ok)("user-7")


def test_fault_factory_must_return_an_exception() -> None:
    wrapped = chaos.fault(injection_rate=1.0, error=lambda ctx: "oops")(ok)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not an Exception"):
        wrapped()


def test_fault_emits_an_event() -> None:
    with capture_events() as events, pytest.raises(ConnectionError):
        chaos.fault(injection_rate=1.0, error=ConnectionError)(ok)()
    assert [e.kind for e in events] == [resilio.EventKind.CHAOS_FAULT]
    assert events[0].outcome is not None
    assert isinstance(events[0].outcome.exception, ConnectionError)


# -- switches and contexts -------------------------------------------------------------


def test_global_kill_switch_wins() -> None:
    faulty = chaos.fault(injection_rate=1.0, error=ConnectionError)(ok)
    with chaos.disabled():
        assert not chaos.is_enabled()
        assert faulty() == "real"
    chaos.set_enabled(False)
    try:
        assert faulty() == "real"
    finally:
        chaos.set_enabled(True)
    with pytest.raises(ConnectionError):
        faulty()
    with pytest.raises(TypeError):
        chaos.set_enabled("no")  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "on"), [("off", False), ("0", False), ("", True), ("1", True)])
def test_environment_variable_sets_the_switch(value: str, on: bool) -> None:
    code = "from resilio import chaos; print(chaos.is_enabled())"
    env = {"RESILIO_CHAOS": value, "PATH": ""}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert completed.stdout.strip() == str(on)


def test_enabled_false_or_callable_over_the_context() -> None:
    assert chaos.fault(injection_rate=1.0, error=ConnectionError, enabled=False)(ok)() == "real"
    seen: list[chaos.ChaosContext] = []

    def only_for_tests(context: chaos.ChaosContext) -> bool:
        seen.append(context)
        return context.kwargs.get("tenant") == "test"

    @chaos.fault(injection_rate=1.0, error=ConnectionError, enabled=only_for_tests, name="t")
    def call(user: str, *, tenant: str) -> str:
        return user

    assert call("a", tenant="prod") == "a"
    with pytest.raises(ConnectionError):
        call("b", tenant="test")
    assert [(c.name, c.args, dict(c.kwargs)) for c in seen] == [
        ("t", ("a",), {"tenant": "prod"}),
        ("t", ("b",), {"tenant": "test"}),
    ]


def test_rate_may_be_a_callable_and_is_clamped() -> None:
    strategy = chaos.fault(
        injection_rate=lambda ctx: 5.0 if ctx.args[0] == "always" else -1.0,
        error=ConnectionError,
    )
    wrapped = strategy(ok)
    with pytest.raises(ConnectionError):
        wrapped("always")
    assert wrapped("never") == "real"


def test_rate_is_required_and_validated() -> None:
    with pytest.raises(TypeError):
        chaos.fault(error=ConnectionError)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="between 0 and 1"):
        chaos.fault(injection_rate=1.5, error=ConnectionError)
    with pytest.raises(TypeError, match="injection_rate"):
        chaos.fault(injection_rate="half", error=ConnectionError)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="enabled"):
        chaos.fault(injection_rate=1.0, error=ConnectionError, enabled="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed"):
        chaos.fault(injection_rate=1.0, error=ConnectionError, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="never injects"):
        chaos.fault(injection_rate=1.0, error=KeyboardInterrupt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="error="):
        chaos.fault(injection_rate=1.0, error=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pass an instance"):
        chaos.fault(injection_rate=1.0, error=resilio.TimeoutExceeded)


# -- latency ----------------------------------------------------------------------------


def test_latency_sleeps_on_the_clock_then_runs(fake_clock: FakeClock) -> None:
    with capture_events() as events:
        assert chaos.latency(injection_rate=1.0, seconds=0.25)(ok)() == "real"
    assert fake_clock.sleeps == [0.25]
    assert [(e.kind, e.delay, e.outcome) for e in events] == [
        (resilio.EventKind.CHAOS_LATENCY, 0.25, None)
    ]


def test_latency_drawn_from_a_distribution_repeats_with_a_seed() -> None:
    def delays(seed: int) -> list[float]:
        clock = FakeClock()
        slow = chaos.latency(
            injection_rate=1.0, seconds=chaos.exponential(0.1), seed=seed, clock=clock
        )(ok)
        for _ in range(50):
            slow()
        return clock.sleeps

    first = delays(3)
    assert first == delays(3)
    assert first != delays(4)
    assert all(d >= 0 for d in first)
    assert 0.05 < sum(first) / len(first) < 0.2


@pytest.mark.parametrize(
    ("distribution", "low", "high"),
    [
        (chaos.uniform(0.1, 0.2), 0.1, 0.2),
        (chaos.normal(0.05, 0.1), 0.0, 1.0),
        (chaos.exponential(0.01), 0.0, 1.0),
    ],
)
def test_distributions_stay_in_range(distribution: Any, low: float, high: float) -> None:
    import random

    rng = random.Random(0)
    draws = [distribution(rng) for _ in range(500)]
    assert all(low <= d <= high for d in draws)


def test_distributions_are_validated() -> None:
    with pytest.raises(ValueError, match="above high"):
        chaos.uniform(0.2, 0.1)
    with pytest.raises(ValueError, match="mean=0"):
        chaos.exponential(0)
    with pytest.raises(ValueError, match="0 or more"):
        chaos.normal(-1.0, 0.1)
    with pytest.raises(TypeError):
        chaos.latency(injection_rate=1.0, seconds="slow")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_latency_is_cancelled_by_a_timeout() -> None:
    @resilio.timeout(0.02)
    @chaos.latency(injection_rate=1.0, seconds=10.0)
    async def call() -> str:
        return "real"

    with anyio.fail_after(5), pytest.raises(resilio.TimeoutExceeded):
        await call()


@pytest.mark.anyio
async def test_async_latency_uses_the_fake_clock(fake_clock: FakeClock) -> None:
    slow = chaos.latency(injection_rate=1.0, seconds=chaos.uniform(1.0, 2.0), seed=9)

    @slow
    async def call() -> str:
        return "real"

    assert await call() == "real"
    assert len(fake_clock.sleeps) == 1
    assert 1.0 <= fake_clock.sleeps[0] <= 2.0


# -- outcome -----------------------------------------------------------------------------


def test_outcome_returns_the_value_instead_of_calling() -> None:
    calls = 0

    @chaos.outcome(injection_rate=1.0, value=[])
    def rows() -> list[int]:
        nonlocal calls
        calls += 1
        return [1, 2]

    with capture_events() as events:
        assert rows() == []
    assert calls == 0
    assert events[0].kind is resilio.EventKind.CHAOS_OUTCOME
    assert events[0].outcome is not None
    assert events[0].outcome.result == []


def test_outcome_factory_makes_fresh_values() -> None:
    made = chaos.outcome(injection_rate=1.0, factory=lambda ctx: {"for": ctx.args})(ok)
    first, second = made(1), made(2)
    assert first == {"for": (1,)}
    assert second == {"for": (2,)}


def test_outcome_is_validated() -> None:
    with pytest.raises(TypeError, match="exactly one"):
        chaos.outcome(injection_rate=1.0)
    with pytest.raises(TypeError, match="exactly one"):
        chaos.outcome(injection_rate=1.0, value=1, factory=lambda ctx: 2)
    with pytest.raises(TypeError, match="fault"):
        chaos.outcome(injection_rate=1.0, value=ValueError())
    with pytest.raises(TypeError, match="callable"):
        chaos.outcome(injection_rate=1.0, factory=3)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_outcome_and_fault() -> None:
    @chaos.outcome(injection_rate=1.0, value=503)
    async def status() -> int:
        return 200

    @chaos.fault(injection_rate=1.0, error=ConnectionError)
    async def connect() -> int:
        return 200

    assert await status() == 503
    with pytest.raises(ConnectionError):
        await connect()


# -- composition ---------------------------------------------------------------------


def test_retry_outside_chaos_handles_injected_faults() -> None:
    policy = resilio.Pipeline(
        resilio.retry(on=ConnectionError, attempts=10, backoff=resilio.backoff.constant(0)),
        chaos.fault(injection_rate=0.5, error=ConnectionError, seed=5),
    )
    calls = 0

    @policy
    def fetch() -> str:
        nonlocal calls
        calls += 1
        return "real"

    assert [fetch() for _ in range(20)] == ["real"] * 20
    assert calls == 20


def test_strategies_keep_signatures_and_serve_threads() -> None:
    strategy = chaos.fault(injection_rate=0.5, error=ConnectionError, seed=1)

    def add(a: int, b: int = 1) -> int:
        """Add."""
        return a + b

    wrapped = strategy(add)
    assert inspect.signature(wrapped) == inspect.signature(add)
    assert wrapped.__doc__ == "Add."
    faults = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal faults
        for _ in range(200):
            try:
                assert wrapped(1) == 2
            except ConnectionError:
                with lock:
                    faults += 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert 300 < faults < 500


def test_importing_chaos_needs_no_httpx() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import resilio, resilio.chaos as c\n"
        "try:\n    c.ChaosTransport\nexcept ImportError as e:\n    print('needs', e)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'resilio[httpx]'" in completed.stdout


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        chaos.no_such_thing  # noqa: B018
