"""The exceptions resilio raises."""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "RateLimitExceeded",
    "RejectedError",
    "ResilioError",
    "TimeoutExceeded",
]


class ResilioError(Exception):
    """Base class of every error resilio raises on its own behalf."""


class RejectedError(ResilioError):
    """A call was refused before it ran.

    Attributes:
        retry_after: Seconds until the same call has a chance to be admitted.
            ``math.inf`` when no such time is known (for example, a breaker
            isolated by hand).
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpenError(RejectedError):
    """A circuit breaker refused the call because it is open, isolated or busy probing.

    Attributes:
        breaker: The name of the breaker that refused the call.
        state: The state the breaker was in when it refused.
    """

    def __init__(self, message: str, *, retry_after: float, breaker: str, state: object) -> None:
        super().__init__(message, retry_after=retry_after)
        self.breaker = breaker
        self.state = state


class RateLimitExceeded(RejectedError):
    """A rate limiter refused the call, or could not admit it within the timeout."""


class TimeoutExceeded(ResilioError, TimeoutError):
    """A call ran past its timeout.

    It subclasses the built-in ``TimeoutError``, so code that already handles
    timeouts keeps working.

    Attributes:
        timeout: The timeout that ran out, in seconds.
    """

    def __init__(self, message: str, *, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout
