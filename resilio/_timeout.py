"""`resilio.timeout`: bound how long a call may take.

Async calls are cancelled through anyio (asyncio and trio). Sync Python code
cannot be pre-empted, so a sync timeout is a cooperative deadline: resilio's
own waits honour it, `resilio.time_remaining` exposes it to your code, and a
call that finishes late raises `TimeoutExceeded` instead of returning. A
thread-based variant that walks away from a stuck call is available as an
explicit opt-in (``thread=True``).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

import anyio

from ._asyncio_timer import Lane, lane_for
from ._clock import runtime
from ._context import carry_attempt, deadline_var
from ._errors import TimeoutExceeded
from ._events import Event, EventKind, Listener, emit, listening, validate_listeners
from ._strategy import Strategy, checked_name

__all__ = ["Timeout", "timeout"]

# Task.uncancel (Python 3.11+) lets one timer serve every call of a timeout on
# asyncio; elsewhere (trio, older asyncio) each call gets an anyio cancel scope.
_ASYNCIO_LANES = hasattr(asyncio.Task, "uncancel")
# The running asyncio loop or None (under trio), without raising.
_running_asyncio_loop = asyncio._get_running_loop

P = ParamSpec("P")
T = TypeVar("T")


class Timeout(Strategy):
    """Raises `resilio.TimeoutExceeded` when a call runs past ``seconds``.

    Build it with ``resilio.timeout(seconds)``: a decorator for ``def`` and
    ``async def`` and a pipeline strategy. An inner timeout never outlives an
    outer one: its deadline is the earlier of its own and the enclosing one's.

    Example:
        ```python
        @resilio.timeout(2.0)
        async def fetch() -> bytes: ...
        ```

    Args:
        seconds: The longest the call may take, in seconds.
        thread: Sync functions only: run the call in a daemon thread and stop
            waiting for it at the deadline. The thread cannot be killed and
            keeps running in the background; use it only for calls you cannot
            make cooperative.
        listeners: Callables that receive this timeout's events.
        name: The name in events and error messages.

    Raises:
        TimeoutExceeded: From the decorated function, when the deadline passed.
    """

    __slots__ = ("_listeners", "name", "seconds", "thread")

    def __init__(
        self,
        seconds: float,
        *,
        thread: bool = False,
        listeners: Iterable[Listener] | None = None,
        name: str = "timeout",
    ) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"timeout takes seconds as a number, got {seconds!r}")
        if not (0 < seconds < math.inf):
            raise ValueError(f"timeout must be a finite number of seconds above 0, got {seconds}")
        if not isinstance(thread, bool):
            raise TypeError(f"thread= takes True or False, got {thread!r}")
        self.seconds = float(seconds)
        self.thread = thread
        self._listeners = validate_listeners(listeners)
        self.name = checked_name(name)

    def __repr__(self) -> str:
        extra = ", thread=True" if self.thread else ""
        return f"Timeout({self.seconds}{extra}, name={self.name!r})"

    def _timeout_seconds(self) -> float | None:
        return self.seconds

    def _check_target(self, is_async: bool) -> None:
        if is_async and self.thread:
            raise TypeError(
                "timeout(thread=True) is for sync functions; async functions are cancelled "
                "for real, so drop thread=True"
            )

    def _expired(
        self, cause: BaseException | None = None, *, within: float | None = None
    ) -> TimeoutExceeded:
        """The error of a call that ran out of time.

        Its own timeout, or the ``within`` seconds an enclosing deadline left it.
        """
        seconds = self.seconds if within is None else max(0.0, within)
        if listening(self._listeners):
            now = runtime.clock.now()
            emit(Event(EventKind.TIMEOUT, self.name, now, timeout=seconds), self._listeners)
        if within is None:
            message = f"{self.name}: the call took longer than {seconds:g} s"
        else:
            message = (
                f"{self.name}: the call reached the deadline of an enclosing timeout, "
                f"{seconds:g} s after it started"
            )
        error = TimeoutExceeded(message, timeout=seconds)
        error.__cause__ = cause
        return error

    def _deadline(self) -> float:
        """Return this call's absolute deadline, clamped by any enclosing one."""
        deadline = runtime.clock.now() + self.seconds
        outer = deadline_var.get()
        if outer is not None and outer < deadline:
            return outer
        return deadline

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        if self.thread:
            return self._wrap_thread(fn)

        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            deadline = self._deadline()
            token = deadline_var.set(deadline)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                late = runtime.clock.now() >= deadline
                if late and not isinstance(exc, TimeoutExceeded):
                    raise self._expired(exc) from exc
                raise
            finally:
                deadline_var.reset(token)
            if runtime.clock.now() > deadline:
                raise self._expired()
            return result

        return timed

    def _wrap_thread(self, fn: Callable[P, T]) -> Callable[P, T]:
        def timed_in_thread(*args: P.args, **kwargs: P.kwargs) -> T:
            deadline = self._deadline()
            context = contextvars.copy_context()
            context.run(deadline_var.set, deadline)
            carry_attempt(context)
            done = threading.Event()
            box: list[tuple[bool, Any]] = []

            def work() -> None:
                try:
                    box.append((True, context.run(fn, *args, **kwargs)))
                except BaseException as exc:  # handed to the caller below
                    box.append((False, exc))
                finally:
                    done.set()

            worker = threading.Thread(target=work, name=f"resilio-{self.name}", daemon=True)
            worker.start()
            if not done.wait(max(0.0, deadline - runtime.clock.now())):
                raise self._expired()
            ok, value = box[0]
            if ok:
                return value  # type: ignore[no-any-return]
            raise value

        return timed_in_thread

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        seconds = self.seconds
        cached: list[Lane] = []  # the lane of the loop seen last

        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            now = runtime.clock.now()
            outer = deadline_var.get()
            # An enclosing deadline that ends first (a sync timeout around asyncio.run,
            # say) bounds this call too: it gets a cancel scope of its own.
            within = outer - now if outer is not None and outer < now + seconds else None
            token = deadline_var.set(now + seconds if within is None else outer)
            try:
                loop = _running_asyncio_loop() if _ASYNCIO_LANES else None
                # Typed Any: Task.cancelling/uncancel exist from 3.11, checked above.
                task: Any = asyncio.current_task(loop) if loop is not None else None
                if task is None or within is not None:
                    # Trio, asyncio before 3.11, or a shorter time: an anyio cancel scope.
                    limit = seconds if within is None else within
                    with anyio.CancelScope(deadline=anyio.current_time() + limit):
                        return await fn(*args, **kwargs)
                    # Reached only when this scope's own deadline cancelled the call.
                    raise self._expired(within=within)
                lane = cached[0] if cached and cached[0].loop_ref() is loop else None
                if lane is None:
                    lane = lane_for(loop, seconds)  # type: ignore[arg-type]
                    cached[:] = [lane]
                call = lane.enter(loop, task)  # type: ignore[arg-type]
                cancelling = task.cancelling()
                try:
                    result = await fn(*args, **kwargs)
                except asyncio.CancelledError:
                    # Ours only if nobody else asked for a cancellation meanwhile.
                    if call.expired and task.uncancel() <= cancelling:
                        raise self._expired() from None
                    raise
                except BaseException:
                    if call.expired:
                        task.uncancel()
                    raise
                finally:
                    lane.leave(call)
                if call.expired:
                    task.uncancel()
                return result
            finally:
                deadline_var.reset(token)

        return timed


#: ``resilio.timeout(seconds)`` builds a `Timeout`.
timeout = Timeout
