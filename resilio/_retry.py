"""`resilio.retry`: retry a call with backoff, a deadline and an optional budget."""

from __future__ import annotations

import inspect
import math
import random as _random
from collections.abc import Awaitable, Callable, Iterable
from types import CodeType
from typing import Any, ParamSpec, TypeVar, cast

from . import _events
from ._budget import RetryBudget
from ._clock import Clock, SystemClock, runtime
from ._context import attempt_var, deadline_var, register_retry_frames
from ._core.backoff import Backoff, Exponential
from ._core.retry import GiveUpReason, RetryRules
from ._errors import RejectedError
from ._events import (
    Event,
    EventKind,
    Listener,
    emit,
    emit_timing,
    listening,
    validate_listeners,
)
from ._outcome import Classifier, ExceptionSpec, Outcome, delay_override, matches
from ._strategy import Strategy, checked_name

__all__ = ["Retry", "retry"]

P = ParamSpec("P")
T = TypeVar("T")

Hook = Callable[[Event], object]

_ATTEMPTS_HINT = "attempts counts every attempt, the first included"


def _check_hook(option: str, hook: object) -> Hook | None:
    if hook is None:
        return None
    if not callable(hook):
        raise TypeError(f"{option}= must be callable, got {hook!r}")
    return hook


class Retry(Strategy):
    """Retries a call whose outcome matches ``on``; build it with ``resilio.retry(...)``.

    The same object decorates ``def`` and ``async def`` functions and can sit
    in a `resilio.Pipeline`. It holds no per-call state, so one policy may
    serve any number of functions, threads and tasks.

    Example:
        ```python
        @resilio.retry(on=ConnectionError, attempts=5, deadline=10.0)
        def fetch() -> bytes: ...
        ```

    Args:
        on: What to retry: exception types, or a predicate over a
            `resilio.Outcome` (it sees results too). The predicate may return a
            number of seconds to wait instead of the backoff (for example from
            Retry-After). Cancellation, KeyboardInterrupt, SystemExit and
            GeneratorExit are never retried, whatever ``on`` says.
        attempts: The most attempts in all, the first included; None for no
            limit (then ``deadline`` is required).
        deadline: Seconds, on the monotonic clock, from the start of the call
            across attempts and waits: no wait starts that would end past it.
        backoff: The wait rule (`resilio.backoff`); default
            ``exponential(initial=0.1, max=5.0, jitter="full")``.
        budget: A `resilio.RetryBudget` shared with other policies.
        before_sleep: Called with the ``RETRY`` event before each wait.
            May be async for async functions.
        on_give_up: Called with the ``GAVE_UP`` event (its ``reason`` says
            attempts, deadline or budget) before the last outcome is returned
            or raised. May be async for async functions.
        listeners: Callables that receive this policy's events.
        clock: Time and sleep for this policy (tests); default: resilio's clock.
        random: A source of floats in [0, 1) for jitter; default ``random.random``.
        name: The name in events.

    When attempts run out, the last exception propagates unchanged. When the
    last outcome was a result that ``on`` matched, that result is returned.
    """

    __slots__ = (
        "_before_sleep",
        "_budget",
        "_clock",
        "_listeners",
        "_on",
        "_on_give_up",
        "_random",
        "_rules",
        "name",
    )

    def __init__(
        self,
        *,
        on: ExceptionSpec,
        attempts: int | None = 3,
        deadline: float | None = None,
        backoff: Backoff | None = None,
        budget: RetryBudget | None = None,
        before_sleep: Hook | None = None,
        on_give_up: Hook | None = None,
        listeners: Iterable[Listener] | None = None,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
        name: str = "retry",
    ) -> None:
        self._on = Classifier(on, "on")
        if attempts is not None:
            if isinstance(attempts, bool) or not isinstance(attempts, int):
                raise TypeError(f"attempts must be an int or None, got {attempts!r}")
            if attempts < 1:
                raise ValueError(f"attempts must be at least 1 ({_ATTEMPTS_HINT}), got {attempts}")
        if deadline is not None:
            if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
                raise TypeError(f"deadline must be seconds (a number) or None, got {deadline!r}")
            if not (0 < deadline < math.inf):
                raise ValueError(
                    f"deadline must be a finite number of seconds above 0, got {deadline}"
                )
            deadline = float(deadline)
        if attempts is None and deadline is None:
            raise ValueError(
                "give attempts= or deadline= (or both): without either a retry never ends"
            )
        if backoff is None:
            backoff = Exponential()
        elif not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must come from resilio.backoff, got {backoff!r}")
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a resilio.RetryBudget, got {budget!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must have now(), sleep() and sleep_async(), got {clock!r}")
        if random is not None and not callable(random):
            raise TypeError(f"random must be a callable returning floats in [0, 1), got {random!r}")
        self._rules = RetryRules(attempts, deadline, backoff)
        self._budget = budget
        self._before_sleep = _check_hook("before_sleep", before_sleep)
        self._on_give_up = _check_hook("on_give_up", on_give_up)
        self._listeners = validate_listeners(listeners)
        self._clock = clock
        self._random = random or _random.random
        self.name = checked_name(name)

    @property
    def attempts(self) -> int | None:
        """The most attempts per call, the first included (None: bounded by the deadline only)."""
        return self._rules.attempts

    @property
    def deadline(self) -> float | None:
        """Seconds after the start of a call past which no attempt starts, or None."""
        return self._rules.deadline

    @property
    def backoff(self) -> Backoff:
        """The wait rule between attempts."""
        return self._rules.backoff

    def __repr__(self) -> str:
        return (
            f"Retry(name={self.name!r}, attempts={self.attempts}, deadline={self.deadline}, "
            f"backoff={self.backoff!r})"
        )

    def _check_target(self, is_async: bool) -> None:
        if is_async:
            return
        for option, hook in (
            ("before_sleep", self._before_sleep),
            ("on_give_up", self._on_give_up),
        ):
            if hook is not None and inspect.iscoroutinefunction(hook):
                raise TypeError(
                    f"{option}= is async but the decorated function is sync: the hook would "
                    "never be awaited. Use a sync hook, or decorate an async function."
                )

    # -- decisions shared by both drivers ------------------------------------------------

    def _decide(
        self,
        attempt: int,
        verdict: object,
        previous: float | None,
        started: float,
        clock: Clock,
        outer_remaining: float | None,
        outcome: Outcome[Any],
    ) -> tuple[float, GiveUpReason | None, Event | None]:
        now = clock.now()
        # A rejection knows when trying again can help: never wait less than that.
        error = outcome.exception
        at_least = error.retry_after if isinstance(error, RejectedError) else 0.0
        delay, reason = self._rules.next_delay(
            attempt,
            delay_override(verdict),
            previous,
            now - started,
            outer_remaining,
            self._random,
            at_least,
        )
        if reason is None and not runtime.retries_enabled:
            reason = GiveUpReason.DISABLED
        if reason is None and self._budget is not None and not self._budget.try_withdraw():
            reason = GiveUpReason.BUDGET
        event = None
        if listening(self._listeners) or self._before_sleep or self._on_give_up:
            if reason is None:
                event = Event(EventKind.RETRY, self.name, now, attempt, delay, outcome)
            else:
                event = Event(EventKind.GAVE_UP, self.name, now, attempt, None, outcome, reason)
            emit(event, self._listeners)
        return delay, reason, event

    def _attempt_ended(
        self,
        clock: Clock,
        attempt: int,
        started: float,
        result: object,
        error: Exception | None,
        handled: bool,
    ) -> None:
        """Emit ``ATTEMPT`` for an attempt that began at ``started`` (only while observed)."""
        now = clock.now()
        outcome: Outcome[Any] = Outcome(result, error, attempt)
        event = Event(
            EventKind.ATTEMPT,
            self.name,
            now,
            attempt,
            outcome=outcome,
            duration=now - started,
            handled=handled,
        )
        emit_timing(event)

    def _call_ended(
        self,
        clock: Clock,
        started: float,
        attempts: int,
        result: object,
        error: Exception | None,
        handled: bool,
    ) -> None:
        """Emit ``CALL`` for a call that began at ``started`` (only while observed)."""
        now = clock.now()
        outcome: Outcome[Any] = Outcome(result, error, attempts)
        event = Event(
            EventKind.CALL,
            self.name,
            now,
            attempts,
            outcome=outcome,
            duration=now - started,
            handled=handled,
        )
        emit_timing(event)

    # -- sync driver ---------------------------------------------------------------------

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        on = self._on
        checks_results = on.checks_results
        budget = self._budget
        needs_start = self._rules.deadline is not None
        again = self._again_sync
        observed = self._observed_sync
        events = _events
        get_attempt = attempt_var.get

        # No context variable to set and reset per call: `current_attempt` finds
        # this frame (attempt 1) or `_again_sync`'s (its `attempt`) on the stack,
        # and compares `entered_with` with the variable an async retry sets.
        def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            entered_with = get_attempt()  # noqa: F841 (read by current_attempt)
            # The only cost of telemetry here: one flag, set by timing listeners.
            if events.timing_listeners:
                return observed(fn, args, kwargs)
            started = (self._clock or runtime.clock).now() if needs_start else 0.0
            if budget is not None:
                budget.deposit()
            result: T | None
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:  # a BaseException that is not an Exception never retries
                error: Exception | None = exc
                result = None
            else:
                if not checks_results:
                    return value
                error, result = None, value
            # Outside the `except` block, so later attempts' errors do not chain to this one.
            return again(fn, args, kwargs, error, result, started)

        return retrying

    def _observed_sync(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """Run a call like ``retrying`` does, timing every attempt for the listeners."""
        clock = self._clock or runtime.clock
        started = clock.now()
        if self._budget is not None:
            self._budget.deposit()
        result: T | None = None
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            error: Exception | None = exc
        else:
            if not self._on.checks_results:
                self._attempt_ended(clock, 1, started, value, None, False)
                self._call_ended(clock, started, 1, value, None, False)
                return value
            error, result = None, value
        return self._again_sync(fn, args, kwargs, error, result, started, started)

    def _again_sync(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: Exception | None,
        result: T | None,
        started: float,
        watch: float | None = None,
    ) -> T:
        clock = self._clock or runtime.clock
        on = self._on
        attempt = 1
        previous: float | None = None
        # ``watch`` is the start of an observed call: then every attempt is timed.
        attempt_started = 0.0 if watch is None else watch
        while True:
            if error is not None:
                verdict = on.exception(error, attempt)
            else:
                verdict = on.result(result, attempt)
            handled = matches(verdict)
            if watch is not None:
                self._attempt_ended(clock, attempt, attempt_started, result, error, handled)
            if not handled:
                break
            outcome: Outcome[Any] = Outcome(result, error, attempt)
            delay, reason, event = self._decide(
                attempt, verdict, previous, started, clock, _sync_outer_remaining(), outcome
            )
            if reason is not None:
                if self._on_give_up is not None and event is not None:
                    _run_hook(self._on_give_up, event)
                break
            if self._before_sleep is not None and event is not None:
                _run_hook(self._before_sleep, event)
            if delay > 0 and runtime.waits_enabled:
                clock.sleep(delay)
            previous = delay
            attempt += 1
            if watch is not None:
                attempt_started = clock.now()
            try:
                result = fn(*args, **kwargs)
                error = None
            except Exception as exc:
                error = exc
                result = None
            else:
                if not on.checks_results:
                    if watch is not None:
                        self._attempt_ended(clock, attempt, attempt_started, result, None, False)
                        self._call_ended(clock, watch, attempt, result, None, False)
                    return result
        if watch is not None:
            self._call_ended(clock, watch, attempt, result, error, handled)
        if error is not None:
            raise error
        return cast("T", result)

    # -- async driver --------------------------------------------------------------------

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        on = self._on
        checks_results = on.checks_results
        budget = self._budget
        needs_start = self._rules.deadline is not None
        set_attempt = attempt_var.set
        reset_attempt = attempt_var.reset
        again = self._again_async
        observed = self._observed_async
        events = _events

        async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            token = set_attempt(1)
            try:
                if events.timing_listeners:
                    return await observed(fn, args, kwargs)
                started = (self._clock or runtime.clock).now() if needs_start else 0.0
                if budget is not None:
                    budget.deposit()
                result: T | None
                try:
                    value = await fn(*args, **kwargs)
                except Exception as exc:
                    error: Exception | None = exc
                    result = None
                else:
                    if not checks_results:
                        return value
                    error, result = None, value
                return await again(fn, args, kwargs, error, result, started)
            finally:
                reset_attempt(token)

        return retrying

    async def _observed_async(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """Async twin of `_observed_sync`."""
        clock = self._clock or runtime.clock
        started = clock.now()
        if self._budget is not None:
            self._budget.deposit()
        result: T | None = None
        try:
            value = await fn(*args, **kwargs)
        except Exception as exc:
            error: Exception | None = exc
        else:
            if not self._on.checks_results:
                self._attempt_ended(clock, 1, started, value, None, False)
                self._call_ended(clock, started, 1, value, None, False)
                return value
            error, result = None, value
        return await self._again_async(fn, args, kwargs, error, result, started, started)

    async def _again_async(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: Exception | None,
        result: T | None,
        started: float,
        watch: float | None = None,
    ) -> T:
        clock = self._clock or runtime.clock
        on = self._on
        attempt = 1
        previous: float | None = None
        real_time = isinstance(clock, SystemClock)
        attempt_started = 0.0 if watch is None else watch
        while True:
            if error is not None:
                verdict = on.exception(error, attempt)
            else:
                verdict = on.result(result, attempt)
            handled = matches(verdict)
            if watch is not None:
                self._attempt_ended(clock, attempt, attempt_started, result, error, handled)
            if not handled:
                break
            outcome: Outcome[Any] = Outcome(result, error, attempt)
            outer = _async_outer_remaining() if real_time and runtime.waits_enabled else None
            delay, reason, event = self._decide(
                attempt, verdict, previous, started, clock, outer, outcome
            )
            if reason is not None:
                if self._on_give_up is not None and event is not None:
                    await _run_hook_async(self._on_give_up, event)
                break
            if self._before_sleep is not None and event is not None:
                await _run_hook_async(self._before_sleep, event)
            if delay > 0 and runtime.waits_enabled:
                await clock.sleep_async(delay)
            previous = delay
            attempt += 1
            attempt_var.set(attempt)
            if watch is not None:
                attempt_started = clock.now()
            try:
                result = await fn(*args, **kwargs)
                error = None
            except Exception as exc:
                error = exc
                result = None
            else:
                if not on.checks_results:
                    if watch is not None:
                        self._attempt_ended(clock, attempt, attempt_started, result, None, False)
                        self._call_ended(clock, watch, attempt, result, None, False)
                    return result
        if watch is not None:
            self._call_ended(clock, watch, attempt, result, error, handled)
        if error is not None:
            raise error
        return cast("T", result)


def _sync_outer_remaining() -> float | None:
    deadline = deadline_var.get()
    if deadline is None:
        return None
    return deadline - runtime.clock.now()


def _async_outer_remaining() -> float | None:
    import anyio

    deadline = anyio.current_effective_deadline()
    if deadline == math.inf:
        return _sync_outer_remaining()
    remaining = deadline - anyio.current_time()
    cooperative = _sync_outer_remaining()
    if cooperative is not None and cooperative < remaining:
        return cooperative
    return remaining


def _run_hook(hook: Hook, event: Event) -> None:
    try:
        hook(event)
    except Exception:
        from ._events import logger

        logger.exception("resilio hook %r failed on %s", hook, event.kind.value)


async def _run_hook_async(hook: Hook, event: Event) -> None:
    try:
        value = hook(event)
        if inspect.isawaitable(value):
            await value
    except Exception:
        from ._events import logger

        logger.exception("resilio hook %r failed on %s", hook, event.kind.value)


def _code(function: object, nested: str | None = None) -> CodeType:
    """The code of ``function``, or of the function named ``nested`` defined in it."""
    code: CodeType = function.__code__  # type: ignore[attr-defined]
    if nested is None:
        return code
    return next(c for c in code.co_consts if isinstance(c, CodeType) and c.co_name == nested)


# The frames in which a retry runs its user's function, for `current_attempt`.
register_retry_frames(
    _code(Retry._wrap_sync, "retrying"),
    _code(Retry._again_sync),
    _code(Retry._wrap_async, "retrying"),
    _code(Retry._observed_async),
    _code(Retry._again_async),
)

#: ``resilio.retry(...)`` builds a `Retry`; the lowercase name reads like the decorator it is.
retry = Retry
