"""Rate limiting algorithms as pure functions of (state, now, cost).

Nothing here sleeps, awaits, locks or reads a clock: the store passes the time
in, as an integer number of microseconds, and keeps the state. States are
small values made of integers (one integer for the buckets, three for the
windows, a log of (timestamp, cost) pairs for the exact sliding log), so a
store that lives elsewhere (a Lua script in Redis) can hold them and give the
same answers: every quantity stays an integer below 2**53, which a double
(Lua's only number type) represents exactly.

Each algorithm answers in two steps so several limits can be applied all or
nothing: `evaluate` says whether ``cost`` fits now (it may drop expired data
from a state but never consumes), and `commit` consumes ``cost`` and returns
the state to store.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Final

from .fastpath import compile_function, indent

__all__ = [
    "US",
    "Algorithm",
    "Decision",
    "FixedWindowAlgorithm",
    "GcraAlgorithm",
    "LeakyAlgorithm",
    "SlidingLog",
    "SlidingLogAlgorithm",
    "SlidingWindowAlgorithm",
    "Verdict",
    "combine",
    "make_decision",
    "parse_limit",
    "to_us",
]

US: Final = 1_000_000
"""Microseconds per second: the unit of every time inside the core."""

# (allowed, remaining, retry_after_us, reset_after_us)
Verdict = tuple[bool, int, int, int]


def to_us(seconds: float) -> int:
    """Return ``seconds`` as a whole number of microseconds (nearest)."""
    return round(seconds * US)


class Decision(tuple):  # type: ignore[type-arg]
    """What a rate limiter decided for one request; immutable.

    A decision is true when the request was allowed, so ``if
    limiter.try_acquire(key):`` reads naturally.

    Attributes:
        allowed: Whether the request was admitted (and its cost consumed).
        remaining: Units that could still be admitted at once after this
            decision, under the most constraining limit.
        retry_after: Seconds until a request of the same cost would be
            admitted, if nothing else is consumed meanwhile; ``0.0`` when
            allowed.
        reset_after: Seconds until the key is back to its initial, fully
            available state, if nothing else is consumed meanwhile.
        limit: The capacity (bucket size or window limit) of the most
            constraining limit.
    """

    # A tuple subclass: as cheap to build as a slotted object, and truly immutable.
    __slots__ = ()

    def __new__(
        cls, allowed: bool, remaining: int, retry_after: float, reset_after: float, limit: int
    ) -> Decision:
        """Build a decision; times in seconds."""
        return tuple.__new__(cls, (allowed, remaining, retry_after, reset_after, limit))

    @property
    def allowed(self) -> bool:
        """Whether the request was admitted."""
        return self[0]  # type: ignore[no-any-return]

    @property
    def remaining(self) -> int:
        """Units still available at once after this decision."""
        return self[1]  # type: ignore[no-any-return]

    @property
    def retry_after(self) -> float:
        """Seconds until the same cost fits; 0.0 when allowed."""
        return self[2]  # type: ignore[no-any-return]

    @property
    def reset_after(self) -> float:
        """Seconds until the key is back to its initial state."""
        return self[3]  # type: ignore[no-any-return]

    @property
    def limit(self) -> int:
        """The capacity of the most constraining limit."""
        return self[4]  # type: ignore[no-any-return]

    def __bool__(self) -> bool:
        return self[0]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self[0]}, remaining={self[1]}, retry_after={self[2]}, "
            f"reset_after={self[3]}, limit={self[4]})"
        )


_new_tuple = tuple.__new__


def make_decision(
    allowed: bool, remaining: int, retry_after: float, reset_after: float, limit: int
) -> Decision:
    """Build a `Decision` without the cost of a Python-level ``__new__``."""
    return _new_tuple(Decision, (allowed, remaining, retry_after, reset_after, limit))


class Algorithm:
    """One limit: its parameters, and how a state answers a request.

    Attributes:
        name: Namespace of this limit's state inside a store. Two limits with
            the same name in one store share their state.
        kind: The algorithm's identifier (``"gcra"``, ``"leaky"``,
            ``"fixed_window"``, ``"sliding_window"``, ``"sliding_log"``).
        params: The integer parameters a remote store needs, in µs and units.
        capacity: The largest cost one request may ask for.
    """

    __slots__ = ("capacity", "name")

    kind: str = ""
    name: str
    capacity: int

    @property
    def params(self) -> tuple[int, ...]:
        """The integer parameters that define this limit (times in µs)."""
        raise NotImplementedError

    def default_name(self) -> str:
        """A name derived from the kind and the parameters."""
        return ":".join([self.kind, *map(str, self.params)])

    def evaluate(self, state: Any, now: int, cost: int) -> Verdict:
        """Say whether ``cost`` fits in ``state`` at ``now`` (µs), consuming nothing."""
        raise NotImplementedError

    def commit(self, state: Any, now: int, cost: int) -> Any:
        """Consume ``cost`` at ``now`` (µs); return the state to store."""
        raise NotImplementedError

    def rest(self, state: Any, now: int) -> tuple[int, int]:
        """(remaining units, µs until initial) of ``state`` as it is, with no request."""
        raise NotImplementedError

    def idle(self, state: Any, now: int) -> bool:
        """Whether ``state`` is back to the initial state at ``now`` and may be dropped."""
        raise NotImplementedError

    # The in-memory fast paths, as the source of a function body: TAKE answers a
    # `Decision`, ADMIT a bool. Each is compiled into the method below of the same
    # name and, by resilio._inline, into limiters' one-frame decisions (see
    # resilio._core.fastpath). They may use ``table``, ``key``, ``now``, ``cost``,
    # ``self``, this module's globals, and the attributes named in FAST_LOCALS,
    # read into local variables of the same names.
    TAKE: ClassVar[str] = ""
    ADMIT: ClassVar[str] = ""
    FAST_LOCALS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method, source in (("take_in", "TAKE"), ("admit_in", "ADMIT")):
            if source in cls.__dict__:
                setattr(cls, method, _fast_method(cls, method, cls.__dict__[source]))

    def take_in(self, table: dict[str, Any], key: str, now: int, cost: int) -> Decision:
        """Decide for ``key`` in ``table`` (a dict of states), consuming when allowed.

        The in-memory fast path: `evaluate` then `commit` in one call.
        Subclasses write it out (``TAKE``); the answers are the same.
        """
        state = table.get(key)
        allowed, remaining, retry_us, reset_us = self.evaluate(state, now, cost)
        if allowed:
            table[key] = self.commit(state, now, cost)
        return _new_tuple(
            Decision, (allowed, remaining, retry_us / US, reset_us / US, self.capacity)
        )

    def admit_in(self, table: dict[str, Any], key: str, now: int, cost: int) -> bool:
        """Like `take_in`, answering only whether ``cost`` was admitted."""
        state = table.get(key)
        if self.evaluate(state, now, cost)[0]:
            table[key] = self.commit(state, now, cost)
            return True
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def fast_locals(algorithm: type[Algorithm], owner: str) -> str:
    """The lines that read ``algorithm.FAST_LOCALS`` from ``owner`` into local variables."""
    return "".join(f"{name} = {owner}.{name}\n" for name in algorithm.FAST_LOCALS)


def _fast_method(algorithm: type[Algorithm], method: str, body: str) -> Any:
    """Compile ``body`` (a TAKE or ADMIT source) into ``algorithm``'s method ``method``."""
    source = (
        f"def {method}(self, table, key, now, cost):\n"
        + indent(fast_locals(algorithm, "self"), 1)
        + indent(body, 1)
    )
    function = compile_function(source, method, f"{algorithm.__name__}.{method}", globals())
    function.__qualname__ = f"{algorithm.__name__}.{method}"
    function.__doc__ = f"See `Algorithm.{method}`; compiled from ``{method[:-3].upper()}``."
    return function


