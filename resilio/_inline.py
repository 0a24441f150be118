"""One-frame decisions for resilio's hottest path: a limiter of one limit in a `MemoryStore`.

Such a limiter's ``try_acquire``, ``allow`` and their async twins are
instance attributes that shadow the methods of the same names: functions
compiled from `TEMPLATE` around the algorithm's own ``TAKE`` or ``ADMIT``
source (see ``resilio._core.fastpath``). They check the request, take the
store's lock, read the clock under it (so decisions are made in the order
their times were read), apply the store's guard against time running
backwards, count down to the store's next sweep, and decide, all in one
Python frame: the methods take three, and a call costs about a tenth of a
decision.

What they would look up on every call (the clock in effect, whether anybody
listens) is fixed when they are built, with the `runtime.version` of those
settings: a decision that finds the version moved (a swapped clock, a
listener added or removed) hands its call to the method it stands for,
which builds them anew, or, while anybody listens, answers itself and
emits. So they stay right even when kept by a caller (``allow =
limiter.allow``), and a change of settings costs nothing until a decision
meets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ._clock import Clock, SystemClock, runtime
from ._core import limiters
from ._core.fastpath import compile_function, indent
from ._core.limiters import Algorithm

if TYPE_CHECKING:
    from ._limiter import RateLimiter
    from .stores import MemoryStore

__all__ = ["METHODS", "TEMPLATE", "decisions"]

TEMPLATE: Final = """\
def build(
    self, table, store, acquire, release, check_request, max_cost, clock_now, countdown,
    version, slow,
):
{locals}
    {kind}def {name}(key="", cost=1):
        nonlocal countdown
        if _runtime.version != version:
            # Built for other settings: the method answers, and builds anew.
            return {wait}slow(key, cost)
        if key.__class__ is not str or (
            cost is not _ONE and (cost.__class__ is not int or not 0 < cost <= max_cost)
        ):
            check_request(key, cost)
        # The lock's own methods: a with statement costs twice as much.
        acquire()
        try:
            now = {now}
            # MemoryStore._tick, written out.
            if now < store._now:
                now = store._now
            else:
                store._now = now
            countdown -= 1
            if not countdown:
                countdown = store._swept(now)
{body}
        finally:
            release()
    return {name}
"""

# Each method the limiter shadows: its algorithm source, and whether it is a coroutine.
METHODS: Final = {
    "try_acquire": ("TAKE", False),
    "allow": ("ADMIT", False),
    "try_acquire_async": ("TAKE", True),
    "allow_async": ("ADMIT", True),
}

# How the decisions read the time, in integer microseconds: the system clock
# directly, any other clock through its now() (seconds).
_NOW: Final = {True: "_monotonic_ns() // 1000", False: "round(clock_now() * US)"}

_NAMESPACE: Final = {
    **vars(limiters),
    "_monotonic_ns": time.monotonic_ns,
    "_ONE": 1,
    "_runtime": runtime,
}

_builders: dict[tuple[type[Algorithm], str, bool], Callable[..., Any]] = {}


def _builder(algorithm: type[Algorithm], method: str, system: bool) -> Callable[..., Any]:
    """The compiled `TEMPLATE` for ``method`` of limiters on ``algorithm``; made once."""
    builder = _builders.get((algorithm, method, system))
    if builder is None:
        source, is_async = METHODS[method]
        text = TEMPLATE.format(
            locals=indent(limiters.fast_locals(algorithm, "self"), 1),
            kind="async " if is_async else "",
            wait="await " if is_async else "",
            name=method,
            now=_NOW[system],
            body=indent(getattr(algorithm, source), 3),
        )
        label = f"{algorithm.__name__} {method}"
        builder = compile_function(text, "build", label, _NAMESPACE)
        _builders[(algorithm, method, system)] = builder
    return builder


def decisions(
    limiter: RateLimiter, store: MemoryStore, limit: Algorithm, clock: Clock, version: int
) -> dict[str, Callable[..., Any]]:
    """The one-frame decisions of ``limiter`` on ``clock``, by the names of the methods they shadow.

    ``limiter`` applies ``limit`` alone, in ``store``, and has no listeners of
    its own; nobody listened when `runtime.version` was ``version``. When it
    has moved on, each decision hands its call to the method it stands for.
    """
    # A new limiter waits its turn to sweep like the others: sweeping at once would
    # cost every limiter built per request a pass over the whole store.
    lock, table, countdown = store._bind(limit)
    system = type(clock) is SystemClock
    made: dict[str, Callable[..., Any]] = {}
    for method in METHODS:
        build = _builder(type(limit), method, system)
        function = build(
            limit,
            table,
            store,
            lock.acquire,
            lock.release,
            limiter._check_request,
            limiter.max_cost,
            clock.now,
            countdown,
            version,
            getattr(type(limiter), method).__get__(limiter),
        )
        # Errors and introspection name the method the function stands for.
        function.__doc__ = getattr(type(limiter), method).__doc__
        function.__qualname__ = f"RateLimiter.{method}"
        made[method] = function
    return made
