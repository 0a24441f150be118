"""Standard-library logging of resilio's events, with structured fields; opt-in.

Nothing is logged until an `EventLogger` is registered, and the records it
writes go through the application's logging configuration: the
``resilio.events`` logger carries a `logging.NullHandler`, so an application
that configures no logging sees nothing, not even warnings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from ._events import Event, EventKind

__all__ = ["DEFAULT_LEVELS", "EventLogger"]

#: The logger `EventLogger` writes to unless told otherwise.
LOGGER_NAME: Final = "resilio.events"
logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())

#: The level of each kind: routine bookkeeping at DEBUG, decisions that change a
#: call at INFO (a retry is routine), and the ones an operator should look at,
#: a retry policy giving up and a breaker opening, at WARNING. A breaker state
#: change is logged at WARNING when it opens or is isolated, INFO otherwise.
DEFAULT_LEVELS: Final[Mapping[EventKind, int]] = {
    EventKind.ATTEMPT: logging.DEBUG,
    EventKind.CALL: logging.DEBUG,
    EventKind.BREAKER_SUCCESS: logging.DEBUG,
    EventKind.BREAKER_FAILURE: logging.DEBUG,
    EventKind.BREAKER_IGNORED: logging.DEBUG,
    EventKind.LIMITER_ALLOWED: logging.DEBUG,
    EventKind.RETRY: logging.INFO,
    EventKind.TIMEOUT: logging.INFO,
    EventKind.BREAKER_REJECTED: logging.INFO,
    EventKind.BREAKER_STATE_CHANGED: logging.INFO,
    EventKind.LIMITER_REJECTED: logging.INFO,
    EventKind.LIMITER_WAITED: logging.INFO,
    EventKind.BULKHEAD_REJECTED: logging.INFO,
    EventKind.BULKHEAD_LIMIT_CHANGED: logging.INFO,
    EventKind.FALLBACK: logging.INFO,
    EventKind.HEDGE: logging.INFO,
    EventKind.CHAOS_FAULT: logging.INFO,
    EventKind.CHAOS_LATENCY: logging.INFO,
    EventKind.CHAOS_OUTCOME: logging.INFO,
    EventKind.GAVE_UP: logging.WARNING,
}
_ALARMING_STATES: Final = frozenset({"open", "isolated"})


def _value(item: object) -> object:
    """Return an enum member's value; other objects as they are."""
    return getattr(item, "value", item)


class EventLogger:
    """A listener that writes each resilio event as a log record with structured fields.

    Register it for the whole process, or pass it to one policy's ``listeners=``::

        resilio.add_listener(resilio.EventLogger())
        resilio.add_listener(resilio.EventLogger(), timings=True)  # with ATTEMPT and CALL

    Each record's message reads ``resilio <kind> <name> key=value ...`` and the
    same fields are on the record as a dict in its ``resilio`` attribute
    (``record.resilio["event"]``, ``["source"]``, ``["attempt"]``,
    ``["delay"]``, ``["duration"]``, ``["error.type"]``...), ready for a JSON
    formatter. Durations and delays are in seconds. Formatting happens only
    when the logger is enabled for the event's level.

    Args:
        logger: The logger to write to, or its name; default ``resilio.events``.
        levels: Levels per `resilio.EventKind` that replace `DEFAULT_LEVELS`;
            None for a kind drops it.
        record_keys: Add rate-limit keys to the fields (they may name users).
    """

    __slots__ = ("_levels", "logger", "record_keys")

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        *,
        levels: Mapping[EventKind, int | None] | None = None,
        record_keys: bool = False,
    ) -> None:
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or LOGGER_NAME)
        elif not isinstance(logger, logging.Logger):
            raise TypeError(f"logger= takes a logging.Logger or a name, got {logger!r}")
        merged: dict[EventKind, int | None] = dict(DEFAULT_LEVELS)
        for kind, level in (levels or {}).items():
            if not isinstance(kind, EventKind):
                raise TypeError(f"levels= is keyed by resilio.EventKind, got {kind!r}")
            if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
                raise TypeError(f"levels= takes logging levels (ints) or None, got {level!r}")
            merged[kind] = level
        self.logger = logger
        self.record_keys = bool(record_keys)
        self._levels = merged
        if levels is None or EventKind.BREAKER_STATE_CHANGED not in levels:
            # Not overridden: the level follows the state the breaker moved to.
            del self._levels[EventKind.BREAKER_STATE_CHANGED]

    def __repr__(self) -> str:
        return f"EventLogger(logger={self.logger.name!r})"

    def level_of(self, event: Event) -> int | None:
        """Return the level ``event`` is logged at, or None when it is dropped."""
        kind = event.kind
        if kind in self._levels:
            return self._levels[kind]
        if kind is EventKind.BREAKER_STATE_CHANGED:
            alarming = _value(event.state) in _ALARMING_STATES
            return logging.WARNING if alarming else logging.INFO
        return logging.INFO

    def fields(self, event: Event) -> dict[str, Any]:
        """Return the structured fields of ``event``: only those it carries."""
        fields: dict[str, Any] = {"event": event.kind.value, "source": event.source}
        for name in ("attempt", "delay", "duration", "timeout", "handled"):
            value = getattr(event, name)
            if value is not None:
                fields[name] = value
        if event.reason is not None:
            fields["reason"] = _value(event.reason)
        if event.state is not None:
            fields["state"] = _value(event.state)
        if event.previous_state is not None:
            fields["previous_state"] = _value(event.previous_state)
        outcome = event.outcome
        if outcome is not None and outcome.exception is not None:
            fields["error.type"] = type(outcome.exception).__qualname__
            fields["error.message"] = str(outcome.exception)
        if self.record_keys and event.key is not None:
            fields["key"] = event.key
        return fields

    def __call__(self, event: Event) -> None:
        """Log ``event``: a resilio `Listener`."""
        level = self.level_of(event)
        if level is None or not self.logger.isEnabledFor(level):
            return
        fields = self.fields(event)
        pairs = " ".join(
            f"{name}={_format(value)}"
            for name, value in fields.items()
            if name not in ("event", "source")
        )
        self.logger.log(
            level,
            "resilio %s %s%s",
            fields["event"],
            event.source,
            f" {pairs}" if pairs else "",
            extra={"resilio": fields},
        )


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return repr(text) if (" " in text or not text) else text
