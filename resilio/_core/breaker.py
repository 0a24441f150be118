"""The circuit breaker's state machine: pure decisions, no I/O, no locks, no sleeping.

Time arrives as ``now`` arguments (seconds on a monotonic scale). The driver
(`resilio._breaker.CircuitBreaker`) serialises calls into one `BreakerCore`
with a lock and turns the notices it leaves in `BreakerCore.outbox` into
events after releasing that lock.

The state is deliberately small and explicit so that a shared store can keep
the same fields and run the same steps atomically (for example in one Lua
script): ``state``, ``generation``, ``opened_at``, ``open_duration``, the
failure counter or the window, ``probes`` (token -> lease end),
``probe_successes`` and, with slow-call detection, the calls in flight.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = [
    "CLOSED",
    "OPEN",
    "HALF_OPEN",
    "ISOLATED",
    "SUCCESS",
    "FAILURE",
    "IGNORED",
    "RELEASED",
    "BreakerConfig",
    "BreakerCore",
    "CountWindow",
    "Notice",
    "Permit",
    "TimeWindow",
]

# States, spelled like the values of `resilio.CircuitState`.
CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
ISOLATED = "isolated"

# Verdicts a driver reports for a finished call.
SUCCESS = "success"
FAILURE = "failure"
IGNORED = "ignored"
RELEASED = "released"  # interrupted (cancellation, KeyboardInterrupt...): counts as nothing

#: Buckets in a time-based window; each covers ``window_duration / 10`` seconds.
TIME_BUCKETS = 10


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Validated breaker settings; see `resilio.CircuitBreaker` for their meaning.

    Exactly one of ``failure_threshold`` (consecutive mode) and
    ``failure_rate`` (rate mode, with exactly one of ``window`` and
    ``window_duration``) is set. Durations are in seconds.
    """

    failure_threshold: int | None
    failure_rate: float | None
    window: int | None
    window_duration: float | None
    minimum_calls: int
    slow_call_duration: float | None
    half_open_probes: int
    success_threshold: int
    recovery_time: float
    max_recovery_time: float | None
    recovery_multiplier: float
    half_open_timeout: float


class Permit:
    """The ticket of one admitted call, handed back with its verdict.

    Attributes:
        generation: The breaker generation the call was admitted in; its
            outcome counts only while the breaker is still in it.
        token: Identifies a tracked call (probe or slow-call candidate); 0 for
            the shared permit of an untracked closed breaker.
        started_at: When the call was admitted, in seconds (0.0 when untracked).
        track: Whether a success must be reported to the core at all.
    """

    __slots__ = ("generation", "started_at", "token", "track")

    def __init__(self, generation: int, token: int, started_at: float, track: bool) -> None:
        self.generation = generation
        self.token = token
        self.started_at = started_at
        self.track = track


class Notice:
    """Something the core decided that listeners may want to hear about.

    Attributes:
        kind: ``"success"``, ``"failure"``, ``"ignored"`` or ``"state"``.
        state: The breaker state after the decision.
        previous: The state before, for ``"state"`` notices.
        at: When it happened, in seconds.
        own: Whether it concerns the call being reported (False for a call
            still in flight that was judged slow, and for transitions).
    """

    __slots__ = ("at", "kind", "own", "previous", "state")

    def __init__(
        self, kind: str, state: str, at: float, previous: str | None = None, own: bool = False
    ) -> None:
        self.kind = kind
        self.state = state
        self.at = at
        self.previous = previous
        self.own = own


