"""Where rate limiters keep their state: the `Store` protocol and `MemoryStore`.

A store applies limiter algorithms (from ``resilio._core.limiters``) to keys
atomically: for one request it evaluates every limit, and consumes the cost
in all of them or in none. The algorithms are pure; a store only adds storage,
atomicity and, for remote stores, its own notion of time.

`MemoryStore` is the embedded default: a dict per limit behind one lock, with
idle keys reclaimed as a side effect of normal traffic (no thread, no task).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ._core.limiters import US, Algorithm, Decision, Verdict, combine, make_decision

__all__ = ["MemoryStore", "Store"]


@runtime_checkable
class Store(Protocol):
    """The interface between rate limiters and their state.

    Every method takes the limits to apply (``limits``, one or more algorithm
    objects, each carrying its own ``name`` that namespaces its state), the
    user's ``key``, and for decisions the ``cost`` and the caller's time
    ``now`` in integer microseconds. A store that keeps time itself (the Redis
    store reads the server's clock) may ignore ``now``; answers are relative
    durations in any case. Such a store says so with an attribute
    ``keeps_time`` that is true (optional; absent means false): a waiting
    limiter on a clock that need not pass in real time (a fake one) then
    makes its pauses last in real time too, since only real time moves the
    store's clock.

    Decisions over several limits are all or nothing: if any limit rejects,
    nothing is consumed in any of them.

    A store built on an async client implements only the ``_async`` methods;
    its sync methods raise ``TypeError`` saying so. A sync store's async
    methods may simply call the sync ones when they never block for long.
    """

    def acquire(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> Decision:
        """Consume ``cost`` from ``key`` under every limit if all allow it; never blocks."""
        ...

    def allow(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        """Like `acquire`, answering only whether the request was admitted."""
        ...

    def peek(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> Decision:
        """Return the decision `acquire` would make now, consuming nothing."""
        ...

    def reset(self, limits: Sequence[Algorithm], key: str) -> None:
        """Forget ``key`` under every limit in ``limits``: it is fully available again."""
        ...

    async def acquire_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int
    ) -> Decision:
        """Async twin of `acquire`."""
        ...

    async def allow_async(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        """Async twin of `allow`."""
        ...

    async def peek_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int
    ) -> Decision:
        """Async twin of `peek`."""
        ...

    async def reset_async(self, limits: Sequence[Algorithm], key: str) -> None:
        """Async twin of `reset`."""
        ...


# The latest time (µs) a new store has seen: before any clock's, negative ones
# included (a fake or skewed clock may read below zero).
_BEFORE_ANY_TIME = -(2**62)


def _as_is(limit: Algorithm, state: Any, now: int) -> Verdict:
    remaining, reset = limit.rest(state, now)
    return True, remaining, 0, reset


class MemoryStore:
    """Limiter state in this process's memory; the default store.

    One lock guards every key, held only for the few microseconds a decision
    takes, never while anybody sleeps. Keys back at their initial state (a
    full bucket, an expired window) are reclaimed by a sweep that runs inline
    once the number of operations since the last sweep reaches the number of
    keys held (at least ``sweep_every``), so the amortized cost per operation
    is O(1), memory stays proportional to the keys that are still limited,
    and no thread or task exists per key or per store. A key that is still
    limited is never dropped.

    Time never runs backwards inside a store: a decision made with an earlier
    ``now`` than one already seen (two threads that read the clock in one
    order and took the lock in the other) is made at the latest time seen.
    Use one clock per store.

    Args:
        sweep_every: The least number of operations between two sweeps.
    """

    __slots__ = (
        "__weakref__",
        "_clocks",
        "_lock",
        "_next_sweep",
        "_now",
        "_ops",
        "_sweep_every",
        "_tables",
    )

    def __init__(self, *, sweep_every: int = 1024) -> None:
        if isinstance(sweep_every, bool) or not isinstance(sweep_every, int) or sweep_every < 1:
            raise ValueError(f"sweep_every must be a positive integer, got {sweep_every!r}")
        self._lock = threading.Lock()
        # limit name -> (algorithm, {key: state})
        self._tables: dict[str, tuple[Algorithm, dict[str, Any]]] = {}
        # limit name -> the clock its states were stamped with (see _use_clock)
        self._clocks: dict[str, object] = {}
        self._now = _BEFORE_ANY_TIME
        self._ops = 0
        self._sweep_every = sweep_every
        self._next_sweep = sweep_every

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self)})"

    def __len__(self) -> int:
        """The number of (limit, key) states held."""
        with self._lock:
            return sum(len(table) for _, table in self._tables.values())

    def _table(self, limit: Algorithm) -> dict[str, Any]:
        entry = self._tables.get(limit.name)
        if entry is None:
            entry = self._tables[limit.name] = (limit, {})
        elif entry[0] is not limit and (
            entry[0].kind != limit.kind or entry[0].params != limit.params
        ):
            raise ValueError(
                f"two different limits share the name {limit.name!r} in one store: "
                "give each limiter its own name="
            )
        return entry[1]

    def _tick(self, now: int) -> int:
        """Count one operation at ``now``, never earlier than the latest seen; sweep when due.

        Called with the lock held. Returns the time the operation is decided at.
        """
        if now < self._now:
            now = self._now
        else:
            self._now = now
        self._ops += 1
        if self._ops >= self._next_sweep:
            self._sweep_locked(now)
        return now

    def _decide(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int, commit: bool
    ) -> Decision:
        # Called with the lock held.
        now = self._tick(now)
        if len(limits) == 1:
            limit = limits[0]
            table = self._table(limit)
            state = table.get(key)
            allowed, remaining, retry_us, reset_us = limit.evaluate(state, now, cost)
            if allowed and commit:
                table[key] = limit.commit(state, now, cost)
            return make_decision(allowed, remaining, retry_us / US, reset_us / US, limit.capacity)
        tables = []
        states = []
        verdicts: list[Verdict] = []
        allowed = True
        for limit in limits:
            table = self._table_of(limit)
            state = table.get(key)
            verdict = limit.evaluate(state, now, cost)
            tables.append(table)
            states.append(state)
            verdicts.append(verdict)
            allowed = allowed and verdict[0]
        if not allowed:
            # Parts that would admit consume nothing after all: report them as they are.
            verdicts = [
                _as_is(limit, state, now) if verdict[0] else verdict
                for limit, state, verdict in zip(limits, states, verdicts, strict=True)
            ]
        decision = combine(verdicts, limits)
        if allowed and commit:
            for index, limit in enumerate(limits):
                tables[index][key] = limit.commit(states[index], now, cost)
        return decision

    def _admit_all(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        """`allow` on several limits: no verdicts reported, so none built past a rejection."""
        # Called with the lock held.
        now = self._tick(now)
        tables = []
        states = []
        for limit in limits:
            table = self._table_of(limit)
            state = table.get(key)
            if not limit.evaluate(state, now, cost)[0]:
                return False
            tables.append(table)
            states.append(state)
        for index, limit in enumerate(limits):
            tables[index][key] = limit.commit(states[index], now, cost)
        return True

    def _table_of(self, limit: Algorithm) -> dict[str, Any]:
        """`_table`, with the usual case (the very limit object already seen) first."""
        entry = self._tables.get(limit.name)
        return entry[1] if entry is not None and entry[0] is limit else self._table(limit)

    def acquire(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> Decision:
        """See `Store.acquire`."""
        with self._lock:
            if len(limits) != 1:
                return self._decide(limits, key, cost, now, True)
            # One limit: its table found by name, its algorithm's own fast path.
            now = self._tick(now)
            limit = limits[0]
            return limit.take_in(self._table_of(limit), key, now, cost)

    def allow(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        """See `Store.allow`."""
        with self._lock:
            if len(limits) != 1:
                return self._admit_all(limits, key, cost, now)
            now = self._tick(now)
            limit = limits[0]
            return limit.admit_in(self._table_of(limit), key, now, cost)

    def _bind(self, limit: Algorithm) -> tuple[threading.Lock, dict[str, Any], int]:
        """Return the lock, ``limit``'s table of states and the operations until the next sweep.

        For a caller that decides inline, the hottest path in resilio (a rate
        limiter of one limit in memory, see ``resilio._inline``): it holds the
        lock, reads the clock under it, applies the guard `_tick` applies,
        runs the algorithm's ``TAKE`` or ``ADMIT`` source on the table, and
        counts its operations down from the number returned here, then from
        the one `_swept` returns. Tables are never replaced once created
        (sweeps and resets only remove keys), so the caller may hold on to
        this one.
        """
        with self._lock:
            # Binding counts as an operation of the store's own: limiters built per
            # request make one decision each, too few to reach their countdown.
            self._tick(self._now)
            return self._lock, self._table(limit), max(1, self._next_sweep - self._ops)

    def _use_clock(self, limits: Sequence[Algorithm], clock: object) -> None:
        """Note that ``limits`` decide on ``clock`` from now on.

        Times of two clocks do not compare: the states of a limit last
        decided on another clock are dropped, and time starts again. Limiter
        objects that share a limit (one name) share this record, so the
        second one to follow a swap drops nothing the first decided since.
        """
        with self._lock:
            restarted = False
            for limit in limits:
                seen = self._clocks.get(limit.name)
                if seen is not clock:
                    if seen is not None:
                        self._table(limit).clear()
                        restarted = True
                    self._clocks[limit.name] = clock
            if restarted:
                self._now = _BEFORE_ANY_TIME

    def _swept(self, now: int) -> int:
        """Sweep at ``now`` for an inline caller (lock held); return the operations until the next.

        Each inline caller counts its own operations, so a sweep of the keys
        held happens at least every that many operations of each: still O(1)
        amortized per operation.
        """
        self._sweep_locked(now)
        return self._next_sweep - self._ops

    def peek(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> Decision:
        """See `Store.peek`."""
        with self._lock:
            return self._decide(limits, key, cost, now, False)

    def reset(self, limits: Sequence[Algorithm], key: str) -> None:
        """See `Store.reset`."""
        with self._lock:
            for limit in limits:
                self._table(limit).pop(key, None)

    async def acquire_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int
    ) -> Decision:
        """See `Store.acquire_async`; the lock is held for microseconds, so no await."""
        return self.acquire(limits, key, cost, now)

    async def allow_async(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        """See `Store.allow_async`."""
        return self.allow(limits, key, cost, now)

    async def peek_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int
    ) -> Decision:
        """See `Store.peek_async`."""
        return self.peek(limits, key, cost, now)

    async def reset_async(self, limits: Sequence[Algorithm], key: str) -> None:
        """See `Store.reset_async`."""
        self.reset(limits, key)

    def sweep(self, now: int | None = None) -> int:
        """Drop every key back at its initial state; return how many were dropped.

        Args:
            now: The time in integer microseconds; defaults to the latest time
                this store has seen.
        """
        with self._lock:
            if now is not None and now > self._now:
                self._now = now
            return self._sweep_locked(self._now)

    def _sweep_locked(self, now: int) -> int:
        dropped = 0
        held = 0
        for limit, table in self._tables.values():
            idle = limit.idle
            dead = [key for key, state in table.items() if idle(state, now)]
            for key in dead:
                del table[key]
            dropped += len(dead)
            held += len(table)
        self._next_sweep = self._ops + max(self._sweep_every, held)
        return dropped
