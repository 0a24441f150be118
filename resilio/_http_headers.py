"""HTTP header values resilio reads and writes: Retry-After and the IETF RateLimit fields.

Pure functions over strings, shared by `resilio.httpx` (which reads what
servers send) and `resilio.asgi` / `resilio.fastapi` (which write what clients
read). No HTTP library is imported here.

The RateLimit fields follow ``draft-ietf-httpapi-ratelimit-headers``: both are
Structured Field Lists (RFC 9651) whose items are policy names (Strings) with
parameters, for example ``RateLimit-Policy: "default";q=100;w=60`` and
``RateLimit: "default";r=42;t=17``.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable, Sequence
from datetime import timezone
from typing import Final

from ._core.limiters import US, Algorithm

__all__ = [
    "check_policy_name",
    "delay_seconds",
    "format_items",
    "parse_ratelimit",
    "parse_retry_after",
    "policy_terms",
    "ratelimit_delay",
]

_DIGITS: Final = re.compile(r"[0-9]+")
# A date needs at least a day, a month name and a time; anything shorter is not one.
_MIN_DATE_LENGTH: Final = 16
# Digits beyond this are more seconds than any clock can reach: treat as "forever".
_MAX_DIGITS: Final = 15
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]*")
# A bare item of RFC 9651: integer or decimal, string, token, byte sequence, boolean.
_BARE: Final = (
    r'(?:-?[0-9]+(?:\.[0-9]+)?|"(?:[^"\\]|\\["\\])*"'
    r"|[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*|:[A-Za-z0-9+/=]*:|\?[01])"
)
_KEY: Final = r"[a-z*][a-z0-9_\-.*]*"
_ITEM: Final = re.compile(
    r'\s*(?:"(?P<string>(?:[^"\\]|\\["\\])*)"|(?P<token>[A-Za-z*][A-Za-z0-9:/!#$%&\'*+\-.^_`|~]*))'
    rf"(?P<params>(?:;\s*{_KEY}(?:={_BARE})?)*)\s*(?:,|$)"
)
_PARAM: Final = re.compile(rf";\s*({_KEY})(?:=({_BARE}))?")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` value asks to wait, or None if it is unusable.

    Accepts delay-seconds (``"120"``) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``; a date without a zone is taken as
    UTC). A date in the past means 0. Negative numbers, fractions, several
    values joined by commas and anything else malformed give None, so the
    caller falls back to its own backoff. A number too large for any clock
    gives ``math.inf``.

    Args:
        value: The header value, or None when the header is absent.
        now: The current wall-clock time in seconds since the epoch, for
            dates; default ``time.time()``.
    """
    if value is None:
        return None
    text = value.strip()
    if _DIGITS.fullmatch(text):
        if len(text.lstrip("0")) > _MAX_DIGITS:
            return math.inf
        return float(int(text))
    if len(text) < _MIN_DATE_LENGTH or not text[:1].isalpha():
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)


def parse_ratelimit(value: str | None) -> list[tuple[str, dict[str, str]]] | None:
    """Parse a ``RateLimit`` or ``RateLimit-Policy`` field into (name, parameters) items.

    Parameter values are returned as the raw text after ``=``. Returns None
    when the value is absent or malformed (the draft says to ignore such a
    field entirely).
    """
    if value is None:
        return None
    items: list[tuple[str, dict[str, str]]] = []
    position, end = 0, len(value)
    while position < end:
        match = _ITEM.match(value, position)
        if match is None or match.end() == position:
            return None
        string = match.group("string")
        name = string.replace('\\"', '"').replace("\\\\", "\\") if string is not None else ""
        if string is None:
            name = match.group("token")
        params = {key: raw.strip() for key, raw in _PARAM.findall(match.group("params"))}
        items.append((name, params))
        position = match.end()
    return items or None


def ratelimit_delay(value: str | None) -> float | None:
    """Return the wait a ``RateLimit`` field implies, or None when it implies none.

    A policy with no remaining quota (``r=0``) and a reset time ``t`` (whole
    seconds) means "wait ``t`` seconds"; with several such policies, the
    longest wait. Policies with quota left, and malformed fields, imply nothing.
    """
    items = parse_ratelimit(value)
    if items is None:
        return None
    delay: float | None = None
    for _, params in items:
        remaining, reset = params.get("r"), params.get("t")
        if remaining is None or reset is None:
            continue
        if not (_DIGITS.fullmatch(remaining) and _DIGITS.fullmatch(reset)):
            return None
        if int(remaining) == 0:
            seconds = float(int(reset))
            delay = seconds if delay is None else max(delay, seconds)
    return delay


def check_policy_name(name: str) -> str:
    """Return ``name`` if it can be a policy name in the RateLimit fields, else raise ValueError."""
    if not isinstance(name, str) or not name or not _PRINTABLE.fullmatch(name):
        raise ValueError(
            f"a rate limit policy name must be a non-empty string of printable ASCII, got {name!r}"
        )
    return name


def _sf_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def delay_seconds(seconds: float) -> int:
    """Round a wait up to whole seconds, as Retry-After and ``t`` require (never negative)."""
    if seconds <= 0:
        return 0
    return math.ceil(seconds - 1e-9)


def format_items(items: Iterable[tuple[str, Sequence[tuple[str, int]]]]) -> str:
    """Serialize (name, ((parameter, integer), ...)) items as a Structured Field List."""
    return ", ".join(
        _sf_string(name) + "".join(f";{key}={value}" for key, value in params)
        for name, params in items
    )


def policy_terms(limit: Algorithm) -> tuple[int, int]:
    """Return (quota ``q``, window ``w`` in whole seconds) describing one limit.

    Window limits report their limit and window. A token bucket reports its
    capacity over the time it takes to refill from empty; a leaky bucket
    (which admits no burst) its rate, as units per whole seconds.
    """
    params = limit.params
    if limit.kind in ("fixed_window", "sliding_window", "sliding_log"):
        quota, window_us = params[0], params[1]
    elif limit.kind == "gcra":
        quota, window_us = params[1], params[0] * params[1]
    else:
        interval = params[0]
        quota, window_us = (max(1, round(US / interval)), US) if interval < US else (1, interval)
    return quota, max(1, delay_seconds(window_us / US))
