"""Backoff rules for `resilio.retry`: how long to wait between attempts.

Example:
    ```python
    import resilio

    @resilio.retry(on=ConnectionError, backoff=resilio.backoff.exponential(initial=0.2, max=10))
    def fetch() -> bytes: ...
    ```

All durations are seconds. Jitter is one of ``"none"``, ``"full"`` and
``"equal"``; see `Exponential` for how ``min`` and jitter combine.
"""

from __future__ import annotations

from ._core.backoff import Backoff, Constant, Decorrelated, Exponential, Jitter, Linear

__all__ = [
    "Backoff",
    "Constant",
    "Decorrelated",
    "Exponential",
    "Jitter",
    "Linear",
    "constant",
    "decorrelated",
    "exponential",
    "linear",
    "none",
]


def constant(
    seconds: float,
    *,
    min: float = 0.0,
    max: float | None = None,
    jitter: Jitter | None = None,
) -> Constant:
    """Wait the same ``seconds`` before every retry (optionally jittered)."""
    return Constant(seconds, min=min, max=max, jitter=jitter)


def none() -> Constant:
    """Retry at once, without waiting."""
    return Constant(0.0)


def linear(
    step: float,
    *,
    initial: float = 0.0,
    min: float = 0.0,
    max: float = 60.0,
    jitter: Jitter | None = None,
) -> Linear:
    """Wait ``initial + step * attempt`` seconds after attempt ``attempt`` failed, up to ``max``."""
    return Linear(step, initial=initial, min=min, max=max, jitter=jitter)


def exponential(
    *,
    initial: float = 0.1,
    multiplier: float = 2.0,
    min: float = 0.0,
    max: float = 5.0,
    jitter: Jitter | None = "full",
) -> Exponential:
    """Wait ``initial * multiplier ** (attempt - 1)`` seconds, capped at ``max``, jittered.

    Args:
        initial: The first wait in seconds, before jitter.
        multiplier: The growth factor (at least 1).
        min: A floor in seconds; with jitter it is added under the random part.
        max: The cap in seconds; jitter still spreads waits at the cap.
        jitter: ``"full"`` (default), ``"equal"`` or ``"none"``.
    """
    return Exponential(initial=initial, multiplier=multiplier, min=min, max=max, jitter=jitter)


def decorrelated(
    *,
    initial: float = 0.1,
    multiplier: float = 3.0,
    min: float = 0.0,
    max: float = 5.0,
) -> Decorrelated:
    """Decorrelated jitter: each wait drawn from ``[initial, previous * multiplier]`` seconds."""
    return Decorrelated(initial=initial, multiplier=multiplier, min=min, max=max)
