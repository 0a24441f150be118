"""The strategy contract shared by every pattern, and the decorator machinery."""

from __future__ import annotations

import abc
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from ._callables import is_async_callable, reject_generators

__all__ = ["Strategy", "checked_name"]

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def checked_name(name: object) -> str:
    """Return ``name``, the name of a strategy, as a plain str; raise unless a non-empty str.

    A str subclass (a ``str`` enum member) gives its value, not how it
    formats: names key shared state (in Redis) and must not depend on it.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not name:
        raise ValueError("name must be a non-empty str, got ''")
    return name if name.__class__ is str else str.__str__(name)


class Strategy(abc.ABC):
    """A resilience strategy: a reusable object that wraps calls.

    Every strategy is a decorator for ``def`` and ``async def`` functions and
    can be composed in a `resilio.Pipeline`. The wrapped function keeps its
    name, docstring, signature and ``inspect.iscoroutinefunction``.
    Strategies hold no per-call state, so one object may serve any number of
    functions, threads and tasks at once.
    """

    __slots__ = ()

    #: The name used in events and error messages.
    name: str

    @abc.abstractmethod
    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Return ``fn`` wrapped for sync calls (no metadata copied)."""

    @abc.abstractmethod
    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Return ``fn`` wrapped for async calls; the result must be an ``async def``."""

    def _check_target(self, is_async: bool) -> None:  # noqa: B027 - optional hook
        """Raise TypeError when this strategy cannot wrap a sync (or async) function."""

    def _timeout_seconds(self) -> float | None:
        """The timeout this strategy imposes on everything inside it, if any."""
        return None

    def _wrap(self, fn: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        self._check_target(is_async)
        return self._wrap_async(fn) if is_async else self._wrap_sync(fn)

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``, a function, method, staticmethod or classmethod."""
        if isinstance(fn, (staticmethod, classmethod)):
            return cast("F", type(fn)(self(fn.__func__)))
        if not callable(fn):
            raise TypeError(f"{type(self).__name__} decorates callables, got {fn!r}")
        reject_generators(fn, type(self).__name__)
        is_async = is_async_callable(fn)
        wrapper = self._wrap(fn, is_async)
        return cast("F", functools.update_wrapper(wrapper, fn))

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call the sync function ``fn(*args, **kwargs)`` through this strategy.

        Decorating once is faster when the same function is called often.
        """
        reject_generators(fn, type(self).__name__)
        if is_async_callable(fn):
            raise TypeError(f"{fn!r} is async: use `await strategy.call_async(...)`")
        return cast("Callable[P, T]", self._wrap(fn, False))(*args, **kwargs)

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Await the async function ``fn(*args, **kwargs)`` through this strategy."""
        reject_generators(fn, type(self).__name__)
        if not is_async_callable(fn):
            raise TypeError(f"{fn!r} is not async: use `strategy.call(...)`")
        wrapped = cast("Callable[P, Awaitable[T]]", self._wrap(fn, True))
        return await wrapped(*args, **kwargs)