class GcraAlgorithm(Algorithm):
    """Token bucket as the generic cell rate algorithm: one timestamp per key.

    The state is the theoretical arrival time (TAT): the time at which the
    bucket would be full again. A request of cost n moves it n emission
    intervals forward, and is admitted when the new TAT is at most
    ``capacity`` intervals ahead of now.
    """

    __slots__ = ("interval", "tolerance")

    kind = "gcra"

    def __init__(self, interval: int, capacity: int, name: str = "") -> None:
        self.interval = interval
        self.capacity = capacity
        self.tolerance = interval * capacity
        self.name = name or self.default_name()

    @property
    def params(self) -> tuple[int, ...]:
        """(emission interval µs, capacity)."""
        return (self.interval, self.capacity)

    def evaluate(self, state: int | None, now: int, cost: int) -> Verdict:
        """See `Algorithm.evaluate`."""
        tat = now if state is None or state < now else state
        new_tat = tat + cost * self.interval
        allow_at = new_tat - self.tolerance
        if allow_at <= now:
            return True, (now - allow_at) // self.interval, 0, new_tat - now
        return False, (now + self.tolerance - tat) // self.interval, allow_at - now, tat - now

    def commit(self, state: int | None, now: int, cost: int) -> int:
        """See `Algorithm.commit`."""
        tat = now if state is None or state < now else state
        return tat + cost * self.interval

    def rest(self, state: int | None, now: int) -> tuple[int, int]:
        """See `Algorithm.rest`."""
        tat = now if state is None or state < now else state
        return (now + self.tolerance - tat) // self.interval, tat - now

    FAST_LOCALS = ("interval", "tolerance", "capacity")
    TAKE = """
        state = table.get(key)
        tat = now if state is None or state < now else state
        new_tat = tat + cost * interval
        allow_at = new_tat - tolerance
        if allow_at <= now:
            table[key] = new_tat
            return _new_tuple(
                Decision, (True, (now - allow_at) // interval, 0.0, (new_tat - now) / US, capacity)
            )
        left = (now + tolerance - tat) // interval
        retry = (allow_at - now) / US
        return _new_tuple(Decision, (False, left, retry, (tat - now) / US, capacity))
    """
    ADMIT = """
        state = table.get(key)
        new_tat = (now if state is None or state < now else state) + cost * interval
        if new_tat - tolerance <= now:
            table[key] = new_tat
            return True
        return False
    """

    def idle(self, state: int, now: int) -> bool:
        """See `Algorithm.idle`."""
        return state <= now


