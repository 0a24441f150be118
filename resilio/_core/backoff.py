"""Backoff formulas: how long to wait before the next attempt.

Every formula is O(1) and overflow-free at any attempt number: the
exponential one works out at construction the attempt from which it is
saturated at ``max`` and never raises a power past that point.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Literal

__all__ = ["Backoff", "Constant", "Decorrelated", "Exponential", "Jitter", "Linear"]

Jitter = Literal["none", "full", "equal"]
_JITTERS = ("none", "full", "equal")

Random = Callable[[], float]


def _check_seconds(name: str, value: float, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        need = "greater than 0" if not allow_zero else "0 or more"
        raise ValueError(f"{name} must be {need} seconds, got {value}")
    return value


class Backoff(abc.ABC):
    """A rule giving the wait before each retry.

    Subclasses are immutable and hold no per-call state: the previous delay
    is passed in, so one backoff serves any number of concurrent calls.
    """

    __slots__ = ()

    @abc.abstractmethod
    def delay(self, attempt: int, previous: float | None, random: Random) -> float:
        """Return the seconds to wait after attempt number ``attempt`` failed.

        Args:
            attempt: The attempt that just failed, counting from 1.
            previous: The previous wait in seconds, or None before the first.
            random: A source of floats uniform in [0, 1).
        """


class _Shaped(Backoff):
    """A deterministic base curve with a floor, a cap and optional jitter.

    How ``min`` combines with jitter (the rule is the same for every curve):

    * ``"none"``: the wait is the base clamped to ``[min, max]``.
    * ``"full"``: ``min + U(0, w)`` with ``w = min(base, max - min)``.
    * ``"equal"``: ``min + w/2 + U(0, w/2)``.

    With jitter the floor is added under the random part instead of clipping
    it, so the spread never collapses to a single value, and at the cap the
    waits still spread over ``[min, max]``.
    """

    __slots__ = ("jitter", "max", "min")

    def __init__(self, *, min: float, max: float, jitter: Jitter | None) -> None:
        self.min = _check_seconds("min", min)
        self.max = _check_seconds("max", max)
        if self.max < self.min:
            raise ValueError(f"max ({self.max} s) must not be below min ({self.min} s)")
        if jitter is None:
            jitter = "none"
        if jitter not in _JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(_JITTERS)}; got {jitter!r}")
        self.jitter: Jitter = jitter

    @abc.abstractmethod
    def base(self, attempt: int) -> float:
        """Return the un-jittered, uncapped-below wait for ``attempt`` (never above ``max``)."""

    def delay(self, attempt: int, previous: float | None, random: Random) -> float:
        """Return the wait after ``attempt`` failed (see the class notes on jitter)."""
        b = self.base(attempt)
        if self.jitter == "none":
            return b if b > self.min else self.min
        width = self.max - self.min
        if b < width:
            width = b
        if self.jitter == "full":
            return self.min + random() * width
        half = width / 2
        return self.min + half + random() * half


class Constant(_Shaped):
    """The same wait, ``seconds``, before every retry (optionally jittered)."""

    __slots__ = ("seconds",)

    def __init__(
        self,
        seconds: float,
        *,
        min: float = 0.0,
        max: float | None = None,
        jitter: Jitter | None = None,
    ) -> None:
        self.seconds = _check_seconds("seconds", seconds)
        if max is None:
            max = self.seconds if self.seconds > min else min
        super().__init__(min=min, max=max, jitter=jitter)

    def base(self, attempt: int) -> float:
        """Return ``seconds`` (capped at ``max``)."""
        return self.seconds if self.seconds < self.max else self.max

    def __repr__(self) -> str:
        return f"constant({self.seconds}, min={self.min}, max={self.max}, jitter={self.jitter!r})"


class Linear(_Shaped):
    """Waits that grow by ``step`` each retry: ``initial + step * attempt``, up to ``max``."""

    __slots__ = ("initial", "step")

    def __init__(
        self,
        step: float,
        *,
        initial: float = 0.0,
        min: float = 0.0,
        max: float = 60.0,
        jitter: Jitter | None = None,
    ) -> None:
        self.step = _check_seconds("step", step)
        self.initial = _check_seconds("initial", initial)
        super().__init__(min=min, max=max, jitter=jitter)

    def base(self, attempt: int) -> float:
        """Return ``initial + step * attempt``, capped at ``max``."""
        # An int past any float would overflow; long before, the wait is at max.
        value = self.initial + self.step * float(min(attempt, 2**62))
        return value if value < self.max else self.max

    def __repr__(self) -> str:
        return (
            f"linear({self.step}, initial={self.initial}, min={self.min}, max={self.max}, "
            f"jitter={self.jitter!r})"
        )


class Exponential(_Shaped):
    """Waits that multiply: ``initial * multiplier ** (attempt - 1)``, capped at ``max``.

    Args:
        initial: The first wait in seconds, before jitter.
        multiplier: The growth factor (at least 1).
        min: A floor in seconds; with jitter it is added under the random part,
            so the spread never collapses (see `_Shaped`).
        max: The cap in seconds; jitter still spreads waits at the cap.
        jitter: ``"full"`` (default), ``"equal"`` or ``"none"``.
    """

    __slots__ = ("_saturated_from", "initial", "multiplier")

    def __init__(
        self,
        *,
        initial: float = 0.1,
        multiplier: float = 2.0,
        min: float = 0.0,
        max: float = 5.0,
        jitter: Jitter | None = "full",
    ) -> None:
        self.initial = _check_seconds("initial", initial)
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
            raise TypeError(f"multiplier must be a number, got {multiplier!r}")
        if not (1.0 <= multiplier < math.inf):
            raise ValueError(f"multiplier must be a finite number of at least 1, got {multiplier}")
        self.multiplier = float(multiplier)
        super().__init__(min=min, max=max, jitter=jitter)
        # The first attempt whose base reaches max; from there on no power is computed.
        if self.initial == 0.0 or self.multiplier == 1.0:
            self._saturated_from = 0  # the base never changes: see base()
        elif self.initial >= self.max:
            self._saturated_from = 1
        else:
            # In logs, so a tiny initial cannot overflow the ratio.
            steps = (math.log(self.max) - math.log(self.initial)) / math.log(self.multiplier)
            self._saturated_from = 1 + math.ceil(steps)

    def base(self, attempt: int) -> float:
        """Return the capped exponential wait for ``attempt`` in O(1)."""
        if self._saturated_from == 0:
            return self.initial if self.initial < self.max else self.max
        if attempt >= self._saturated_from:
            return self.max
        value = self.initial * self.multiplier ** (attempt - 1)
        return value if value < self.max else self.max

    def __repr__(self) -> str:
        return (
            f"exponential(initial={self.initial}, multiplier={self.multiplier}, min={self.min}, "
            f"max={self.max}, jitter={self.jitter!r})"
        )


class Decorrelated(Backoff):
    """Decorrelated jitter: each wait is drawn from ``[initial, previous * multiplier]``.

    The draw is capped at ``max``. Every wait is at least ``max(initial, min)``
    and the range never shrinks to a point, because ``previous`` is at least
    that floor and the multiplier is above 1.
    """

    __slots__ = ("floor", "initial", "max", "multiplier")

    def __init__(
        self,
        *,
        initial: float = 0.1,
        multiplier: float = 3.0,
        min: float = 0.0,
        max: float = 5.0,
    ) -> None:
        self.initial = _check_seconds("initial", initial, allow_zero=False)
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
            raise TypeError(f"multiplier must be a number, got {multiplier!r}")
        if not (1.0 < multiplier < math.inf):
            raise ValueError(f"multiplier must be a finite number above 1, got {multiplier}")
        self.multiplier = float(multiplier)
        floor = _check_seconds("min", min)
        self.max = _check_seconds("max", max)
        self.floor = floor if floor > self.initial else self.initial
        if self.max < self.floor:
            raise ValueError(f"max ({self.max} s) must not be below initial/min ({self.floor} s)")

    def delay(self, attempt: int, previous: float | None, random: Random) -> float:
        """Return a wait drawn from ``[floor, previous * multiplier]``, capped at ``max``."""
        prev = self.floor if previous is None or previous < self.floor else previous
        value = self.floor + random() * (prev * self.multiplier - self.floor)
        return value if value < self.max else self.max

    def __repr__(self) -> str:
        return (
            f"decorrelated(initial={self.initial}, multiplier={self.multiplier}, "
            f"min={self.floor}, max={self.max})"
        )
