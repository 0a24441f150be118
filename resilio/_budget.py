"""`RetryBudget`: a cap on retries shared between call sites."""

from __future__ import annotations

import math
import threading

from ._clock import Clock, runtime
from ._core.budget import BudgetState

__all__ = ["RetryBudget"]


class RetryBudget:
    """Limits retries to a share of calls, so a fleet does not multiply an outage.

    Pass one budget to several ``resilio.retry(budget=...)`` policies to share
    it. Each call through them earns ``ratio`` of a retry; each retry spends
    one. A reserve refilling at ``min_per_second`` lets a quiet service retry
    anyway. When the budget is empty the retry policy gives up at once with
    reason ``"budget"`` (an event and the ``on_give_up`` hook say so) and the
    last outcome is returned or raised as usual. Checking never blocks.

    Args:
        ratio: Retries allowed per call, between 0 and 1000 (0.2 = 20%).
        min_per_second: Retries per second always allowed, whatever the traffic;
            at most one second's worth (at least one) is saved up while idle.
        capacity: The most earned retries that can be saved up for a burst.
        clock: Where the reserve reads time; defaults to resilio's clock.
    """

    __slots__ = ("_clock", "_lock", "_state")

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        min_per_second: float = 1.0,
        capacity: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        for option, value in (
            ("ratio", ratio),
            ("min_per_second", min_per_second),
            ("capacity", capacity),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{option} must be a number, got {value!r}")
            if math.isnan(value) or value < 0 or math.isinf(value):
                raise ValueError(f"{option} must be a finite number of 0 or more, got {value}")
        if ratio > 1000:
            raise ValueError(f"ratio must be at most 1000 retries per call, got {ratio}")
        if ratio > 0 and capacity < 1:
            raise ValueError(f"capacity must be at least 1 to ever pay for a retry, got {capacity}")
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BudgetState(float(ratio), float(min_per_second), float(capacity), self._now())

    def _now(self) -> float:
        return (self._clock or runtime.clock).now()

    def deposit(self) -> None:
        """Record one call (lock-free; a lost update under a race only tightens the budget)."""
        self._state.calls += 1

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget allows it; never blocks on anything but a short lock."""
        with self._lock:
            return self._state.withdraw(self._now())

    @property
    def available(self) -> int:
        """How many retries the budget would allow right now."""
        with self._lock:
            return self._state.available(self._now())

    def __repr__(self) -> str:
        s = self._state
        return (
            f"RetryBudget(ratio={s.ratio}, min_per_second={s.min_per_second}, "
            f"capacity={s.capacity})"
        )
