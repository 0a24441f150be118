"""Per-call state that user code can read: the attempt number and the deadline.

Each thread and each task sees only the calls it is making itself. The
deadline lives in a context variable; so does an async retry's attempt
number, which tasks and threads started from its attempts with a copy of the
context inherit. A sync retry publishes nothing per call (setting and
resetting a context variable costs about as much as the rest of the retry):
its number is read off the call stack, in the frames of its driver.
"""

from __future__ import annotations

import sys
from contextvars import Context, ContextVar
from types import CodeType, FrameType

from ._clock import runtime

__all__ = ["current_attempt", "time_remaining"]

# The attempt number of the innermost async retry (0: none). A sync retry
# compares it with the value it started with to tell whether an async retry
# began after it, inside its attempt (through an event loop the attempt runs),
# and so is the innermost.
attempt_var: ContextVar[int] = ContextVar("resilio.attempt", default=0)
# Absolute time on `runtime.clock` (or a policy's clock) after which the
# innermost enclosing `resilio.timeout` has expired. Cooperative: sync code can
# only honour it by reading it.
deadline_var: ContextVar[float | None] = ContextVar("resilio.deadline", default=None)
# The name of the innermost named resilio.Pipeline the call runs in, for events.
pipeline_var: ContextVar[str | None] = ContextVar("resilio.pipeline", default=None)


# The retry drivers, by the id of their code (a code object's hash reads its
# whole content). Sync: the frame that enters a call, which keeps the value of
# `attempt_var` it started with in its local ``entered_with``, and the frame
# that runs the attempts after the first, which keeps their number in its
# local ``attempt``. Async: every frame of the driver, whose number is in
# `attempt_var`.
_entry_codes: set[int] = set()
_counting_codes: set[int] = set()
_async_codes: set[int] = set()


def register_retry_frames(entry: CodeType, counting: CodeType, *async_codes: CodeType) -> None:
    """Make `current_attempt` recognise the frames of the retry drivers.

    Args:
        entry: Code of the function that a sync call enters; its frame runs
            the first attempt (unless a frame of ``counting`` above it runs a
            later one) and keeps the value of ``attempt_var`` it started with
            in a local named ``entered_with``.
        counting: Code whose frames run a sync call's later attempts and keep
            their number in a local named ``attempt``.
        async_codes: Code of the async driver, which keeps its number in
            ``attempt_var``.
    """
    _entry_codes.add(id(entry))
    _counting_codes.add(id(counting))
    _async_codes.update(id(code) for code in async_codes)


def current_attempt() -> int:
    """Return the number of the attempt that is running now, counting from 1.

    Inside a function called through ``resilio.retry`` this is 1 on the first
    attempt, 2 on the second and so on. Each concurrent call (thread or task)
    sees its own number; with nested retries, the innermost one's. Outside
    any retry it returns 0.
    """
    in_context = attempt_var.get()
    try:
        frame: FrameType | None = sys._getframe(1)
    except ValueError:  # called from C, with no Python caller
        frame = None
    number: int | None = None
    while frame is not None:
        code = id(frame.f_code)
        if code in _async_codes:
            return in_context
        if code in _counting_codes:
            if number is None:
                # A signal handler or a profiler may run before `attempt` is set.
                number = frame.f_locals.get("attempt", 1)
        elif code in _entry_codes:
            values = frame.f_locals
            if values.get("entered_with", in_context) == in_context:
                return 1 if number is None else number
            # An async retry set the variable after this sync one started: it
            # runs inside this attempt (in an event loop the attempt runs), so
            # it is the innermost; we are in a task or thread it started.
            break
        frame = frame.f_back
    return in_context


def carry_attempt(context: Context) -> None:
    """Give ``context``, copied for a thread that runs the current call, its attempt number.

    A thread is off the stack where a sync retry keeps its number; the copy
    of the context carries an async retry's, but not that one.
    """
    number = current_attempt()
    context.run(attempt_var.set, number)


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
