"""httpx transports that inject network faults into outgoing requests.

Reached through `resilio.chaos.ChaosTransport` and
`resilio.chaos.AsyncChaosTransport`, which import this module (and httpx) on
first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import httpx

from ._clock import Clock, runtime
from ._events import Event, EventKind, Listener, emit, listening, validate_listeners
from ._outcome import Outcome
from .chaos import ChaosContext, Distribution, Trigger, check_seconds

__all__ = ["AsyncChaosTransport", "ChaosTransport"]

_DROPPED = "peer closed connection without sending complete message body (injected by {})"


class _Plan:
    """What to do to one request, decided before it is sent."""

    __slots__ = ("delay", "drop", "error", "status", "wait")

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.wait = 0.0  # seconds to spend before raising `error`
        self.delay = 0.0  # seconds to add before sending
        self.status: int | None = None
        self.drop = False


TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)


class _ChaosTransportBase(Generic[TransportT]):
    """What both transports share: options, and decisions from one seeded random source."""

    def __init__(
        self,
        transport: TransportT | None = None,
        *,
        connect_error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        timeout_after: float | Distribution | None = None,
        latency_rate: float = 0.0,
        latency: float | Distribution = 0.0,
        status_rate: float = 0.0,
        status_code: int = 503,
        status_headers: Mapping[str, str] | None = None,
        drop_rate: float = 0.0,
        enabled: bool | Callable[[ChaosContext], bool] = True,
        seed: int | None = None,
        listeners: Iterable[Listener] | None = None,
        clock: Clock | None = None,
        name: str = "chaos.transport",
    ) -> None:
        if isinstance(status_code, bool) or not isinstance(status_code, int):
            raise TypeError(f"status_code= must be an int, got {status_code!r}")
        if not 100 <= status_code <= 599:
            raise ValueError(f"status_code= must be an HTTP status (100-599), got {status_code}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock= must have now(), sleep() and sleep_async(), got {clock!r}")
        self._gate = Trigger(name, 1.0, enabled, seed)
        rng = self._gate.random
        self._triggers = {
            kind: Trigger(name, rate, True, None)
            for kind, rate in (
                ("connect", connect_error_rate),
                ("timeout", timeout_rate),
                ("latency", latency_rate),
                ("status", status_rate),
                ("drop", drop_rate),
            )
        }
        for trigger in self._triggers.values():
            trigger.random = rng  # one seed drives every decision, in a fixed order
        self._timeout_after = (
            None if timeout_after is None else check_seconds(timeout_after, "timeout_after=")
        )
        self._latency = check_seconds(latency, "latency=")
        self._status_code = status_code
        self._status_headers = dict(status_headers or {})
        self._listeners = validate_listeners(listeners)
        self._clock = clock
        self._name = name
        # Last, so a bad option never leaves a default transport behind unclosed.
        self._transport: TransportT = self._wrap(transport)

    def _wrap(self, transport: TransportT | None) -> TransportT:
        """Return the transport to send through, checked, or httpx's own by default."""
        raise NotImplementedError

    def _plan(self, request: httpx.Request) -> _Plan:
        plan = _Plan()
        if not self._gate.fires(request=request):
            return plan
        triggers = self._triggers
        if triggers["connect"].fires():
            message = f"connection refused (injected by {self._name})"
            plan.error = httpx.ConnectError(message, request=request)
        elif triggers["timeout"].fires():
            plan.error = httpx.ReadTimeout(f"timed out (injected by {self._name})", request=request)
            plan.wait = self._timeout_seconds(request)
        else:
            if triggers["latency"].fires():
                plan.delay = triggers["latency"].draw(self._latency)
            if triggers["status"].fires():
                plan.status = self._status_code
            elif triggers["drop"].fires():
                plan.drop = True
        self._announce(plan)
        return plan

    def _timeout_seconds(self, request: httpx.Request) -> float:
        if self._timeout_after is not None:
            return self._gate.draw(self._timeout_after)
        timeouts = request.extensions.get("timeout", {})
        read = timeouts.get("read") if isinstance(timeouts, dict) else None
        return float(read) if read is not None else 0.0

    def _announce(self, plan: _Plan) -> None:
        if not listening(self._listeners):
            return
        now = (self._clock or runtime.clock).now()
        events = []
        if plan.delay:
            events.append(Event(EventKind.CHAOS_LATENCY, self._name, now, delay=plan.delay))
        if plan.error is not None:
            outcome: Outcome[Any] = Outcome(exception=plan.error)
            events.append(Event(EventKind.CHAOS_FAULT, self._name, now, outcome=outcome))
        if plan.status is not None:
            outcome = Outcome(result=plan.status)
            events.append(Event(EventKind.CHAOS_OUTCOME, self._name, now, outcome=outcome))
        if plan.drop:
            outcome = Outcome(exception=httpx.RemoteProtocolError(_DROPPED.format(self._name)))
            events.append(Event(EventKind.CHAOS_FAULT, self._name, now, outcome=outcome))
        for event in events:
            emit(event, self._listeners)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            self._status_code,
            headers=self._status_headers,
            content=f"injected by {self._name}".encode(),
            request=request,
        )

    def _dropped(self, request: httpx.Request) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(_DROPPED.format(self._name), request=request)


