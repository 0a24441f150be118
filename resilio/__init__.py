"""resilio: retry, timeout, circuit breaker and rate limiting for Python services.

Every pattern is a strategy object that decorates ``def`` and ``async def``
functions and composes in a `Pipeline`.
"""

from . import backoff
from ._breaker import CircuitBreaker, CircuitState
from ._budget import RetryBudget
from ._bulkhead import Bulkhead, BulkheadFullError
from ._clock import Clock, SystemClock
from ._context import current_attempt, time_remaining
from ._core.adaptive import AIMD, Gradient
from ._core.limiters import Decision
from ._core.retry import GiveUpReason
from ._errors import (
    CircuitOpenError,
    RateLimitExceeded,
    RejectedError,
    ResilioError,
    TimeoutExceeded,
)
from ._events import Event, EventKind, Listener, add_listener, remove_listener
from ._fallback import Fallback, fallback
from ._hedge import Hedge, hedge
from ._limiter import LimitedCall, RateLimiter
from ._limits import (
    AllOf,
    FixedWindow,
    LeakyBucket,
    SlidingWindow,
    SlidingWindowLog,
    TokenBucket,
)
from ._logging import EventLogger
from ._outcome import Outcome
from ._pipeline import Pipeline
from ._retry import Retry, retry
from ._strategy import Strategy
from ._timeout import Timeout, timeout

__version__ = "0.1.0.dev0"

__all__ = [
    # patterns
    "retry",
    "Retry",
    "backoff",
    "RetryBudget",
    "current_attempt",
    "timeout",
    "Timeout",
    "time_remaining",
    "Pipeline",
    "Strategy",
    "CircuitBreaker",
    "CircuitState",
    "RateLimiter",
    "TokenBucket",
    "LeakyBucket",
    "FixedWindow",
    "SlidingWindow",
    "SlidingWindowLog",
    "AllOf",
    "LimitedCall",
    "Decision",
    "fallback",
    "Fallback",
    "Bulkhead",
    "AIMD",
    "Gradient",
    "hedge",
    "Hedge",
    # outcomes and events
    "Outcome",
    "Event",
    "EventKind",
    "GiveUpReason",
    "Listener",
    "EventLogger",
    "add_listener",
    "remove_listener",
    # time
    "Clock",
    "SystemClock",
    # errors
    "ResilioError",
    "RejectedError",
    "CircuitOpenError",
    "RateLimitExceeded",
    "BulkheadFullError",
    "TimeoutExceeded",
]
