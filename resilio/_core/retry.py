"""The retry decision: after a retryable outcome, wait how long, or give up why."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from .backoff import Backoff

__all__ = ["GiveUpReason", "RetryRules"]


class GiveUpReason(str, enum.Enum):
    """Why a retry policy stopped retrying an outcome it would have retried."""

    ATTEMPTS = "attempts"
    """Every allowed attempt was made."""
    DEADLINE = "deadline"
    """The next attempt could not start before the deadline (the policy's own or
    an enclosing timeout's)."""
    BUDGET = "budget"
    """The shared retry budget had no retry left."""
    DISABLED = "disabled"
    """Retries are switched off (``resilio.testing.disable_retries``)."""


class RetryRules:
    """The limits of one retry policy, and the decision they imply.

    Attributes:
        attempts: The most attempts in all (first one included), or None.
        deadline: Seconds from the start of the call after which no attempt
            starts, or None.
        backoff: The wait rule.
    """

    __slots__ = ("attempts", "backoff", "deadline")

    def __init__(self, attempts: int | None, deadline: float | None, backoff: Backoff) -> None:
        self.attempts = attempts
        self.deadline = deadline
        self.backoff = backoff

    def next_delay(
        self,
        attempt: int,
        override: float | None,
        previous: float | None,
        elapsed: float,
        outer_remaining: float | None,
        random: Callable[[], float],
        at_least: float = 0.0,
    ) -> tuple[float, GiveUpReason | None]:
        """Decide what follows a retryable outcome of attempt number ``attempt``.

        Args:
            attempt: The attempt that just ended, counting from 1.
            override: A wait in seconds requested by the ``on`` predicate
                (for example from Retry-After), replacing the backoff.
            previous: The previous wait in seconds, None before the first.
            elapsed: Seconds since the call started.
            outer_remaining: Seconds left before an enclosing timeout, if any.
            random: A source of floats uniform in [0, 1).
            at_least: The shortest useful wait in seconds when the outcome
                said so itself (a rejection's ``retry_after``); it lengthens
                the backoff but not a predicate's override. Infinite means the
                call can never be admitted: the policy gives up (deadline).

        Returns:
            The wait in seconds, and None to retry or the reason to give up.
            A sleep that would end at or past a deadline is never started.
        """
        if override is not None:
            delay = override
        else:
            delay = self.backoff.delay(attempt, previous, random)
            if delay < at_least:
                delay = at_least
        if self.attempts is not None and attempt >= self.attempts:
            return delay, GiveUpReason.ATTEMPTS
        if delay == math.inf:
            return delay, GiveUpReason.DEADLINE
        if self.deadline is not None and elapsed + delay >= self.deadline:
            return delay, GiveUpReason.DEADLINE
        if outer_remaining is not None and delay >= outer_remaining:
            return delay, GiveUpReason.DEADLINE
        return delay, None