class _DroppedStream(httpx.SyncByteStream):
    """Yields half of the first chunk of a body, then fails like a closed connection."""

    def __init__(self, stream: httpx.SyncByteStream, error: Exception) -> None:
        self._stream = stream
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if len(chunk) > 1:
                yield chunk[: len(chunk) // 2]
            break
        raise self._error

    def close(self) -> None:
        self._stream.close()


class _AsyncDroppedStream(httpx.AsyncByteStream):
    """The async twin of `_DroppedStream`."""

    def __init__(self, stream: httpx.AsyncByteStream, error: Exception) -> None:
        self._stream = stream
        self._error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._stream.__aiter__()
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            chunk = b""
        finally:
            # Close the body's own iterator now: trio never finalizes abandoned ones.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        if len(chunk) > 1:
            yield chunk[: len(chunk) // 2]
        raise self._error

    async def aclose(self) -> None:
        await self._stream.aclose()


def _cut(
    request: httpx.Request,
    response: httpx.Response,
    stream: httpx.SyncByteStream | httpx.AsyncByteStream,
) -> httpx.Response:
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=stream,
        extensions=response.extensions,
        request=request,
    )


class ChaosTransport(_ChaosTransportBase[httpx.BaseTransport], httpx.BaseTransport):
    """An httpx transport that injects network faults, for ``httpx.Client(transport=...)``.

    Each fault has its own rate, a share of requests between 0 and 1, and
    they are decided in this order for every request: a connect error
    (`httpx.ConnectError`, nothing sent); else a timeout (`httpx.ReadTimeout`
    after waiting the request's read timeout, or ``timeout_after``); else
    added latency, and then either a synthetic ``status_code`` answer (nothing
    sent) or the real answer with its body cut short
    (`httpx.RemoteProtocolError` while reading it). All rates default to 0.

    Args:
        transport: The transport that really sends requests; default httpx's own.
        connect_error_rate: Share of requests that fail to connect.
        timeout_rate: Share of requests that time out.
        timeout_after: Seconds an injected timeout takes (a number or a
            distribution); default the request's read timeout.
        latency_rate: Share of requests delayed before they are sent.
        latency: The added delay in seconds, or a distribution of delays
            (see `resilio.chaos.exponential`).
        status_rate: Share of requests answered with ``status_code`` at once.
        status_code: The injected answer's status (default 503).
        status_headers: Headers of the injected answer (for example ``Retry-After``).
        drop_rate: Share of answers whose body is cut off halfway.
        enabled: Whether to inject at all: a bool, or a callable over a
            `resilio.chaos.ChaosContext` whose ``request`` is the request.
        seed: Seeds the transport's random source, so runs repeat.
        listeners: Callables that receive a ``CHAOS_*`` event per injection.
        clock: The clock to sleep on; default the process clock.
        name: The name in events and error messages.
    """

    def _wrap(self, transport: httpx.BaseTransport | None) -> httpx.BaseTransport:
        if transport is None:
            return httpx.HTTPTransport()
        if not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport, got {transport!r}")
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport, or fail it on purpose."""
        plan = self._plan(request)
        clock = self._clock or runtime.clock
        if plan.error is not None:
            if plan.wait:
                clock.sleep(plan.wait)
            raise plan.error
        if plan.delay:
            clock.sleep(plan.delay)
        if plan.status is not None:
            return self._answer(request)
        response = self._transport.handle_request(request)
        if plan.drop:
            assert isinstance(response.stream, httpx.SyncByteStream)
            response = _cut(
                request, response, _DroppedStream(response.stream, self._dropped(request))
            )
        return response

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()


class AsyncChaosTransport(_ChaosTransportBase[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport):
    """An httpx transport that injects network faults, for ``httpx.AsyncClient(transport=...)``.

    It takes the same options as `ChaosTransport`; ``transport`` is an
    ``httpx.AsyncBaseTransport`` and the waits are async sleeps.
    """

    def _wrap(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncBaseTransport:
        if transport is None:
            return httpx.AsyncHTTPTransport()
        if not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport, or fail it on purpose."""
        plan = self._plan(request)
        clock = self._clock or runtime.clock
        if plan.error is not None:
            if plan.wait:
                await clock.sleep_async(plan.wait)
            raise plan.error
        if plan.delay:
            await clock.sleep_async(plan.delay)
        if plan.status is not None:
            return self._answer(request)
        response = await self._transport.handle_async_request(request)
        if plan.drop:
            assert isinstance(response.stream, httpx.AsyncByteStream)
            stream = _AsyncDroppedStream(response.stream, self._dropped(request))
            response = _cut(request, response, stream)
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()
