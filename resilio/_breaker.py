"""The circuit breaker: stops calling a dependency that keeps failing, then probes it."""

from __future__ import annotations

import enum
import inspect
import itertools
import math
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn, ParamSpec, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self

from . import _events
from ._clock import Clock, runtime
from ._core import breaker as core
from ._errors import CircuitOpenError
from ._events import Event, EventKind, Listener, emit, validate_listeners
from ._outcome import Classifier, ExceptionSpec, Outcome, matches
from ._strategy import Strategy, checked_name
from .stores import MemoryStore

__all__ = ["CircuitBreaker", "CircuitState"]

P = ParamSpec("P")
T = TypeVar("T")


class CircuitState(str, enum.Enum):
    """The states of a `CircuitBreaker`."""

    CLOSED = "closed"
    """Calls run; failures are counted."""
    OPEN = "open"
    """Calls are rejected until the recovery time has passed."""
    HALF_OPEN = "half_open"
    """A limited number of probe calls run to test whether the dependency recovered."""
    ISOLATED = "isolated"
    """Held open by `CircuitBreaker.isolate` until `CircuitBreaker.reset`."""


_STATES = {state.value: state for state in CircuitState}
_NOTICE_KINDS = {
    core.SUCCESS: EventKind.BREAKER_SUCCESS,
    core.FAILURE: EventKind.BREAKER_FAILURE,
    core.IGNORED: EventKind.BREAKER_IGNORED,
    "state": EventKind.BREAKER_STATE_CHANGED,
}
_names = itertools.count(1)

#: The longest count window (``window=``): it keeps one outcome per call.
MAX_WINDOW: Final = 1_000_000

#: The permit of a call made inside a probe of the same breaker: it counts nothing
#: (no generation matches it), so the probe's own outcome decides.
NESTED: Final = core.Permit(-1, 0, 0.0, False)


_GENERATORS: Final = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


class Probe:
    """The half-open probe a thread or task is running, as its calls see it.

    It is kept in the `contextvars` context of the thread or task that runs
    it, which the tasks it starts inherit: calls through the same breaker
    made there while it runs (nested calls, calls of those tasks) pass
    through as part of it, and the probe's outcome decides for them, so a
    breaker guarding a function and the functions it calls can still close.
    A probe entered by a generator (``with breaker:`` across a ``yield``)
    covers only the calls made while the generator runs: its caller, in the
    same context, is not inside it.

    Attributes:
        permit: The probe's permit.
        lease_end: When its lease ends on the breaker's clock, in seconds.
        holder: The generator frame that entered it, if a generator did.
        done: Whether its outcome was reported (or it was released).
    """

    __slots__ = ("done", "holder", "lease_end", "permit")

    def __init__(
        self, permit: core.Permit, lease_end: float, entered_by: FrameType | None = None
    ) -> None:
        self.permit = permit
        self.lease_end = lease_end
        generator = entered_by is not None and entered_by.f_code.co_flags & _GENERATORS
        self.holder = entered_by if generator else None
        self.done = False

    def covers(self, now: float, generation: int | None = None) -> bool:
        """Whether a call made at ``now`` inside this probe is part of it.

        ``generation``: the breaker's current one, where it is known here; the
        probe is over once the breaker moved on.
        """
        if generation is not None and generation != self.permit.generation:
            return False
        if self.done or now >= self.lease_end:
            return False
        return self.holder is None or _running(self.holder)


def _running(frame: FrameType) -> bool:
    """Whether ``frame`` is on the calling thread's stack (a generator's: it runs now)."""
    current: FrameType | None = sys._getframe(1)
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


