"""Inspecting what users decorate: async or sync, generator or not."""

from __future__ import annotations

import functools
import inspect

__all__ = ["is_async_callable", "reject_generators"]


def _unwrap_partial(fn: object) -> object:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def is_async_callable(fn: object) -> bool:
    """Return whether calling ``fn`` returns an awaitable coroutine.

    Handles plain and ``async def`` functions, bound methods, ``functools.partial``
    (nested too) and objects whose ``__call__`` is ``async def``.
    """
    if inspect.iscoroutinefunction(fn):
        return True
    target = _unwrap_partial(fn)
    if inspect.iscoroutinefunction(target):
        return True
    if not inspect.isroutine(target) and not isinstance(target, type):
        return inspect.iscoroutinefunction(getattr(target, "__call__", None))  # noqa: B004
    return False


def reject_generators(fn: object, what: str) -> None:
    """Raise TypeError when ``fn`` is a generator or async generator function."""
    target = _unwrap_partial(fn)
    if not inspect.isroutine(target) and not isinstance(target, type):
        target = getattr(target, "__call__", target)  # noqa: B004
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"{what} cannot wrap the generator function {getattr(fn, '__qualname__', fn)!r}: "
            "a generator runs after the decorated call has returned, so a failure could "
            "not be retried, timed or counted. Decorate a function that consumes it instead."
        )
