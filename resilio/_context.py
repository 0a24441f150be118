"""Per-call state that user code can read: the attempt number and the deadline.

Both live in context variables, so each thread and each task sees only the
calls it is making itself.
"""

from __future__ import annotations

from contextvars import ContextVar

from ._clock import runtime

__all__ = ["current_attempt", "time_remaining"]

attempt_var: ContextVar[int] = ContextVar("resilio.attempt", default=0)
# Absolute time on `runtime.clock` (or a policy's clock) after which the
# innermost enclosing `resilio.timeout` has expired. Cooperative: sync code can
# only honour it by reading it.
deadline_var: ContextVar[float | None] = ContextVar("resilio.deadline", default=None)
# The name of the innermost named resilio.Pipeline the call runs in, for events.
pipeline_var: ContextVar[str | None] = ContextVar("resilio.pipeline", default=None)


def current_attempt() -> int:
    """Return the number of the attempt that is running now, counting from 1.

    Inside a function called through ``resilio.retry`` this is 1 on the first
    attempt, 2 on the second and so on. Each concurrent call (thread or task)
    sees its own number. Outside any retry it returns 0.
    """
    return attempt_var.get()


def time_remaining() -> float | None:
    """Return the seconds left before the innermost ``resilio.timeout`` expires.

    Sync code cannot be interrupted, so a sync timeout is cooperative: pass
    this value to your own blocking calls (socket or HTTP timeouts) so they
    end in time. Returns ``None`` outside any timeout, and never less than 0.
    """
    deadline = deadline_var.get()
    if deadline is None:
        return None
    return max(0.0, deadline - runtime.clock.now())