class CountWindow:
    """The outcomes of the last ``size`` counted calls, as a ring buffer."""

    __slots__ = ("calls", "failures", "next", "outcomes", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.outcomes = bytearray(size)
        self.next = 0
        self.calls = 0
        self.failures = 0

    def add(self, failed: bool, now: float) -> None:
        """Record one outcome, pushing out the oldest when full."""
        index = self.next
        if self.calls == self.size:
            self.failures += failed - self.outcomes[index]
        else:
            self.calls += 1
            self.failures += failed
        self.outcomes[index] = failed
        index += 1
        self.next = 0 if index == self.size else index

    def totals(self, now: float) -> tuple[int, int]:
        """Return ``(calls, failures)`` in the window."""
        return self.calls, self.failures

    def clear(self) -> None:
        """Forget every outcome."""
        self.outcomes = bytearray(self.size)
        self.next = self.calls = self.failures = 0


class TimeWindow:
    """Outcomes of the last ``duration`` seconds, in `TIME_BUCKETS` buckets.

    Bucket ``b`` holds the calls whose time ``t`` has ``t // width == b``; the
    window holds the newest bucket and the nine before it. Memory is constant.
    """

    __slots__ = ("bucket_calls", "bucket_failures", "calls", "failures", "head", "width")

    def __init__(self, duration: float) -> None:
        self.width = duration / TIME_BUCKETS
        self.bucket_calls = [0] * TIME_BUCKETS
        self.bucket_failures = [0] * TIME_BUCKETS
        self.calls = 0
        self.failures = 0
        self.head: int | None = None  # absolute number of the newest bucket

    def _roll(self, now: float) -> int:
        bucket = int(now // self.width)
        head = self.head
        if head is None:
            self.head = bucket
        elif bucket > head:
            # Empty every bucket that falls out of the window (at most all of them).
            for number in range(head + 1, min(bucket, head + TIME_BUCKETS) + 1):
                slot = number % TIME_BUCKETS
                self.calls -= self.bucket_calls[slot]
                self.failures -= self.bucket_failures[slot]
                self.bucket_calls[slot] = self.bucket_failures[slot] = 0
            self.head = bucket
        return bucket % TIME_BUCKETS

    def add(self, failed: bool, now: float) -> None:
        """Record one outcome at time ``now`` (seconds)."""
        slot = self._roll(now)
        self.bucket_calls[slot] += 1
        self.calls += 1
        if failed:
            self.bucket_failures[slot] += 1
            self.failures += 1

    def totals(self, now: float) -> tuple[int, int]:
        """Return ``(calls, failures)`` in the window ending at ``now``."""
        self._roll(now)
        return self.calls, self.failures

    def clear(self) -> None:
        """Forget every outcome."""
        self.bucket_calls = [0] * TIME_BUCKETS
        self.bucket_failures = [0] * TIME_BUCKETS
        self.calls = self.failures = 0
        self.head = None


class BreakerCore:
    """One breaker's state and the rules that move it.

    Not thread-safe: the caller serialises every method call. Reading
    ``state``, ``shared_permit`` or ``failures`` without the lock is safe
    (each is one attribute, replaced whole).

    Attributes:
        state: `CLOSED`, `OPEN`, `HALF_OPEN` or `ISOLATED`.
        generation: Incremented on every transition and reset; outcomes of
            calls admitted in another generation are not counted.
        opened_at: When the breaker last opened, in seconds.
        open_duration: How long the current (or next) open period lasts, in
            seconds; grows after each failed probe cycle when a cap is set.
        failures: Consecutive counted failures (consecutive mode).
        window: The rate-mode window, or None in consecutive mode.
        probes: Probes in flight while half-open: token -> lease end (seconds).
        probe_successes: Probe successes in the current half-open period.
        in_flight: With slow-call detection, closed-state calls not judged yet:
            token -> start time (seconds).
        shared_permit: While closed without slow-call detection, the one
            permit every call shares (admission needs no lock); else None.
        outbox: Notices produced since the driver last took them.
    """

    __slots__ = (
        "_in_flight_order",
        "_next_token",
        "config",
        "failures",
        "generation",
        "in_flight",
        "open_duration",
        "opened_at",
        "outbox",
        "probe_successes",
        "probes",
        "shared_permit",
        "state",
        "window",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = CLOSED
        self.generation = 0
        self.opened_at = 0.0
        self.open_duration = config.recovery_time
        self.failures = 0
        self.window: CountWindow | TimeWindow | None = None
        if config.window is not None:
            self.window = CountWindow(config.window)
        elif config.window_duration is not None:
            self.window = TimeWindow(config.window_duration)
        self.probes: dict[int, float] = {}
        self.probe_successes = 0
        self.in_flight: dict[int, float] = {}
        # Start order of `in_flight`, scanned from the oldest; entries of calls
        # that already finished are skipped lazily.
        self._in_flight_order: deque[tuple[float, int]] = deque()
        self._next_token = 1
        self.outbox: list[Notice] = []
        self.shared_permit: Permit | None = self._closed_permit()

    # -- queries -----------------------------------------------------------

    def retry_after(self, now: float) -> float:
        """Return seconds until a call may be admitted (after `advance`)."""
        if self.state == OPEN:
            return max(0.0, self.opened_at + self.open_duration - now)
        if self.state == HALF_OPEN:
            if len(self.probes) < self.config.half_open_probes:
                return 0.0
            # The running probes are decided by the end of their leases at the latest.
            return max(0.0, min(self.probes.values()) - now)
        if self.state == ISOLATED:
            return float("inf")
        return 0.0

    def take_notices(self) -> list[Notice]:
        """Return and clear the outbox."""
        notices = self.outbox
        if notices:
            self.outbox = []
        return notices

    # -- steps -------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Apply the transitions that time alone causes, up to ``now``.

        A probe whose lease ended re-opens the breaker at the lease's end; an
        open period that ended makes the breaker half-open at its end; with
        slow-call detection, closed-state calls still running longer than
        ``slow_call_duration`` are counted as failures now.
        """
        if self.state == HALF_OPEN and self.probes:
            lease_end = min(self.probes.values())
            if lease_end < now:
                self._open(lease_end, grow=True)
        if self.state == OPEN:
            reopen_at = self.opened_at + self.open_duration
            if now >= reopen_at:
                self._half_open(reopen_at)
        elif self.state == CLOSED and self._in_flight_order:
            self._judge_slow_in_flight(now)

    def admit(self, now: float) -> Permit | None:
        """Admit a call at ``now``: return its permit, or None to reject it."""
        self.advance(now)
        if self.state == CLOSED:
            if self.shared_permit is not None:
                return self.shared_permit
            token = self._take_token()
            self.in_flight[token] = now
            self._in_flight_order.append((now, token))
            return Permit(self.generation, token, now, True)
        if self.state == HALF_OPEN and len(self.probes) < self.config.half_open_probes:
            token = self._take_token()
            self.probes[token] = now + self.config.half_open_timeout
            return Permit(self.generation, token, now, True)
        return None

    def complete(self, permit: Permit, verdict: str, now: float) -> None:
        """Report how the call holding ``permit`` ended at ``now``.

        ``verdict`` is `SUCCESS`, `FAILURE`, `IGNORED` or `RELEASED`. Outcomes
        of calls admitted in an older generation change nothing; ignored and
        released ones only free their probe slot.
        """
        self.advance(now)
        if verdict == IGNORED:
            self.outbox.append(Notice(IGNORED, self.state, now, own=True))
        if permit.generation != self.generation:
            return
        slow = self.config.slow_call_duration
        if self.state == HALF_OPEN:
            if self.probes.pop(permit.token, None) is None or verdict in (IGNORED, RELEASED):
                return
            if verdict == SUCCESS and slow is not None and now - permit.started_at > slow:
                verdict = FAILURE
            if verdict == FAILURE:
                self.outbox.append(Notice(FAILURE, OPEN, now, own=True))
                self._open(now, grow=True)
                return
            self.probe_successes += 1
            closing = self.probe_successes >= self.config.success_threshold
            self.outbox.append(Notice(SUCCESS, CLOSED if closing else HALF_OPEN, now, own=True))
            if closing:
                self._close(now)
            return
        if self.state != CLOSED:
            return
        if slow is not None:
            started_at = self.in_flight.pop(permit.token, None)
            if started_at is None:  # already counted as slow while in flight
                return
            if verdict == SUCCESS and now - started_at > slow:
                verdict = FAILURE
        if verdict in (SUCCESS, FAILURE):
            self._count(verdict == FAILURE, now, own=True)

    def count_success(self, permit: Permit, now: float) -> None:
        """Count a closed-state success of the shared permit, leaving no notice.

        The quiet short cut of ``complete(permit, SUCCESS, now)`` for when
        nobody listens; only valid for `shared_permit` (no slow-call detection).
        """
        if permit.generation == self.generation:
            if self.window is None:
                self.failures = 0
            else:
                self.window.add(False, now)

    def isolate(self, now: float) -> None:
        """Hold the breaker open until `reset`."""
        if self.state != ISOLATED:
            self._enter(ISOLATED, now)

    def reset(self, now: float) -> None:
        """Close the breaker and forget every count and grown duration."""
        self._close(now)

    # -- internals ---------------------------------------------------------

    def _take_token(self) -> int:
        token = self._next_token
        self._next_token = token + 1
        return token

    def _closed_permit(self) -> Permit | None:
        if self.config.slow_call_duration is not None:
            return None  # every call needs its own start time
        return Permit(self.generation, 0, 0.0, self.window is not None)

    def _count(self, failed: bool, now: float, own: bool) -> None:
        """Count one closed-state outcome and open the breaker if it trips."""
        config = self.config
        if self.window is None:
            if not failed:
                self.failures = 0
                self.outbox.append(Notice(SUCCESS, CLOSED, now, own=own))
                return
            self.failures += 1
            assert config.failure_threshold is not None
            trips = self.failures >= config.failure_threshold
        else:
            self.window.add(failed, now)
            if not failed:
                self.outbox.append(Notice(SUCCESS, CLOSED, now, own=own))
                return
            calls, failures = self.window.totals(now)
            assert config.failure_rate is not None
            trips = calls >= config.minimum_calls and failures / calls >= config.failure_rate
        self.outbox.append(Notice(FAILURE, OPEN if trips else CLOSED, now, own=own))
        if trips:
            self._open(now, grow=False)

    def _judge_slow_in_flight(self, now: float) -> None:
        slow = self.config.slow_call_duration
        assert slow is not None
        order = self._in_flight_order
        while self.state == CLOSED and order and now - order[0][0] > slow:
            _, token = order.popleft()
            if self.in_flight.pop(token, None) is not None:
                self._count(True, now, own=False)

    def _enter(self, state: str, at: float) -> None:
        """Switch to ``state`` in a new generation, dropping per-state bookkeeping."""
        previous = self.state
        self.state = state
        self.generation += 1
        self.probes.clear()
        self.probe_successes = 0
        self.in_flight.clear()
        self._in_flight_order.clear()
        self.shared_permit = None
        if previous != state:
            self.outbox.append(Notice("state", state, at, previous=previous))

    def _open(self, at: float, grow: bool) -> None:
        if grow and self.config.max_recovery_time is not None:
            self.open_duration = min(
                self.open_duration * self.config.recovery_multiplier,
                self.config.max_recovery_time,
            )
        self.opened_at = at
        self._enter(OPEN, at)

    def _half_open(self, at: float) -> None:
        self._enter(HALF_OPEN, at)

    def _close(self, at: float) -> None:
        self._enter(CLOSED, at)
        self.failures = 0
        if self.window is not None:
            self.window.clear()
        self.open_duration = self.config.recovery_time
        self.shared_permit = self._closed_permit()
