"""Adaptive concurrency limits: AIMD and gradient, after Netflix's concurrency-limits.

Pure arithmetic over samples. A limit is told, for each finished call, how
long it took (seconds), how many calls were in flight when it started, and
whether it ended in a sign of overload (a "drop": a timeout or a rejection
further down). It answers with the new limit. Nothing here reads a clock,
sleeps or locks; the bulkhead driver does that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["AIMD", "AdaptiveLimit", "Gradient", "LimitAlgorithm"]


def _check_bounds(min_limit: object, max_limit: object) -> None:
    for option, value in (("min_limit", min_limit), ("max_limit", max_limit)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{option}= must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{option}= must be at least 1, got {value}")
    if min_limit > max_limit:  # type: ignore[operator]
        raise ValueError(f"min_limit={min_limit} is above max_limit={max_limit}; swap them")


def _check_seconds(value: object, option: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{option}= must be seconds (a number), got {value!r}")
    if not (0 < value < math.inf):
        raise ValueError(f"{option}= must be a finite number of seconds above 0, got {value}")


def _check_share(value: object, option: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{option}= must be a number, got {value!r}")
    if not (low <= value <= high):
        raise ValueError(f"{option}= must be between {low} and {high}, got {value}")


class LimitAlgorithm:
    """The configuration of an adaptive limit; `start` makes its running state."""

    min_limit: int
    max_limit: int

    def start(self, initial: int) -> AdaptiveLimit:
        """Return the state of a limit that starts at ``initial``."""
        raise NotImplementedError


class AdaptiveLimit:
    """The running state of an adaptive limit."""

    limit: int

    def update(self, rtt: float, inflight: int, dropped: bool) -> int:
        """Take one sample and return the new limit.

        Args:
            rtt: How long the call took, in seconds.
            inflight: Calls in flight when this one started, itself included.
            dropped: Whether the call ended in a sign of overload.
        """
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class AIMD(LimitAlgorithm):
    """Additive increase, multiplicative decrease: the loss-based limit.

    A call that is dropped, or slower than ``slow_call_duration``, multiplies
    the limit by ``backoff_ratio``. Any other finished call adds one, but only
    while at least half the limit is in use, so an idle service does not
    inflate its limit.

    Args:
        min_limit: The limit never goes below this.
        max_limit: The limit never goes above this.
        backoff_ratio: The factor applied on overload, between 0.5 and 1
            (exclusive).
        slow_call_duration: Seconds above which a call counts as overload.
    """

    min_limit: int = 1
    max_limit: int = 200
    backoff_ratio: float = 0.9
    slow_call_duration: float = 5.0

    def __post_init__(self) -> None:
        _check_bounds(self.min_limit, self.max_limit)
        _check_share(self.backoff_ratio, "backoff_ratio", 0.5, 1.0)
        if self.backoff_ratio == 1.0:
            raise ValueError("backoff_ratio=1 never decreases the limit; use a value below 1")
        _check_seconds(self.slow_call_duration, "slow_call_duration")

    def start(self, initial: int) -> AdaptiveLimit:
        """Return the state of an AIMD limit that starts at ``initial``."""
        return _AimdLimit(self, initial)


class _AimdLimit(AdaptiveLimit):
    __slots__ = ("config", "limit")

    def __init__(self, config: AIMD, initial: int) -> None:
        self.config = config
        self.limit = initial

    def update(self, rtt: float, inflight: int, dropped: bool) -> int:
        config = self.config
        if dropped or rtt > config.slow_call_duration:
            # int() floors, so a small limit still shrinks by at least one.
            shrunk = min(self.limit - 1, int(self.limit * config.backoff_ratio))
            self.limit = max(config.min_limit, shrunk)
        elif inflight * 2 >= self.limit:
            self.limit = min(config.max_limit, self.limit + 1)
        return self.limit


@dataclass(frozen=True, slots=True)
class Gradient(LimitAlgorithm):
    """The delay-based limit (Netflix's Gradient2): it follows latency, not errors.

    It keeps a long-term average of call durations and compares each new
    duration with it. While calls are as fast as usual the gradient is 1 and
    the limit grows by ``queue_size``; when they slow down the gradient falls
    (never below 0.5) and the limit shrinks with it. A dropped call counts as
    the worst gradient, 0.5. After an overload the long-term average is pulled
    down, so the limit recovers.

    Args:
        min_limit: The limit never goes below this.
        max_limit: The limit never goes above this.
        tolerance: How much slower than usual a call may be before the limit
            shrinks (1.5: up to 50 % slower is fine).
        smoothing: How far each sample moves the limit towards its target,
            between 0 (not at all) and 1 (all the way).
        long_window: How many samples the long-term average spans.
        queue_size: How far above the in-flight calls the limit may grow.
    """

    min_limit: int = 1
    max_limit: int = 200
    tolerance: float = 1.5
    smoothing: float = 0.2
    long_window: int = 600
    queue_size: int = 4

    def __post_init__(self) -> None:
        _check_bounds(self.min_limit, self.max_limit)
        _check_share(self.tolerance, "tolerance", 1.0, math.inf)
        _check_share(self.smoothing, "smoothing", 0.0, 1.0)
        if self.smoothing == 0:
            raise ValueError("smoothing=0 never moves the limit; use a value in (0, 1]")
        for option, value in (("long_window", self.long_window), ("queue_size", self.queue_size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{option}= must be an int, got {value!r}")
        if self.long_window < 1:
            raise ValueError(f"long_window= must be at least 1 sample, got {self.long_window}")
        if self.queue_size < 0:
            raise ValueError(f"queue_size= cannot be negative, got {self.queue_size}")

    def start(self, initial: int) -> AdaptiveLimit:
        """Return the state of a gradient limit that starts at ``initial``."""
        return _GradientLimit(self, initial)


class _GradientLimit(AdaptiveLimit):
    __slots__ = ("_estimate", "_long_rtt", "_samples", "config", "limit")

    def __init__(self, config: Gradient, initial: int) -> None:
        self.config = config
        self.limit = initial
        self._estimate = float(initial)
        self._long_rtt = 0.0
        self._samples = 0

    def update(self, rtt: float, inflight: int, dropped: bool) -> int:
        config = self.config
        if rtt <= 0:
            return self.limit
        # An exponential average that starts as a plain mean over the first samples.
        self._samples += 1
        weight = 1.0 / min(self._samples, config.long_window)
        self._long_rtt += (rtt - self._long_rtt) * weight
        if self._long_rtt / rtt > 2:
            # Calls are far faster than the average remembers: an overload ended.
            self._long_rtt *= 0.95
        if inflight < self.limit / 2 and not dropped:
            # App-limited: too few calls to learn whether more would fit.
            return self.limit
        gradient = max(0.5, min(1.0, config.tolerance * self._long_rtt / rtt))
        if dropped:
            gradient = 0.5
        target = self._estimate * gradient + config.queue_size
        estimate = self._estimate * (1 - config.smoothing) + target * config.smoothing
        self._estimate = max(float(config.min_limit), min(float(config.max_limit), estimate))
        self.limit = int(self._estimate)
        return self.limit
