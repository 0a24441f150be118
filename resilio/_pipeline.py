"""`resilio.Pipeline`: strategies composed into one, outermost first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import ParamSpec, TypeVar

from ._strategy import Strategy

__all__ = ["Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")


class Pipeline(Strategy):
    """Several strategies applied as one, listed outermost first.

    ``Pipeline(a, b, c)`` wraps a function the way stacked decorators would::

        @a
        @b
        @c
        def f(): ...

    For example ``Pipeline(timeout(10), retry(on=OSError), breaker, timeout(2))``
    gives a 10 s budget for the whole call, retries, a breaker, and a 2 s limit
    per attempt. The composition happens once, at decoration time, so a
    pipeline costs no more per call than the strategies in it.

    Compositions that cannot work are refused here: a timeout inside another
    one must be shorter, or it could never fire.

    Args:
        *strategies: Strategies (pipelines included), outermost first.
        name: The name in error messages.
    """

    __slots__ = ("name", "strategies")

    def __init__(self, *strategies: Strategy, name: str = "pipeline") -> None:
        for position, strategy in enumerate(strategies):
            if not isinstance(strategy, Strategy):
                raise TypeError(
                    f"Pipeline takes resilio strategies; item {position} is {strategy!r}"
                )
        self.strategies: tuple[Strategy, ...] = strategies
        self.name = name
        self._check_timeouts()

    def _flat(self) -> Iterator[Strategy]:
        for strategy in self.strategies:
            if isinstance(strategy, Pipeline):
                yield from strategy._flat()
            else:
                yield strategy

    def _check_timeouts(self) -> None:
        outer: tuple[float, Strategy] | None = None
        for strategy in self._flat():
            seconds = strategy._timeout_seconds()
            if seconds is None:
                continue
            if outer is not None and seconds > outer[0]:
                raise ValueError(
                    f"{strategy!r} sits inside {outer[1]!r}, which gives up after "
                    f"{outer[0]:g} s: the inner timeout ({seconds:g} s) could never fire. "
                    "Make the inner timeout shorter than the outer one, or drop it."
                )
            if outer is None or seconds < outer[0]:
                outer = (seconds, strategy)

    def _check_target(self, is_async: bool) -> None:
        for strategy in self.strategies:
            strategy._check_target(is_async)

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        for strategy in reversed(self.strategies):
            fn = strategy._wrap_sync(fn)
        return fn

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        for strategy in reversed(self.strategies):
            fn = strategy._wrap_async(fn)
        return fn

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.strategies)
        return f"Pipeline({inner})"