class LeakyAlgorithm(Algorithm):
    """Leaky bucket as a shaper: admissions leave at a constant rate, no burst.

    The state is the time at which the bucket has drained everything admitted
    so far. A request is admitted only when the bucket is empty; its cost then
    takes ``cost`` intervals to drain. ``capacity`` bounds what may wait in the
    queue in front of the bucket (the driver enforces it), and the cost of one
    request.
    """

    __slots__ = ("interval",)

    kind = "leaky"

    def __init__(self, interval: int, capacity: int, name: str = "") -> None:
        self.interval = interval
        self.capacity = capacity
        self.name = name or self.default_name()

    @property
    def params(self) -> tuple[int, ...]:
        """(emission interval µs, queue capacity)."""
        return (self.interval, self.capacity)

    def evaluate(self, state: int | None, now: int, cost: int) -> Verdict:
        """See `Algorithm.evaluate`."""
        if state is None or state <= now:
            return True, 0, 0, cost * self.interval
        return False, 0, state - now, state - now

    def commit(self, state: int | None, now: int, cost: int) -> int:
        """See `Algorithm.commit`."""
        return now + cost * self.interval

    def rest(self, state: int | None, now: int) -> tuple[int, int]:
        """See `Algorithm.rest`."""
        return 0, 0 if state is None or state <= now else state - now

    FAST_LOCALS = ("interval", "capacity")
    TAKE = """
        state = table.get(key)
        if state is None or state <= now:
            drain = cost * interval
            table[key] = now + drain
            return _new_tuple(Decision, (True, 0, 0.0, drain / US, capacity))
        wait = (state - now) / US
        return _new_tuple(Decision, (False, 0, wait, wait, capacity))
    """
    ADMIT = """
        state = table.get(key)
        if state is None or state <= now:
            table[key] = now + cost * interval
            return True
        return False
    """

    def idle(self, state: int, now: int) -> bool:
        """See `Algorithm.idle`."""
        return state <= now


