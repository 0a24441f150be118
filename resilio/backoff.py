"""Backoff rules for `resilio.retry`: how long to wait between attempts.

Example:
    ```python
    import resilio

    @resilio.retry(on=ConnectionError, backoff=resilio.backoff.exponential(initial=0.2, max=10))
    def fetch() -> bytes: ...
    ```

All durations are seconds. Jitter is one of ``"none"``, ``"full"`` and
``"equal"``; see `Exponential` for how ``min`` and jitter combine. The
lowercase names build the rule of the same name: ``exponential(...)`` is
``Exponential(...)``.
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

constant = Constant
linear = Linear
exponential = Exponential
decorrelated = Decorrelated


def none() -> Constant:
    """Retry at once, without waiting."""
    return Constant(0.0)
