"""A hypothesis state machine: CircuitBreaker against a small, naive reference model.

The model keeps whole histories in lists and recomputes everything from them
(windows, grown durations, slow calls), so it shares no data structure with
the real breaker, only the documented rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from resilio import CircuitBreaker, CircuitOpenError, CircuitState
from resilio._core import breaker as core
from resilio.testing import FakeClock

from .callers import Caller

BUCKETS = 10


class Boom(Exception):
    """A counted failure."""


@dataclass
class Call:
    """A call the model admitted."""

    generation: int
    start: float


@dataclass
class Model:
    """The breaker's rules, written as plainly as possible."""

    options: dict[str, Any]
    state: str = "closed"
    generation: int = 0
    opened_at: float = 0.0
    failed_cycles: int = 0
    consecutive: int = 0
    history: list[tuple[float, bool]] = field(default_factory=list)
    probes: dict[int, float] = field(default_factory=dict)
    probe_successes: int = 0
    in_flight: dict[int, float] = field(default_factory=dict)
    calls: dict[int, Call] = field(default_factory=dict)
    next_id: int = 0

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    @property
    def recovery(self) -> float:
        return float(self.option("recovery_time"))

    @property
    def duration(self) -> float:
        cap = self.option("max_recovery_time")
        value = self.recovery
        if cap is not None:
            for _ in range(self.failed_cycles):
                value = min(value * 2.0, cap)
        return value

    @property
    def lease(self) -> float:
        return float(self.option("half_open_timeout") or self.recovery)

    def enter(self, state: str) -> None:
        self.state = state
        self.generation += 1
        self.probes.clear()
        self.probe_successes = 0
        self.in_flight.clear()

    def open(self, at: float, grow: bool) -> None:
        if grow:
            self.failed_cycles += 1
        self.opened_at = at
        self.enter("open")

    def close(self) -> None:
        self.enter("closed")
        self.failed_cycles = 0
        self.consecutive = 0
        self.history = []

    def window_totals(self, now: float) -> tuple[int, int]:
        if self.option("window") is not None:
            recent = self.history[-self.option("window") :]
        else:
            width = self.option("window_duration") / BUCKETS
            newest = int(now // width)
            recent = [(t, f) for t, f in self.history if int(t // width) > newest - BUCKETS]
        return len(recent), sum(f for _, f in recent)

    def count(self, failed: bool, now: float) -> None:
        if self.option("failure_rate") is None:
            self.consecutive = self.consecutive + 1 if failed else 0
            trips = self.consecutive >= self.option("failure_threshold")
        else:
            self.history.append((now, failed))
            calls, failures = self.window_totals(now)
            trips = (
                failed
                and calls >= self.option("minimum_calls")
                and failures / calls >= self.option("failure_rate")
            )
        if trips:
            self.open(now, grow=False)

    def advance(self, now: float) -> None:
        if self.state == "half_open" and self.probes:
            lease_end = min(self.probes.values()) + self.lease
            if lease_end < now:
                self.open(lease_end, grow=True)
        if self.state == "open" and now >= self.opened_at + self.duration:
            self.enter("half_open")
        elif self.state == "closed" and self.option("slow_call_duration") is not None:
            slow = self.option("slow_call_duration")
            for call_id, start in sorted(self.in_flight.items(), key=lambda kv: (kv[1], kv[0])):
                if self.state != "closed":
                    break
                if now - start > slow:
                    del self.in_flight[call_id]
                    self.count(True, now)

    def admit(self, now: float) -> int | None:
        self.advance(now)
        call_id = self.next_id
        if self.state == "closed":
            if self.option("slow_call_duration") is not None:
                self.in_flight[call_id] = now
        elif self.state == "half_open" and len(self.probes) < self.option("half_open_probes", 1):
            self.probes[call_id] = now
        else:
            return None
        self.next_id += 1
        self.calls[call_id] = Call(self.generation, now)
        return call_id

    def complete(self, call_id: int, verdict: str, now: float) -> None:
        call = self.calls.pop(call_id)
        self.advance(now)
        if call.generation != self.generation or verdict in ("ignored", "released"):
            self.probes.pop(call_id, None)
            self.in_flight.pop(call_id, None)
            return
        slow = self.option("slow_call_duration")
        too_slow = slow is not None and now - call.start > slow
        failed = verdict == "failure" or too_slow
        if self.state == "half_open":
            del self.probes[call_id]
            if failed:
                self.open(now, grow=True)
                return
            self.probe_successes += 1
            if self.probe_successes >= self.option("success_threshold", 1):
                self.close()
        elif self.state == "closed":
            if slow is not None:
                if call_id not in self.in_flight:
                    return  # counted while in flight
                del self.in_flight[call_id]
            self.count(failed, now)

    def retry_after(self, now: float) -> float:
        if self.state == "open":
            return max(0.0, self.opened_at + self.duration - now)
        if self.state == "isolated":
            return math.inf
        if self.state == "half_open" and len(self.probes) >= self.option("half_open_probes", 1):
            return max(0.0, min(self.probes.values()) + self.lease - now)
        return 0.0


@st.composite
def breaker_options(draw: st.DrawFn) -> dict[str, Any]:
    options: dict[str, Any] = {"recovery_time": draw(st.sampled_from([1.0, 3.0]))}
    mode = draw(st.sampled_from(["consecutive", "count", "time"]))
    if mode == "consecutive":
        options["failure_threshold"] = draw(st.integers(1, 4))
    else:
        options["failure_rate"] = draw(st.sampled_from([0.25, 0.5, 1.0]))
        if mode == "count":
            options["window"] = draw(st.integers(2, 6))
            options["minimum_calls"] = draw(st.integers(1, options["window"]))
        else:
            options["window_duration"] = 10.0
            options["minimum_calls"] = draw(st.integers(1, 4))
    if draw(st.booleans()):
        options["slow_call_duration"] = draw(st.sampled_from([1.0, 3.0]))
    options["half_open_probes"] = draw(st.integers(1, 3))
    options["success_threshold"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        options["max_recovery_time"] = options["recovery_time"] * 4
    options["half_open_timeout"] = draw(st.sampled_from([None, 2.0, 5.0]))
    return options


VERDICTS = [core.SUCCESS, core.FAILURE, core.IGNORED, core.RELEASED]


class BreakerMachine(RuleBasedStateMachine):
    """Random admissions, completions, clock moves and manual control."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.running: list[tuple[core.Permit, int]] = []

    @initialize(options=breaker_options())
    def build(self, options: dict[str, Any]) -> None:
        self.breaker = CircuitBreaker("model", clock=self.clock, **options)
        self.model = Model(options)

    @rule()
    def admit(self) -> None:
        call_id = self.model.admit(self.clock.now())
        caller = Caller()  # every call a caller of its own: none is nested in another
        if call_id is None:
            with pytest.raises(CircuitOpenError) as info:
                caller.run(self.breaker._admit)
            assert info.value.retry_after == self.model.retry_after(self.clock.now())
            return
        self.running.append((caller.run(self.breaker._admit), call_id))

    @precondition(lambda self: self.running)
    @rule(data=st.data(), verdict=st.sampled_from(VERDICTS))
    def finish(self, data: st.DataObject, verdict: str) -> None:
        index = data.draw(st.integers(0, len(self.running) - 1))
        permit, call_id = self.running.pop(index)
        self.breaker._finish(permit, verdict)
        self.model.complete(call_id, verdict, self.clock.now())

    @rule(fails=st.booleans())
    def instant_call(self, fails: bool) -> None:
        """A whole decorated call, admitted and finished at the same instant."""
        now = self.clock.now()
        call_id = self.model.admit(now)

        def body() -> str:
            if fails:
                raise Boom
            return "ok"

        expected = CircuitOpenError if call_id is None else Boom if fails else None
        caller = Caller()
        if expected is None:
            assert caller.run(self.breaker.call, body) == "ok"
        else:
            with pytest.raises(expected):
                caller.run(self.breaker.call, body)
        if call_id is not None:
            self.model.complete(call_id, core.FAILURE if fails else core.SUCCESS, now)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 2.5, 5.0, 11.0]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def read_state(self) -> None:
        self.model.advance(self.clock.now())
        assert self.breaker.state.value == self.model.state

    @precondition(lambda self: self.model.state != "isolated")
    @rule()
    def isolate(self) -> None:
        self.breaker.isolate()
        self.model.enter("isolated")

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model.close()

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "model"):
            return
        now = self.clock.now()
        self.model.advance(now)
        assert self.breaker.state is CircuitState(self.model.state)
        assert self.breaker.retry_after == self.model.retry_after(now)


BreakerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_breaker_matches_the_model = BreakerMachine.TestCase