class FixedWindowAlgorithm(Algorithm):
    """At most ``limit`` units per window; windows are aligned on multiples of their length.

    The state is (window index, units used in it).
    """

    __slots__ = ("window",)

    kind = "fixed_window"

    def __init__(self, limit: int, window: int, name: str = "") -> None:
        self.capacity = limit
        self.window = window
        self.name = name or self.default_name()

    @property
    def params(self) -> tuple[int, ...]:
        """(limit, window µs)."""
        return (self.capacity, self.window)

    def evaluate(self, state: tuple[int, int] | None, now: int, cost: int) -> Verdict:
        """See `Algorithm.evaluate`."""
        index = now // self.window
        used = state[1] if state is not None and state[0] >= index else 0
        left = (index + 1) * self.window - now
        if used + cost <= self.capacity:
            return True, self.capacity - used - cost, 0, left
        return False, self.capacity - used, left, left

    def commit(self, state: tuple[int, int] | None, now: int, cost: int) -> tuple[int, int]:
        """See `Algorithm.commit`."""
        index = now // self.window
        if state is not None and state[0] >= index:
            return (state[0], state[1] + cost)
        return (index, cost)

    def rest(self, state: tuple[int, int] | None, now: int) -> tuple[int, int]:
        """See `Algorithm.rest`."""
        index = now // self.window
        used = state[1] if state is not None and state[0] >= index else 0
        return self.capacity - used, (index + 1) * self.window - now if used else 0

    FAST_LOCALS = ("window", "capacity")
    TAKE = """
        state = table.get(key)
        index = now // window
        if state is not None and state[0] >= index:
            index, used = state
        else:
            used = 0
        after = used + cost
        left = (window - now % window) / US  # to the end of the window `now` is in
        if after <= capacity:
            table[key] = (index, after)
            return _new_tuple(Decision, (True, capacity - after, 0.0, left, capacity))
        return _new_tuple(Decision, (False, capacity - used, left, left, capacity))
    """
    ADMIT = """
        state = table.get(key)
        index = now // window
        if state is not None and state[0] >= index:
            index, used = state
        else:
            used = 0
        used += cost
        if used <= capacity:
            table[key] = (index, used)
            return True
        return False
    """

    def idle(self, state: tuple[int, int], now: int) -> bool:
        """See `Algorithm.idle`."""
        return state[0] < now // self.window or state[1] == 0


