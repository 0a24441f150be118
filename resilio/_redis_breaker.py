"""A circuit breaker whose state lives in Redis, shared by every process that uses its name.

``CircuitBreaker(name=..., store=RedisStore(client))`` builds a
`RedisCircuitBreaker`. Each step of the state machine (admit, report an
outcome, look, isolate, reset) is one run of ``lua/breaker.lua``: the rules of
`resilio._core.breaker.BreakerCore`, applied atomically on the server, on the
server's clock (or the caller's, with ``time_source="caller"``).

What a call costs: one round trip to be admitted and one to report its
outcome, with two short cuts. A success in consecutive mode whose admission
saw no failures is not reported (it would only reset a counter that is
already zero), so a healthy breaker costs one round trip per call. An open
breaker is remembered until its known end, so calls rejected in that time
cost none. Concurrent async calls share round trips (`AsyncScriptRunner`).

When Redis fails, the store's ``on_error`` policy applies: ``"closed"``
raises `resilio.redis.RedisUnavailableError` before the call runs, ``"open"``
runs the call and counts nothing, ``"local"`` decides with this process's own
in-memory breaker (the one the parent class already holds). An outcome that
cannot be reported is dropped; a probe's slot then frees itself when its lease
ends.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType, TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

import anyio
import anyio.to_thread

from ._breaker import _STATES, CircuitBreaker, CircuitState, Probe
from ._core import breaker as core
from ._outcome import matches
from ._redis_scripts import Arg, AsyncScriptRunner, Script, run_script
from .redis import _FAILURES, RedisStore, RedisUnavailableError, _hash_tag, _is_outage

__all__ = ["RedisCircuitBreaker", "breaker_keys"]

P = ParamSpec("P")
T = TypeVar("T")

_SCRIPT: Final = Script("breaker")
_US: Final = 1_000_000
#: Seconds every key outlives the state it holds (at least; longer settings add to it).
KEEP: Final = 86_400.0

_ADMIT: Final = b"a"
_LOOK: Final = b"l"
_COMPLETE: Final = b"c"
_ISOLATE: Final = b"i"
_RESET: Final = b"r"


def breaker_keys(prefix: str, name: str) -> list[str]:
    """Return the Redis keys of the breaker ``name`` under ``prefix``.

    The state hash is ``<prefix>breaker:{<name>}``; the probes, the calls in
    flight and the window add ``:probes``, ``:calls`` and ``:window``. The
    braces are the Cluster hash tag, so one breaker's keys share a slot.
    """
    state = f"{prefix}breaker:{{{_hash_tag(name)}}}"
    return [state, f"{state}:probes", f"{state}:calls", f"{state}:window"]


def _micros(seconds: float | None) -> str:
    return "" if seconds is None else str(round(seconds * _US))


def _settings(config: core.BreakerConfig) -> tuple[str, ...]:
    """The script's ARGV[3..15] for ``config``."""
    width = None if config.window_duration is None else config.window_duration / core.TIME_BUCKETS
    longest = max(
        config.recovery_time,
        config.max_recovery_time or 0.0,
        config.half_open_timeout,
        config.window_duration or 0.0,
        config.slow_call_duration or 0.0,
    )
    return (
        "" if config.failure_threshold is None else str(config.failure_threshold),
        "" if config.failure_rate is None else repr(config.failure_rate),
        "" if config.window is None else str(config.window),
        _micros(width),
        str(config.minimum_calls),
        _micros(config.slow_call_duration),
        str(config.half_open_probes),
        str(config.success_threshold),
        _micros(config.recovery_time),
        _micros(config.max_recovery_time),
        repr(config.recovery_multiplier),
        _micros(config.half_open_timeout),
        _micros(KEEP + 2 * longest),
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RemotePermit(core.Permit):
    """A permit admitted by Redis, or by the local fallback breaker.

    Attributes:
        quiet: A success needs no report (consecutive mode, no failures seen
            at admission, nothing tracked).
        local: The fallback breaker's permit when Redis was down and the
            store falls back locally; None for a permit from Redis.
    """

    __slots__ = ("local", "quiet")

    def __init__(
        self,
        generation: int,
        token: int,
        started_at: float,
        *,
        quiet: bool = False,
        local: core.Permit | None = None,
    ) -> None:
        super().__init__(generation, token, started_at, True)
        self.quiet = quiet
        self.local = local


#: The permit of a call admitted because Redis failed and the store fails open.
_UNCOUNTED: Final = RemotePermit(-1, 0, 0.0, quiet=True)


class RedisCircuitBreaker(CircuitBreaker):
    """A `CircuitBreaker` whose state is shared through a `resilio.redis.RedisStore`.

    Built by ``CircuitBreaker(name=..., store=store)``; see that class for the
    options, and docs/redis.md for the trade-offs.
    """

    __slots__ = ("_keys", "_open_until", "_runner", "_settings", "_store")

    def __init__(self, name: str | None = None, *, store: Any = None, **options: Any) -> None:
        if not isinstance(store, RedisStore):
            raise TypeError(
                f"store= takes a resilio.redis.RedisStore (or None for this process's "
                f"memory), got {store!r}"
            )
        if name is None:
            raise TypeError(
                "a breaker shared through a store needs name=: every process that "
                "passes the same name shares one breaker"
            )
        super().__init__(name, **options)
        self._store = store
        self._keys = breaker_keys(store.prefix, self.name)
        self._settings = _settings(self.config)
        self._runner = AsyncScriptRunner(store.client, _SCRIPT) if store._async else None
        # Until when (breaker clock, seconds) this process knows the breaker is open.
        self._open_until = 0.0

    def __repr__(self) -> str:
        prefix = self._store.prefix
        return f"CircuitBreaker(name={self.name!r}, store=RedisStore(prefix={prefix!r}))"

    @property
    def store(self) -> RedisStore:
        """The store that holds this breaker's state."""
        return self._store

    @property
    def keys(self) -> list[str]:
        """The Redis keys of this breaker (see `breaker_keys`)."""
        return list(self._keys)

    # -- talking to Redis -------------------------------------------------------

    def _args(self, step: bytes, now: float, extra: Sequence[Arg]) -> list[Arg]:
        clock = b"" if self._store._server_time else round(now * _US)
        return [clock, step, *self._settings, *extra]

    def _run(
        self, step: bytes, now: float, extra: Sequence[Arg] = (), *, force: bool = False
    ) -> list[Any] | None:
        """Run one step on a sync client; None when Redis failed (the store noted it)."""
        store = self._store
        if (store._down_until or store._down_nodes) and not force and store._is_down(self._keys[0]):
            return None
        try:
            reply = run_script(store.client, _SCRIPT, self._keys, self._args(step, now, extra))
        except _FAILURES as exc:
            if not _is_outage(exc):
                raise
            store._failed(exc, self._keys[0])
            return None
        if store._last_error is not None:
            store._recovered(self._keys[0])
        return cast("list[Any]", reply)

    async def _run_async(
        self, step: bytes, now: float, extra: Sequence[Arg] = (), *, force: bool = False
    ) -> list[Any] | None:
        runner = self._runner
        if runner is None:
            return await anyio.to_thread.run_sync(lambda: self._run(step, now, extra, force=force))
        store = self._store
        if (store._down_until or store._down_nodes) and not force and store._is_down(self._keys[0]):
            return None
        try:
            reply = await runner(self._keys, self._args(step, now, extra))
        except _FAILURES as exc:
            if not _is_outage(exc):
                raise
            store._failed(exc, self._keys[0])
            return None
        if store._last_error is not None:
            store._recovered(self._keys[0])
        return cast("list[Any]", reply)

    def _read(
        self,
        reply: list[Any],
        now: float,
        result: object = None,
        exception: Exception | None = None,
    ) -> tuple[CircuitState, float]:
        """Take in a reply: remember an open period, emit its notices; return state and wait."""
        state = _STATES[_text(reply[1])]
        wait = math.inf if reply[5] < 0 else reply[5] / _US
        self._open_until = now + wait if state is CircuitState.OPEN and wait > 0 else 0.0
        if len(reply) > 7:
            notices = []
            for item in reply[7:]:
                kind, after, before, own = _text(item).split()
                previous = None if before == "-" else before
                notices.append(core.Notice(kind, after, now, previous, own == "1"))
            self._emit(notices, result, exception)
        return state, wait

    def _unavailable(self) -> RedisUnavailableError:
        return self._store._unavailable(f"breaker {self.name}")

    # -- admission --------------------------------------------------------------

    def _cached_rejection(self, now: float) -> None:
        if now < self._open_until:
            self._reject(CircuitState.OPEN, self._open_until - now, now)

    def _admitted(
        self, reply: list[Any] | None, now: float, entered_by: FrameType | None = None
    ) -> RemotePermit:
        if reply is None:
            return self._degraded_admit(entered_by)
        state, wait = self._read(reply, now)
        if not reply[0]:
            self._reject(state, wait, now)
        token = int(reply[3])
        quiet = token == 0 and reply[6] == 0 and self.config.failure_threshold is not None
        permit = RemotePermit(int(reply[2]), token, float(reply[4]), quiet=quiet)
        if state is CircuitState.HALF_OPEN and token:
            self._probe.set(Probe(permit, now + self.config.half_open_timeout, entered_by))
        return permit

    def _inside_probe(self, now: float) -> bool:
        """Whether this thread or task runs a probe of this breaker that a call at ``now`` joins."""
        probe = self._probe.get()
        return probe is not None and probe.covers(now)

    def _degraded_admit(self, entered_by: FrameType | None) -> RemotePermit:
        policy = self._store._on_error
        if policy == "closed":
            raise self._unavailable()
        if policy == "open":
            return _UNCOUNTED
        local = super()._admit(entered_by)
        return RemotePermit(local.generation, local.token, local.started_at, local=local)

    def _admit(self, entered_by: FrameType | None = None) -> core.Permit:
        now = self._now()
        if self._inside_probe(now):
            return _UNCOUNTED
        self._cached_rejection(now)
        return self._admitted(self._run(_ADMIT, now), now, entered_by)

    async def _admit_async(self, entered_by: FrameType | None = None) -> core.Permit:
        now = self._now()
        if self._inside_probe(now):
            return _UNCOUNTED
        self._cached_rejection(now)
        return self._admitted(await self._run_async(_ADMIT, now), now, entered_by)

    # -- outcomes ---------------------------------------------------------------

    def _local_only(
        self, permit: RemotePermit, verdict: str, result: object, exception: Exception | None
    ) -> bool:
        """Handle an outcome that Redis need not hear about; return whether it was one."""
        if permit is _UNCOUNTED:
            return True
        if permit.local is not None:
            super()._finish(permit.local, verdict, result, exception)
            return True
        if permit.token == 0 and (
            verdict in (core.IGNORED, core.RELEASED) or (verdict == core.SUCCESS and permit.quiet)
        ):
            # Counts nothing in Redis: tell the listeners what the core would have.
            if verdict != core.RELEASED:
                notice = core.Notice(verdict, core.CLOSED, self._now(), own=True)
                self._emit([notice], result, exception)
            return True
        return False

    def _report(self, permit: RemotePermit, verdict: str) -> tuple[bytes, Sequence[Arg]]:
        return _COMPLETE, (permit.generation, permit.token, round(permit.started_at), verdict)

    def _finish(
        self,
        permit: core.Permit,
        verdict: str,
        result: object = None,
        exception: Exception | None = None,
    ) -> None:
        permit = cast("RemotePermit", permit)
        if permit.token:
            self._probe_ended(permit)
        if self._local_only(permit, verdict, result, exception):
            return
        now = self._now()
        step, extra = self._report(permit, verdict)
        reply = self._run(step, now, extra)
        if reply is not None:
            self._read(reply, now, result, exception)

    async def _finish_async(
        self,
        permit: core.Permit,
        verdict: str,
        result: object = None,
        exception: Exception | None = None,
    ) -> None:
        permit = cast("RemotePermit", permit)
        if permit.token:
            self._probe_ended(permit)
        if self._local_only(permit, verdict, result, exception):
            return
        now = self._now()
        step, extra = self._report(permit, verdict)
        # Shielded: a cancelled caller still hands back its probe slot.
        with anyio.CancelScope(shield=True):
            reply = await self._run_async(step, now, extra)
        if reply is not None:
            self._read(reply, now, result, exception)

    def _verdict_of_exception(self, exc: Exception) -> str:
        if self._ignore is not None and matches(self._ignore.exception(exc)):
            return core.IGNORED
        return core.FAILURE if matches(self._on.exception(exc)) else core.SUCCESS

    def _verdict_of_result(self, result: object) -> str:
        if self._ignore is not None and matches(self._ignore.result(result)):
            return core.IGNORED
        return core.FAILURE if matches(self._on.result(result)) else core.SUCCESS

    async def _release_async(self, permit: core.Permit) -> None:
        if permit.token:
            await self._finish_async(permit, core.RELEASED)

    async def _finish_exception_async(self, permit: core.Permit, exc: Exception) -> None:
        try:
            verdict = self._verdict_of_exception(exc)
        except BaseException:
            await self._release_async(permit)
            raise
        await self._finish_async(permit, verdict, exception=exc)

    async def _finish_result_async(self, permit: core.Permit, result: object) -> None:
        try:
            verdict = self._verdict_of_result(result)
        except BaseException:
            await self._release_async(permit)
            raise
        await self._finish_async(permit, verdict, result)

    # -- public state -------------------------------------------------------------

    def _sync_only(self, what: str, instead: str) -> None:
        if self._store._async:
            raise TypeError(
                f"circuit breaker {self.name!r} keeps its state through an async Redis client "
                f"(redis.asyncio), so {what} cannot wait for it: use {instead}, "
                "or give the store a sync client"
            )

    def _check_target(self, is_async: bool) -> None:
        if not is_async:
            self._sync_only("a sync function", "an async def function")

    def _look_degraded(self) -> tuple[CircuitState, float]:
        policy = self._store._on_error
        if policy == "closed":
            raise self._unavailable()
        if policy == "open":
            return CircuitState.CLOSED, 0.0
        return CircuitBreaker.state.fget(self), CircuitBreaker.retry_after.fget(self)  # type: ignore[attr-defined]

    def _look(self) -> tuple[CircuitState, float]:
        self._sync_only("breaker.state and breaker.retry_after", "await breaker.state_async()")
        now = self._now()
        reply = self._run(_LOOK, now)
        return self._look_degraded() if reply is None else self._read(reply, now)

    async def _look_async(self) -> tuple[CircuitState, float]:
        now = self._now()
        reply = await self._run_async(_LOOK, now)
        return self._look_degraded() if reply is None else self._read(reply, now)

    @property
    def state(self) -> CircuitState:
        """The shared state, read from Redis (see `CircuitBreaker.state`)."""
        return self._look()[0]

    @property
    def retry_after(self) -> float:
        """Seconds until a call may be admitted, read from Redis (see `CircuitBreaker`)."""
        return self._look()[1]

    async def state_async(self) -> CircuitState:
        """Async twin of `state`."""
        return (await self._look_async())[0]

    async def retry_after_async(self) -> float:
        """Async twin of `retry_after`."""
        return (await self._look_async())[1]

    def _command(self, step: bytes, reply: list[Any] | None, now: float) -> None:
        if self._store._on_error == "local":
            # The fallback breaker follows the operator too, for when Redis fails later.
            CircuitBreaker.isolate(self) if step == _ISOLATE else CircuitBreaker.reset(self)
        if reply is None:
            raise self._unavailable()
        self._read(reply, now)

    def isolate(self) -> None:
        """Hold the shared breaker open for every process until `reset`."""
        self._sync_only("isolate()", "await breaker.isolate_async()")
        now = self._now()
        self._command(_ISOLATE, self._run(_ISOLATE, now, force=True), now)

    def reset(self) -> None:
        """Close the shared breaker for every process and clear its counts."""
        self._sync_only("reset()", "await breaker.reset_async()")
        now = self._now()
        self._command(_RESET, self._run(_RESET, now, force=True), now)

    async def isolate_async(self) -> None:
        """Async twin of `isolate`."""
        now = self._now()
        self._command(_ISOLATE, await self._run_async(_ISOLATE, now, force=True), now)

    async def reset_async(self) -> None:
        """Async twin of `reset`."""
        now = self._now()
        self._command(_RESET, await self._run_async(_RESET, now, force=True), now)

    # -- decorator and context managers -----------------------------------------

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        admit = self._admit
        finish = self._finish
        finish_result = self._finish_result
        finish_exception = self._finish_exception
        release = self._release
        check_results = self._checks_results()

        def breaker_call(*args: P.args, **kwargs: P.kwargs) -> T:
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
            else:
                finish(permit, core.SUCCESS, result)
            return result

        return breaker_call

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        admit = self._admit_async
        finish = self._finish_async
        finish_result = self._finish_result_async
        finish_exception = self._finish_exception_async
        release = self._release_async
        check_results = self._checks_results()

        async def breaker_call(*args: P.args, **kwargs: P.kwargs) -> T:
            permit = await admit()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                await finish_exception(permit, exc)
                raise
            except BaseException:
                await release(permit)
                raise
            if check_results:
                await finish_result(permit, result)
            else:
                await finish(permit, core.SUCCESS, result)
            return result

        return breaker_call

    def _checks_results(self) -> bool:
        return self._on.checks_results or (self._ignore is not None and self._ignore.checks_results)

    def __enter__(self) -> CircuitBreaker:
        self._sync_only("`with breaker:`", "`async with breaker:`")
        frame = sys._getframe(1)
        self._push(self._admit(frame), frame)
        return self

    async def __aenter__(self) -> CircuitBreaker:
        frame = sys._getframe(1)
        self._push(await self._admit_async(frame), frame)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        permit = self._pop(sys._getframe(1))
        if exc is None:
            await self._finish_async(permit, core.SUCCESS)
        elif isinstance(exc, Exception):
            await self._finish_exception_async(permit, exc)
        else:
            await self._release_async(permit)
