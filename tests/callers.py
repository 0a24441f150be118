"""Acting as several callers from one test: each caller in a context of its own.

A thread or task has its own `contextvars` context, and resilio keeps per-call
state there (a breaker's probe, its ``with`` blocks): calls that one thread or
task makes inside another of the same breaker are nested in it. A test that
plays several independent callers from its one thread or task runs each
caller's steps in that caller's own `Caller` context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class Caller:
    """One independent caller: its steps run in a context of its own, in order."""

    def __init__(self) -> None:
        self.context = contextvars.Context()

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """Call ``function(*args)`` as this caller."""
        return self.context.run(function, *args)

    async def run_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` as this caller: each of its steps runs in this caller's context."""
        return await _Stepped(self.context, coroutine)


class _Stepped:
    """Awaits a coroutine on the current event loop, stepping it inside ``context``."""

    def __init__(self, context: contextvars.Context, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.context = context
        self.coroutine = coroutine

    def __await__(self) -> Generator[Any, Any, Any]:
        send: Any = None
        throw: BaseException | None = None
        while True:
            try:
                if throw is None:
                    waiting = self.context.run(self.coroutine.send, send)
                else:
                    waiting = self.context.run(self.coroutine.throw, throw)
            except StopIteration as done:
                return done.value
            # Hand what the coroutine waits for to the event loop, and its answer back.
            try:
                send, throw = (yield waiting), None
            except BaseException as error:
                send, throw = None, error