def _positive(value: object, option: str, *, integer: bool = False) -> None:
    """Raise unless ``value`` is a positive finite number (an int when ``integer``)."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an int" if integer else "a number"
        raise TypeError(f"{option}= must be {what}, got {value!r}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{option}= must be a positive finite number, got {value!r}")


class CircuitBreaker(Strategy):
    """Stops calling a dependency that keeps failing, and probes it before trusting it again.

    A closed breaker lets calls through and counts their failures. When they
    cross the threshold it opens: calls fail at once with
    `resilio.CircuitOpenError` for ``recovery_time`` seconds. Then it is
    half-open: up to ``half_open_probes`` calls run at a time as probes;
    ``success_threshold`` probe successes close it, one probe failure opens it
    again. Use it as a decorator (``def`` or ``async def``), or as a ``with``
    or ``async with`` block.

    Args:
        name: Names the breaker in errors and events; default ``"breaker-N"``.
        failure_threshold: Consecutive failures that open the breaker
            (default 5 when ``failure_rate`` is not set).
        recovery_time: Seconds the breaker stays open before a probe may run.
        failure_rate: Instead of consecutive failures, open when the share of
            failures in the window reaches this rate (``0 < rate <= 1``).
        window: With ``failure_rate``: the window is the last ``window`` calls.
        window_duration: With ``failure_rate``: the window is the last
            ``window_duration`` seconds (kept in 10 buckets).
        minimum_calls: With ``failure_rate``: calls the window must hold
            before the rate is judged.
        slow_call_duration: Seconds after which a call counts as a failure,
            even if it succeeds; calls still running past it are counted as
            failures while they run.
        half_open_probes: Probes allowed to run at the same time while half-open.
        success_threshold: Probe successes that close the breaker.
        max_recovery_time: When set, each failed probe multiplies the open
            period by ``recovery_multiplier``, up to this many seconds.
        recovery_multiplier: Growth factor of the open period (at least 1).
        half_open_timeout: Seconds a probe may run before it is abandoned and
            the breaker re-opens; default ``recovery_time``.
        on: What counts as a failure: exception types, or a predicate over a
            `resilio.Outcome` (which sees results too). Exceptions that do not
            match count as successes.
        ignore: Outcomes that count as neither success nor failure:
            exception types or a predicate. Wins over ``on``.
        listeners: Callables that receive the `resilio.Event` objects of this breaker.
        clock: The clock to read; default the process clock (`resilio.testing`
            can swap it).
        store: Where the state lives: None (the default) or a
            `resilio.stores.MemoryStore` for this process's memory, or a
            `resilio.redis.RedisStore` to share one breaker, found by
            ``name``, between every process that uses the store (see
            docs/redis.md).

    Example:
        ```python
        payments = resilio.CircuitBreaker(name="payments", failure_threshold=5)

        @payments
        def charge(order): ...
        ```
    """

    __slots__ = (
        "_clock",
        "_core",
        "_ignore",
        "_listeners",
        "_lock",
        "_on",
        "_permits",
        "_probe",
        "_timed_window",
        "config",
        "name",
    )

    def __new__(cls, name: str | None = None, *, store: Any = None, **options: Any) -> Self:
        # A breaker on a Redis store is the RedisCircuitBreaker subclass: the
        # in-memory class and its hot path stay exactly as they are.
        if store is None or isinstance(store, MemoryStore) or cls is not CircuitBreaker:
            return super().__new__(cls)
        redis_module = sys.modules.get("resilio.redis")
        if redis_module is None or not isinstance(store, redis_module.RedisStore):
            raise TypeError(
                f"store= takes a resilio.redis.RedisStore (or None for this process's "
                f"memory), got {store!r}"
            )
        from ._redis_breaker import RedisCircuitBreaker  # needs the redis extra: import on use

        return super().__new__(RedisCircuitBreaker)  # type: ignore[return-value]

    def __init__(
        self,
        name: str | None = None,
        *,
        failure_threshold: int | None = None,
        recovery_time: float = 30.0,
        failure_rate: float | None = None,
        window: int | None = None,
        window_duration: float | None = None,
        minimum_calls: int = 10,
        slow_call_duration: float | None = None,
        half_open_probes: int = 1,
        success_threshold: int = 1,
        max_recovery_time: float | None = None,
        recovery_multiplier: float = 2.0,
        half_open_timeout: float | None = None,
        on: ExceptionSpec = Exception,
        ignore: ExceptionSpec | None = None,
        listeners: Iterable[Listener] | None = None,
        clock: Clock | None = None,
        store: Any = None,
    ) -> None:
        if store is not None and not isinstance(store, MemoryStore):
            raise TypeError(f"store= of a {type(self).__name__} must be None, got {store!r}")
        name = f"breaker-{next(_names)}" if name is None else checked_name(name)
        _positive(recovery_time, "recovery_time")
        if failure_rate is None:
            if window is not None or window_duration is not None:
                raise ValueError(
                    "window= and window_duration= only apply with failure_rate=; "
                    "set failure_rate= (for example 0.5) or drop them"
                )
            failure_threshold = 5 if failure_threshold is None else failure_threshold
            _positive(failure_threshold, "failure_threshold", integer=True)
        else:
            if failure_threshold is not None:
                raise ValueError(
                    "failure_threshold= and failure_rate= are two ways to trip; pass only one"
                )
            _positive(failure_rate, "failure_rate")
            if failure_rate > 1:
                raise ValueError(f"failure_rate= is a share between 0 and 1, got {failure_rate}")
            if (window is None) == (window_duration is None):
                raise ValueError(
                    "failure_rate= needs exactly one window: window= (a number of calls) "
                    "or window_duration= (seconds)"
                )
            _positive(minimum_calls, "minimum_calls", integer=True)
            if window is not None:
                _positive(window, "window", integer=True)
                if window > MAX_WINDOW:
                    raise ValueError(
                        f"window={window} would keep that many outcomes (one per call); "
                        f"a count window holds at most {MAX_WINDOW:,} calls: for a longer "
                        "horizon use window_duration= (constant memory)"
                    )
                if minimum_calls > window:
                    raise ValueError(
                        f"minimum_calls={minimum_calls} can never be reached in a window of "
                        f"{window} calls; lower minimum_calls= or raise window="
                    )
            else:
                _positive(window_duration, "window_duration")
        if slow_call_duration is not None:
            _positive(slow_call_duration, "slow_call_duration")
        _positive(half_open_probes, "half_open_probes", integer=True)
        _positive(success_threshold, "success_threshold", integer=True)
        if max_recovery_time is not None:
            _positive(max_recovery_time, "max_recovery_time")
            if max_recovery_time < recovery_time:
                raise ValueError(
                    f"max_recovery_time={max_recovery_time} is shorter than "
                    f"recovery_time={recovery_time}; raise it or leave it unset"
                )
        _positive(recovery_multiplier, "recovery_multiplier")
        if recovery_multiplier < 1:
            raise ValueError(
                f"recovery_multiplier= must be at least 1 (1 keeps the open period fixed), "
                f"got {recovery_multiplier}"
            )
        if half_open_timeout is None:
            half_open_timeout = recovery_time
        _positive(half_open_timeout, "half_open_timeout")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock= must have now(), sleep() and sleep_async(), got {clock!r}")

        self.name = name
        self.config = core.BreakerConfig(
            failure_threshold=failure_threshold,
            failure_rate=None if failure_rate is None else float(failure_rate),
            window=window,
            window_duration=None if window_duration is None else float(window_duration),
            minimum_calls=minimum_calls,
            slow_call_duration=None if slow_call_duration is None else float(slow_call_duration),
            half_open_probes=half_open_probes,
            success_threshold=success_threshold,
            recovery_time=float(recovery_time),
            max_recovery_time=None if max_recovery_time is None else float(max_recovery_time),
            recovery_multiplier=float(recovery_multiplier),
            half_open_timeout=float(half_open_timeout),
        )
        self._on = Classifier(on, "on")
        self._ignore = None if ignore is None else Classifier(ignore, "ignore")
        self._listeners = validate_listeners(listeners)
        self._clock = clock
        self._core = core.BreakerCore(self.config)
        self._timed_window = window_duration is not None
        # Held only for a few field updates, never while a user function runs.
        self._lock = threading.Lock()
        # The `with` blocks this thread or task is inside, innermost last: each
        # one's permit and the frame that entered it.
        self._permits: ContextVar[tuple[tuple[core.Permit, FrameType], ...]] = ContextVar(
            f"resilio.breaker.{name}", default=()
        )
        # The probe this thread or task runs, if any (see Probe).
        self._probe: ContextVar[Probe | None] = ContextVar(
            f"resilio.breaker.{name}.probe", default=None
        )

    # -- public state --------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state, after applying what time alone changes.

        Reading it may move an open breaker to half-open once the recovery
        time has passed, re-open one whose probe overran ``half_open_timeout``,
        or open a closed one whose running calls are already too slow.
        """
        now = self._now()
        with self._lock:
            self._core.advance(now)
            state = self._core.state
            notices = self._core.take_notices()
        if notices:
            self._emit(notices)
        return _STATES[state]

    @property
    def retry_after(self) -> float:
        """Seconds until a call may be admitted: 0 if one would be now, ``math.inf`` if isolated."""
        now = self._now()
        with self._lock:
            self._core.advance(now)
            retry_after = self._core.retry_after(now)
            notices = self._core.take_notices()
        if notices:
            self._emit(notices)
        return retry_after

    def isolate(self) -> None:
        """Hold the breaker open (`CircuitState.ISOLATED`) until `reset` is called."""
        now = self._now()
        with self._lock:
            self._core.isolate(now)
            notices = self._core.take_notices()
        if notices:
            self._emit(notices)

    def reset(self) -> None:
        """Close the breaker and clear its counts and grown recovery time."""
        now = self._now()
        with self._lock:
            self._core.reset(now)
            notices = self._core.take_notices()
        if notices:
            self._emit(notices)

    async def state_async(self) -> CircuitState:
        """Async twin of `state`: the only way to read a breaker on an async Redis client."""
        return self.state

    async def retry_after_async(self) -> float:
        """Async twin of `retry_after`."""
        return self.retry_after

    async def isolate_async(self) -> None:
        """Async twin of `isolate`."""
        self.isolate()

    async def reset_async(self) -> None:
        """Async twin of `reset`."""
        self.reset()

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self._core.state!r})"

    # -- call protocol -------------------------------------------------------

    def _now(self) -> float:
        return (self._clock or runtime.clock).now()

    def _admit(self, entered_by: FrameType | None = None) -> core.Permit:
        """Return a permit for one call, or raise `CircuitOpenError`.

        ``entered_by``: the frame of a ``with`` block that asks.
        """
        now = self._now()
        probe = self._probe.get()
        if probe is not None and probe.covers(now, self._core.generation):
            return NESTED
        with self._lock:
            permit = self._core.admit(now)
            state = self._core.state
            retry_after = 0.0 if permit is not None else self._core.retry_after(now)
            notices = self._core.take_notices()
        if notices:
            self._emit(notices)
        if permit is None:
            self._reject(_STATES[state], retry_after, now)
        if state == core.HALF_OPEN:
            self._probe.set(Probe(permit, now + self.config.half_open_timeout, entered_by))
        return permit

    def _probe_ended(self, permit: core.Permit) -> None:
        """Note that ``permit``'s call ended: if it is this context's probe, calls leave it."""
        probe = self._probe.get()
        if probe is not None and probe.permit is permit:
            probe.done = True
            self._probe.set(None)

    def _reject(self, state: CircuitState, retry_after: float, now: float) -> NoReturn:
        if self._listeners or _events.global_listeners:
            emit(Event(EventKind.BREAKER_REJECTED, self.name, now, state=state), self._listeners)
        if state is CircuitState.ISOLATED:
            detail = "isolated; call reset() to close it"
        elif state is CircuitState.HALF_OPEN:
            detail = f"half-open and its {self.config.half_open_probes} probe slot(s) are busy"
        else:
            detail = f"open; retry in {retry_after:.3g} seconds"
        raise CircuitOpenError(
            f"circuit breaker {self.name!r} is {detail}",
            retry_after=retry_after,
            breaker=self.name,
            state=state,
        )

    def _finish(
        self,
        permit: core.Permit,
        verdict: str,
        result: object = None,
        exception: Exception | None = None,
    ) -> None:
        """Report a finished call to the core; emit what it decided outside the lock."""
        if permit.token:
            self._probe_ended(permit)
        now = self._now()
        with self._lock:
            self._core.complete(permit, verdict, now)
            notices = self._core.take_notices()
        if notices:
            self._emit(notices, result, exception)

    def _count_success(self, permit: core.Permit) -> None:
        """Count a success of the shared closed-state permit when nobody listens."""
        core_ = self._core
        now = self._now() if self._timed_window else 0.0
        with self._lock:
            core_.count_success(permit, now)

    def _finish_result(self, permit: core.Permit, result: object) -> None:
        """Classify a returned value (only predicates look at results)."""
        ignore = self._ignore
        try:
            if ignore is not None and matches(ignore.result(result)):
                verdict = core.IGNORED
            elif matches(self._on.result(result)):
                verdict = core.FAILURE
            else:
                verdict = core.SUCCESS
        except BaseException:
            self._release(permit)
            raise
        self._finish(permit, verdict, result)

    def _finish_exception(self, permit: core.Permit, exc: Exception) -> None:
        """Classify a raised exception: ignored, failure, or (not matching ``on``) success."""
        ignore = self._ignore
        try:
            if ignore is not None and matches(ignore.exception(exc)):
                verdict = core.IGNORED
            elif matches(self._on.exception(exc)):
                verdict = core.FAILURE
            else:
                verdict = core.SUCCESS
        except BaseException:
            self._release(permit)
            raise
        self._finish(permit, verdict, exception=exc)

    def _release(self, permit: core.Permit) -> None:
        """Give back a permit without counting anything (interrupted call)."""
        if permit.token:
            self._finish(permit, core.RELEASED)

    def _emit(
        self, notices: list[core.Notice], result: object = None, exception: Exception | None = None
    ) -> None:
        listeners = self._listeners
        if not (listeners or _events.global_listeners):
            return
        outcome: Outcome[Any] | None = None
        if any(notice.own for notice in notices):
            outcome = Outcome(result=result, exception=exception)
        for notice in notices:
            previous = None if notice.previous is None else _STATES[notice.previous]
            event = Event(
                _NOTICE_KINDS[notice.kind],
                self.name,
                notice.at,
                outcome=outcome if notice.own else None,
                state=_STATES[notice.state],
                previous_state=previous,
            )
            emit(event, listeners)

    # -- decorator -----------------------------------------------------------

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        state = self._core
        admit = self._admit
        finish = self._finish
        count_success = self._count_success
        finish_result = self._finish_result
        finish_exception = self._finish_exception
        release = self._release
        listeners = self._listeners
        events = _events
        check_results = self._on.checks_results or (
            self._ignore is not None and self._ignore.checks_results
        )

        def breaker_call(*args: P.args, **kwargs: P.kwargs) -> T:
            # Closed and untracked: one attribute read admits the call, no lock.
            permit = state.shared_permit
            if permit is None:
                permit = admit()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                finish_exception(permit, exc)
                raise
            except BaseException:
                release(permit)
                raise
            if check_results:
                finish_result(permit, result)
            elif listeners or events.global_listeners or permit.token:
                finish(permit, core.SUCCESS, result)
            elif permit.track or state.failures:
                count_success(permit)
            return result

        return breaker_call

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        state = self._core
        admit = self._admit
        finish = self._finish
        count_success = self._count_success
        finish_result = self._finish_result
        finish_exception = self._finish_exception
        release = self._release
        listeners = self._listeners
        events = _events
        check_results = self._on.checks_results or (
            self._ignore is not None and self._ignore.checks_results
        )

        async def breaker_call(*args: P.args, **kwargs: P.kwargs) -> T:
            permit = state.shared_permit
            if permit is None:
                permit = admit()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                finish_exception(permit, exc)
                raise
            except BaseException:
                release(permit)
                raise
            if check_results:
                finish_result(permit, result)
            elif listeners or events.global_listeners or permit.token:
                finish(permit, core.SUCCESS, result)
            elif permit.track or state.failures:
                count_success(permit)
            return result

        return breaker_call

    # -- context managers ------------------------------------------------------

    def _push(self, permit: core.Permit, frame: FrameType) -> None:
        """Remember ``permit`` as the one of the block that ``frame`` entered."""
        self._permits.set((*self._permits.get(), (permit, frame)))

    def _pop(self, frame: FrameType) -> core.Permit:
        """Forget and return the permit of the innermost block open in ``frame``.

        Blocks of one thread or task usually end innermost first, but not
        always: a generator that holds a block across a ``yield`` may be
        finished inside another block. The frame running the ``with`` finds
        its own block; a block entered and exited by hand from two frames
        ends the innermost one.
        """
        permits = self._permits.get()
        index = len(permits) - 1
        while index > 0 and permits[index][1] is not frame:
            index -= 1
        if permits[index][1] is not frame:
            index = len(permits) - 1
        self._permits.set(permits[:index] + permits[index + 1 :])
        return permits[index][0]

    def __enter__(self) -> CircuitBreaker:
        frame = sys._getframe(1)
        self._push(self._core.shared_permit or self._admit(frame), frame)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._end_block(self._pop(sys._getframe(1)), exc)

    def _end_block(self, permit: core.Permit, exc: BaseException | None) -> None:
        if exc is None:
            self._finish(permit, core.SUCCESS)
        elif isinstance(exc, Exception):
            self._finish_exception(permit, exc)
        else:
            self._release(permit)

    async def __aenter__(self) -> CircuitBreaker:
        frame = sys._getframe(1)
        self._push(self._core.shared_permit or self._admit(frame), frame)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._end_block(self._pop(sys._getframe(1)), exc)