class SlidingWindowAlgorithm(Algorithm):
    """The sliding-window counter: two aligned windows, the previous one weighted.

    The estimate at elapsed time ``e`` into the current window is
    ``previous * (window - e) / window + current``; a request is admitted when
    the estimate plus its cost is at most ``limit``. All comparisons are done
    multiplied by ``window`` so they stay in integers. The state is
    (window index, current count, previous count).
    """

    __slots__ = ("window",)

    kind = "sliding_window"

    def __init__(self, limit: int, window: int, name: str = "") -> None:
        self.capacity = limit
        self.window = window
        self.name = name or self.default_name()

    @property
    def params(self) -> tuple[int, ...]:
        """(limit, window µs)."""
        return (self.capacity, self.window)

    def _counts(self, state: tuple[int, int, int] | None, index: int) -> tuple[int, int]:
        if state is None:
            return 0, 0
        if state[0] >= index:
            return state[1], state[2]
        if state[0] == index - 1:
            return 0, state[1]
        return 0, 0

    def evaluate(self, state: tuple[int, int, int] | None, now: int, cost: int) -> Verdict:
        """See `Algorithm.evaluate`."""
        window, limit = self.window, self.capacity
        index = now // window
        elapsed = now - index * window
        current, previous = self._counts(state, index)
        weighted = previous * (window - elapsed)
        after = current + cost
        if weighted + after * window <= limit * window:
            return (
                True,
                (limit * window - weighted - after * window) // window,
                0,
                2 * window - elapsed,
            )
        return self._rejected(current, previous, elapsed, cost)

    def _rejected(self, current: int, previous: int, elapsed: int, cost: int) -> Verdict:
        """The verdict for a cost that does not fit, from the counts and time into the window."""
        window, limit = self.window, self.capacity
        # floor(limit - current - previous's weight), without the limit's products
        remaining = limit - current + -(previous * (window - elapsed)) // window
        if remaining < 0:
            remaining = 0
        if current:
            reset = 2 * window - elapsed
        elif previous:
            reset = window - elapsed
        else:
            reset = 0
        if current + cost <= limit:
            # The previous window's weight decays enough within this window.
            fits_at = window - ((limit - current - cost) * window) // previous
            return False, remaining, fits_at - elapsed, reset
        # Only in the next window, where this window's count is the previous one.
        fits_at = window - ((limit - cost) * window) // current
        return False, remaining, window - elapsed + fits_at, reset

    def commit(
        self, state: tuple[int, int, int] | None, now: int, cost: int
    ) -> tuple[int, int, int]:
        """See `Algorithm.commit`."""
        index = now // self.window
        current, previous = self._counts(state, index)
        return (max(index, state[0]) if state else index, current + cost, previous)

    def rest(self, state: tuple[int, int, int] | None, now: int) -> tuple[int, int]:
        """See `Algorithm.rest`."""
        window, limit = self.window, self.capacity
        index = now // window
        elapsed = now - index * window
        current, previous = self._counts(state, index)
        remaining = max(
            0, (limit * window - previous * (window - elapsed) - current * window) // window
        )
        if current:
            return remaining, 2 * window - elapsed
        return remaining, window - elapsed if previous else 0

    def idle(self, state: tuple[int, int, int], now: int) -> bool:
        """See `Algorithm.idle`."""
        current, previous = self._counts(state, now // self.window)
        return current == 0 and previous == 0

    FAST_LOCALS = ("window", "capacity")
    # Both read the counts as `_counts` does, then test as `evaluate` does with the
    # limit's products taken apart (the same answers with fewer operations on
    # numbers that may pass 2**62), weighing the previous window only when it
    # counted anything.
    _COUNTS = """
        state = table.get(key)
        index = now // window
        if state is None:
            current = previous = 0
        elif state[0] >= index:
            index, current, previous = state
        elif state[0] == index - 1:
            current, previous = 0, state[1]
        else:
            current = previous = 0
    """
    TAKE = (
        _COUNTS
        + """
        elapsed = now % window
        after = current + cost
        if previous:
            weighted = previous * (window - elapsed)
            if weighted <= (capacity - after) * window:
                table[key] = (index, after, previous)
                left, reset = capacity - after + -weighted // window, (2 * window - elapsed) / US
                return _new_tuple(Decision, (True, left, 0.0, reset, capacity))
        elif after <= capacity:
            table[key] = (index, after, 0)
            reset = (2 * window - elapsed) / US
            return _new_tuple(Decision, (True, capacity - after, 0.0, reset, capacity))
        else:
            # `_rejected` with no previous window: room comes only in the next one.
            reset = 2 * window - elapsed
            retry = (reset - ((capacity - cost) * window) // current) / US
            return _new_tuple(Decision, (False, capacity - current, retry, reset / US, capacity))
        _, remaining, retry_us, reset_us = self._rejected(current, previous, elapsed, cost)
        return _new_tuple(Decision, (False, remaining, retry_us / US, reset_us / US, capacity))
    """
    )
    ADMIT = (
        _COUNTS
        + """
        current += cost
        if previous:
            if previous * (window - now % window) > (capacity - current) * window:
                return False
        elif current > capacity:
            return False
        table[key] = (index, current, previous)
        return True
    """
    )


_NEVER: Final = 2**62  # a time (µs) no clock reaches


# An admission in a sliding log: its time (µs) alone when it cost 1, the usual
# case (an int takes a third of the memory of a pair, and no time to build), or
# (time, cost).
LogEntry = int | tuple[int, int]


def _stamp_and_cost(entry: LogEntry) -> tuple[int, int]:
    return (entry, 1) if entry.__class__ is int else entry  # type: ignore[return-value]


class SlidingLog:
    """The mutable state of a sliding log.

    Attributes:
        entries: The admissions, oldest first, from ``head`` on still counted
            (those before it are dropped in bulk, now and then): each its time
            (µs) when it cost 1, else (time µs, cost). Empty when none counts.
        head: Where the admissions still counted start in ``entries``.
        total: The sum of their costs.
        expires: When the oldest entry leaves the window (µs); never while empty.
    """

    # A list, not a deque: a deque takes a block of 64 places (over 600 bytes)
    # from its first entry, a list a few bytes per entry.
    __slots__ = ("entries", "expires", "head", "total")

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.head = 0
        self.total = 0
        self.expires = _NEVER

    def counted(self) -> Iterator[tuple[int, int]]:
        """(time µs, cost) of the admissions still counted, oldest first."""
        return map(_stamp_and_cost, itertools.islice(self.entries, self.head, None))

    def newest(self) -> int:
        """The time (µs) of the latest admission; the log must not be empty."""
        return _stamp_and_cost(self.entries[-1])[0]

    def __repr__(self) -> str:
        return f"SlidingLog(total={self.total}, entries={list(self.counted())})"


class SlidingLogAlgorithm(Algorithm):
    """The exact sliding window: a log of admissions within the last window.

    An admission at time t counts while ``now < t + window``. Memory is one
    entry per admission within the window, so at most ``limit`` entries per key.
    """

    __slots__ = ("window",)

    kind = "sliding_log"

    def __init__(self, limit: int, window: int, name: str = "") -> None:
        self.capacity = limit
        self.window = window
        self.name = name or self.default_name()

    @property
    def params(self) -> tuple[int, ...]:
        """(limit, window µs)."""
        return (self.capacity, self.window)

    def _prune(self, log: SlidingLog, now: int) -> None:
        # Dropping expired entries changes no answer, so evaluate may do it.
        entries, head = log.entries, log.head
        end, horizon = len(entries), now - self.window
        while head < end:
            stamp, used = _stamp_and_cost(entries[head])
            if stamp > horizon:
                break
            head += 1
            log.total -= used
        else:
            entries.clear()
            log.head, log.expires = 0, _NEVER
            return
        if head > 32 and 2 * head > end:  # drop the dead half: O(1) per entry in all
            del entries[:head]
            head = 0
        log.head, log.expires = head, stamp + self.window

    def evaluate(self, state: SlidingLog | None, now: int, cost: int) -> Verdict:
        """See `Algorithm.evaluate`."""
        if state is None:
            return True, self.capacity - cost, 0, self.window
        self._prune(state, now)
        total = state.total
        if total + cost <= self.capacity:
            return True, self.capacity - total - cost, 0, self.window
        return self._rejected(state, now, cost)

    def _rejected(self, log: SlidingLog, now: int, cost: int) -> Verdict:
        """The verdict for a cost that does not fit in ``log``, pruned at ``now``."""
        total, entries, window = log.total, log.entries, self.window
        # Written out (entry[0] of a pair, the int itself else): it is the reject path.
        newest, oldest = entries[-1], entries[log.head]
        reset = (newest if newest.__class__ is int else newest[0]) + window - now  # type: ignore[index]
        need = total + cost - self.capacity
        if need <= 1:  # the usual case: the oldest admission frees enough
            stamp = oldest if oldest.__class__ is int else oldest[0]  # type: ignore[index]
            return False, self.capacity - total, stamp + window - now, reset
        freed = 0
        for stamp, used in log.counted():  # pragma: no branch - need <= total
            freed += used
            if freed >= need:
                return False, self.capacity - total, stamp + self.window - now, reset
        raise AssertionError("unreachable: cost <= limit")  # pragma: no cover

    def commit(self, state: SlidingLog | None, now: int, cost: int) -> SlidingLog:
        """See `Algorithm.commit`."""
        table = {} if state is None else {"": state}
        self.admit_in(table, "", now, cost)  # evaluated before: the cost fits
        return table[""]

    def rest(self, state: SlidingLog | None, now: int) -> tuple[int, int]:
        """See `Algorithm.rest`."""
        if state is None:
            return self.capacity, 0
        self._prune(state, now)
        if not state.entries:
            return self.capacity, 0
        return self.capacity - state.total, state.newest() + self.window - now

    FAST_LOCALS = ("window", "capacity")
    # Both add to a log in one way (which `commit` uses too), and answer apart. A
    # log is pruned only when its oldest entry expired: a call costs more than that.
    _ADD = """
        log = table.get(key)
        if log is None:
            log = table[key] = SlidingLog()
        elif now >= log.expires:
            self._prune(log, now)
        total = log.total + cost
        if total > capacity:
            {rejected}
        entries = log.entries
        if not entries:
            log.expires = now + window
        entries.append(now if cost == 1 else (now, cost))
        log.total = total
        {admitted}
    """
    TAKE = _ADD.format(
        rejected="return self._refusal(log, now, cost)",
        admitted=(
            "return _new_tuple(Decision, (True, capacity - total, 0.0, window / US, capacity))"
        ),
    )
    ADMIT = _ADD.format(rejected="return False", admitted="return True")

    def _refusal(self, log: SlidingLog, now: int, cost: int) -> Decision:
        """The `Decision` for a cost that does not fit in ``log``, pruned at ``now``."""
        _, remaining, retry_us, reset_us = self._rejected(log, now, cost)
        return _new_tuple(Decision, (False, remaining, retry_us / US, reset_us / US, self.capacity))

    def idle(self, state: SlidingLog, now: int) -> bool:
        """See `Algorithm.idle`."""
        return not state.entries or state.newest() + self.window <= now


def combine(verdicts: Sequence[Verdict], limits: Sequence[Algorithm]) -> Decision:
    """Merge the verdicts of several limits on one request into one `Decision`.

    The request is allowed only if every limit allows it. ``retry_after`` and
    ``reset_after`` are the largest of the parts (availability only grows
    while nothing is consumed, so all parts fit at the latest of their
    times); ``remaining`` and ``limit`` come from the tightest part.
    """
    allowed = True
    remaining = retry = reset = 0
    binding = -1
    for index, (ok, left, retry_us, reset_us) in enumerate(verdicts):
        if index == 0 or left < remaining:
            remaining = left
        if reset_us > reset:
            reset = reset_us
        if not ok:
            # Rejected: the binding limit is the latest to fit.
            if allowed or retry_us > retry:
                retry, binding = retry_us, index
            allowed = False
        elif allowed and (binding < 0 or left < verdicts[binding][1]):
            # Allowed so far: the binding limit is the one with the least room left.
            binding = index
    return make_decision(
        allowed, remaining, 0.0 if allowed else retry / US, reset / US, limits[binding].capacity
    )


_UNITS: Final = {
    "ms": 0.001,
    "millisecond": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_LIMIT_RE: Final = re.compile(
    r"^\s*(\d+)\s*(?:/|per\s)\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$", re.IGNORECASE
)


def parse_limit(text: str) -> tuple[int, float]:
    """Parse a limit string into (count, period in seconds).

    Accepts ``"10/second"``, ``"1000/hour"``, ``"5 per minute"``, ``"20/5s"``,
    ``"3/2 minutes"``; units are ms, s, m, h, d and their long forms,
    singular or plural.

    Raises:
        ValueError: When ``text`` is not a limit string.
    """
    match = _LIMIT_RE.match(text)
    unit = None
    if match:
        word = match.group(3).lower()
        unit = _UNITS.get(word) or _UNITS.get(word.removesuffix("s"))
    if match is None or unit is None:
        raise ValueError(
            f"cannot parse the limit {text!r}: write it as '<count>/<period>', "
            "for example '10/second', '1000/hour' or '20/5s'"
        )
    count = int(match.group(1))
    period = float(match.group(2) or 1) * unit
    if count <= 0 or period <= 0:
        raise ValueError(f"the limit {text!r} must have a positive count and period")
    return count, period
