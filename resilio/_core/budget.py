"""The retry budget's arithmetic: a ratio of calls plus a time-based reserve."""

from __future__ import annotations

__all__ = ["BudgetState"]


class BudgetState:
    """Tokens that pay for retries.

    Two sources fill it. Every call earns ``ratio`` of a token into the
    earned balance (up to ``capacity``), and a reserve refills at
    ``min_per_second`` (up to ``max(1, min_per_second)``) so that a quiet
    service can still retry. A retry costs one token, taken from the earned
    balance first.

    Calls are counted without a lock (``calls``); they are turned into tokens
    when a retry asks, under the caller's lock.
    """

    __slots__ = (
        "calls",
        "capacity",
        "converted",
        "earned",
        "min_per_second",
        "ratio",
        "reserve",
        "reserve_capacity",
        "updated",
    )

    def __init__(self, ratio: float, min_per_second: float, capacity: float, now: float) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.capacity = capacity
        self.reserve_capacity = max(1.0, min_per_second) if min_per_second > 0 else 0.0
        self.earned = 0.0
        self.reserve = self.reserve_capacity
        self.updated = now
        self.calls = 0
        self.converted = 0

    def refresh(self, now: float) -> None:
        """Turn counted calls and elapsed time into tokens."""
        calls = self.calls
        if calls != self.converted:
            self.earned = min(self.capacity, self.earned + (calls - self.converted) * self.ratio)
            self.converted = calls
        if now > self.updated:
            self.reserve = min(
                self.reserve_capacity, self.reserve + (now - self.updated) * self.min_per_second
            )
            self.updated = now

    def withdraw(self, now: float) -> bool:
        """Spend one token for a retry; return False when there is none."""
        self.refresh(now)
        if self.earned >= 1.0:
            self.earned -= 1.0
            return True
        if self.reserve >= 1.0:
            self.reserve -= 1.0
            return True
        return False

    def available(self, now: float) -> int:
        """Return how many whole retries the budget would allow now."""
        self.refresh(now)
        return int(self.earned) + int(self.reserve)
