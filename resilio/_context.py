"""Per-call state that user code can read: the attempt number and the deadline.

Each thread and each task sees only the calls it is making itself. The
deadline lives in a context variable. The attempt number is read off the
call stack: the innermost frame of a retry driver on it holds the number, so
a sync retry pays nothing per call to publish it. An async retry also keeps
its number in a context variable, which tasks and threads started from its
attempts with a copy of the context (``asyncio.to_thread``,
``anyio.to_thread.run_sync``, task groups) inherit.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from types import CodeType, FrameType

from ._clock import runtime

__all__ = ["current_attempt", "time_remaining"]

attempt_var: ContextVar[int] = ContextVar("resilio.attempt", default=0)
# Absolute time on `runtime.clock` (or a policy's clock) after which the
# innermost enclosing `resilio.timeout` has expired. Cooperative: sync code can
# only honour it by reading it.
deadline_var: ContextVar[float | None] = ContextVar("resilio.deadline", default=None)
# The name of the innermost named resilio.Pipeline the call runs in, for events.
pipeline_var: ContextVar[str | None] = ContextVar("resilio.pipeline", default=None)


# The retry drivers, by the id of their code (a code object's hash reads its
# whole content): frames that run a first attempt, and frames whose local
# `attempt` is the number of the attempt they run.
_first_attempt_codes: set[int] = set()
_counting_codes: set[int] = set()


def register_retry_frames(first: CodeType, *counting: CodeType) -> None:
    """Make `current_attempt` recognise the frames of a retry driver.

    Args:
        first: Code whose frames run the first attempt of a call.
        counting: Code whose frames keep the running attempt's number in a
            local named ``attempt``.
    """
    _first_attempt_codes.add(id(first))
    _counting_codes.update(id(code) for code in counting)


def current_attempt() -> int:
    """Return the number of the attempt that is running now, counting from 1.

    Inside a function called through ``resilio.retry`` this is 1 on the first
    attempt, 2 on the second and so on. Each concurrent call (thread or task)
    sees its own number; with nested retries, the innermost one's. Outside
    any retry it returns 0.
    """
    frame: FrameType | None = sys._getframe(1)
    first, counting = _first_attempt_codes, _counting_codes
    while frame is not None:
        code = id(frame.f_code)
        if code in first:
            return 1
        if code in counting:
            number: int = frame.f_locals["attempt"]
            return number
        frame = frame.f_back
    # Off the stack of any retry: a task or thread started inside an async
    # retry's attempt, with a copy of its context.
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
