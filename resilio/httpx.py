"""httpx transports that send every request through a resilio pipeline.

`ResilientTransport` (sync) and `AsyncResilientTransport` wrap any httpx
transport, so retries, breakers, timeouts and rate limits apply below the
client, to each physical request, whatever the calling code does::

    import httpx
    from resilio.httpx import ResilientTransport

    client = httpx.Client(transport=ResilientTransport(), timeout=None)

Without a ``pipeline`` they use `standard_pipeline`: a total timeout, retries
of transient failures (safe methods only), a circuit breaker per authority and
a per-attempt timeout. See ``docs/httpx.md`` for the defaults and the reasons
behind them.
"""

from __future__ import annotations

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "resilio.httpx needs the httpx package: install it with pip install 'resilio[httpx]'"
    ) from exc

import inspect
import math
import threading
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, Final, ParamSpec, TypeVar

from . import backoff as _backoff
from ._breaker import CircuitBreaker
from ._budget import RetryBudget
from ._clock import Clock
from ._context import current_attempt, time_remaining
from ._core.backoff import Backoff
from ._errors import ResilioError, TimeoutExceeded
from ._events import Event, Listener
from ._http_headers import parse_retry_after, ratelimit_delay
from ._limiter import RateLimiter
from ._outcome import Outcome
from ._pipeline import Pipeline
from ._retry import Retry
from ._strategy import Strategy
from ._timeout import timeout as _timeout

__all__ = [
    "ATTEMPT_EXTENSION",
    "IDEMPOTENT_METHODS",
    "RETRY_EXCEPTIONS",
    "RETRY_STATUSES",
    "AsyncResilientTransport",
    "BreakerPerAuthority",
    "NotReplayableError",
    "ResilientTransport",
    "authority",
    "http_failure",
    "http_retry",
    "parse_retry_after",
    "standard_pipeline",
]

P = ParamSpec("P")
T = TypeVar("T")

#: Methods RFC 9110 (section 9.2.2) calls idempotent: the only ones retried by default.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: Statuses retried by default: request timeout, too many requests, and gateway trouble.
RETRY_STATUSES: Final = frozenset({408, 429, 502, 503, 504})
#: Exceptions retried by default: httpx timeouts, network errors, a server that
#: broke the protocol (dropped the connection mid-answer), and resilio's own
#: per-attempt timeout.
RETRY_EXCEPTIONS: Final[tuple[type[Exception], ...]] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    TimeoutExceeded,
)
#: The key under which the attempt number (from 1) appears in
#: ``request.extensions`` while an attempt is sent, and in ``response.extensions``.
ATTEMPT_EXTENSION: Final = "resilio.attempt"

# Failures that prove the request never left this process: retrying them is
# safe whatever the method (RFC 9110 allows it when "the original request was
# never applied").
_UNSENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_TIMEOUT_KEYS: Final = ("connect", "read", "write", "pool")
# Below this an httpx timeout is not a wait but an immediate failure.
_SHORTEST_TIMEOUT: Final = 0.001
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class NotReplayableError(ResilioError):
    """A request needed another attempt, but its body was a one-shot stream.

    An iterator, generator or file passed as ``content=`` is read while the
    first attempt is sent and cannot be sent again. Pass the body as bytes,
    or call ``request.read()`` before sending, to make the request retryable.

    The failure of the last attempt is chained as ``__cause__`` when it was an
    exception.

    Attributes:
        request: The request that could not be sent again.
        response: The retryable response of the last attempt (already
            closed), or None when the attempt raised.
    """

    def __init__(
        self, message: str, *, request: httpx.Request, response: httpx.Response | None
    ) -> None:
        super().__init__(message)
        self.request = request
        self.response = response


class _Exchange:
    """What the transport knows about the request in flight in this context."""

    __slots__ = ("blocked", "request", "timeout")

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.timeout: dict[str, float | None] | None = request.extensions.get("timeout")
        self.blocked = False


# The request the current context is sending: predicates read its method and
# body, which neither outcomes nor resilio's own errors carry.
_exchange: ContextVar[_Exchange | None] = ContextVar("resilio.httpx.exchange", default=None)


def authority(request: httpx.Request | httpx.URL | str) -> str:
    """Return ``scheme://host:port`` of a request or URL, with the default port filled in.

    This is the key of the per-authority breakers and limiters: requests to
    ``https://api.example.com/a`` and ``https://api.example.com:443/b``
    share it.
    """
    url = request.url if isinstance(request, httpx.Request) else httpx.URL(request)
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme, 0)
    host = url.host
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{url.scheme}://{host}:{port}"


def _replayable(request: httpx.Request) -> bool:
    # httpx keeps bytes bodies (and bodies already read) in a ByteStream; every
    # other stream reads an iterator or a file once.
    return isinstance(request.stream, httpx.ByteStream)


def http_failure(outcome: Outcome[Any]) -> bool:
    """Return whether an outcome means the server (or the way to it) is failing.

    The breaker predicate of `BreakerPerAuthority` by default: transport
    errors and timeouts (httpx's and resilio's), and answers with a status
    of 408, 429 or 500 and above. Other exceptions and statuses count as
    successes: the server answered.
    """
    exc = outcome.exception
    if exc is not None:
        return isinstance(exc, (httpx.TransportError, TimeoutExceeded)) and not isinstance(
            exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol)
        )
    response = outcome.result
    if not isinstance(response, httpx.Response):
        return False
    status = response.status_code
    return status >= 500 or status in (408, 429)


def _close_retried(event: Event) -> object:
    """Close the response of an attempt that is about to be retried (a before_sleep hook)."""
    outcome = event.outcome
    response = outcome.result if outcome is not None else None
    if not isinstance(response, httpx.Response) or response.is_closed:
        return None
    if isinstance(response.stream, httpx.SyncByteStream):
        response.close()
        return None
    return response.aclose()


def _chain(first: Callable[[Event], object], second: Callable[[Event], object]) -> Any:
    """Return a hook that runs ``first`` then ``second``, awaiting whatever they return."""
    if inspect.iscoroutinefunction(second):

        async def both_async(event: Event) -> None:
            value = first(event)
            if inspect.isawaitable(value):
                await value
            await second(event)

        return both_async

    def both(event: Event) -> object:
        value = first(event)
        later = second(event)
        if inspect.isawaitable(value):
            return _await_both(value, later)
        return later

    return both


async def _await_both(value: Awaitable[object], later: object) -> None:
    await value
    if inspect.isawaitable(later):
        await later


def http_retry(
    *,
    attempts: int | None = 3,
    deadline: float | None = None,
    backoff: Backoff | None = None,
    methods: Iterable[str] = IDEMPOTENT_METHODS,
    idempotency_header: str | None = None,
    statuses: Iterable[int] = RETRY_STATUSES,
    exceptions: tuple[type[Exception], ...] = RETRY_EXCEPTIONS,
    respect_retry_after: bool = True,
    max_retry_after: float = 30.0,
    budget: RetryBudget | None = None,
    before_sleep: Callable[[Event], object] | None = None,
    on_give_up: Callable[[Event], object] | None = None,
    listeners: Iterable[Listener] | None = None,
    clock: Clock | None = None,
    random: Callable[[], float] | None = None,
    name: str = "http-retry",
) -> Retry:
    """Build a `resilio.Retry` that knows HTTP: safe methods, transient statuses, Retry-After.

    Use it in the pipeline of a `ResilientTransport` (it reads the request
    being sent from there). An attempt is retried when:

    - it raised one of ``exceptions`` and the method may be retried, or it
      failed to connect at all (nothing was sent, so any method is safe); or
    - it answered with one of ``statuses`` and the method may be retried.

    A method may be retried when it is in ``methods``, or when
    ``idempotency_header`` is set and the request carries that header (the
    server then recognises a repeated request). The response of an attempt
    that is retried is closed before the wait. When attempts run out, the
    last response is returned as it is (or the last exception raised).

    The wait is the server's ``Retry-After`` (seconds or an HTTP-date, capped
    at ``max_retry_after``) when there is one, else the wait the IETF
    ``RateLimit`` field implies for an exhausted policy, else ``backoff``.
    Malformed and negative values fall back to the backoff.

    Args:
        attempts: The most attempts, the first included.
        deadline: Seconds from the start after which no attempt starts.
        backoff: The wait rule; default exponential from 2 s, capped at 30 s,
            with full jitter.
        methods: Methods retried whatever the request (upper case).
        idempotency_header: A header (for example ``"Idempotency-Key"``)
            whose presence makes any method retryable. Default: none.
        statuses: Response statuses that are retried.
        exceptions: Exception types that are retried.
        respect_retry_after: Whether to wait as the server asks.
        max_retry_after: The longest wait, in seconds, taken from the server.
        budget: A `resilio.RetryBudget` shared with other policies.
        before_sleep: Also called with the ``RETRY`` event before each wait.
        on_give_up: Called with the ``GAVE_UP`` event.
        listeners: Callables that receive this policy's events.
        clock: Time and sleep for this policy (tests).
        random: A source of floats in [0, 1) for jitter.
        name: The name in events.

    Raises:
        ValueError: An option is out of range.
    """
    allowed = frozenset(method.upper() for method in methods)
    retry_statuses = frozenset(statuses)
    if not all(isinstance(status, int) and 100 <= status <= 599 for status in retry_statuses):
        raise ValueError(f"statuses must be HTTP status codes (100-599), got {sorted(statuses)}")
    if not isinstance(exceptions, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, Exception) for kind in exceptions
    ):
        raise TypeError(f"exceptions must be a tuple of exception types, got {exceptions!r}")
    if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, (int, float)):
        raise TypeError(f"max_retry_after must be seconds (a number), got {max_retry_after!r}")
    if not 0 <= max_retry_after < math.inf:
        raise ValueError(f"max_retry_after must be finite seconds >= 0, got {max_retry_after}")
    header = idempotency_header
    cap = float(max_retry_after)

    def may_retry(request: httpx.Request) -> bool:
        return request.method in allowed or (header is not None and header in request.headers)

    def should_retry(outcome: Outcome[Any]) -> bool | float:
        exchange = _exchange.get()
        if exchange is None:
            return False  # not inside a resilient transport: the method is unknown
        request = exchange.request
        delay: float | None = None
        exc = outcome.exception
        if exc is not None:
            if not isinstance(exc, exceptions):
                return False
            if not (isinstance(exc, _UNSENT) or may_retry(request)):
                return False
        else:
            response = outcome.result
            if not isinstance(response, httpx.Response):
                return False
            if response.status_code not in retry_statuses or not may_retry(request):
                return False
            if respect_retry_after:
                delay = parse_retry_after(response.headers.get("Retry-After"))
                if delay is None:
                    delay = ratelimit_delay(response.headers.get("RateLimit"))
        if not _replayable(request):
            if attempts is None or outcome.attempt < attempts:
                exchange.blocked = True
            return False
        return True if delay is None else min(delay, cap)

    hook: Callable[[Event], object] = _close_retried
    if before_sleep is not None:
        hook = _chain(_close_retried, before_sleep)
    return Retry(
        on=should_retry,
        attempts=attempts,
        deadline=deadline,
        backoff=backoff or _backoff.exponential(initial=2.0, max=30.0, jitter="full"),
        budget=budget,
        before_sleep=hook,
        on_give_up=on_give_up,
        listeners=listeners,
        clock=clock,
        random=random,
        name=name,
    )


def _default_breaker(attempt_timeout: float) -> Callable[[str], CircuitBreaker]:
    def build(key: str) -> CircuitBreaker:
        return CircuitBreaker(
            name=f"http {key}",
            failure_rate=0.1,
            window_duration=max(30.0, 2 * attempt_timeout),
            minimum_calls=100,
            recovery_time=5.0,
            half_open_timeout=attempt_timeout,
            on=http_failure,
        )

    return build


class BreakerPerAuthority(Strategy):
    """A circuit breaker per authority (scheme, host, port), made on first use.

    One failing host then cannot open the circuit for the others. The first
    positional argument of the wrapped call must be the `httpx.Request`, as
    it is inside a `ResilientTransport`.

    Args:
        factory: Builds the breaker of an authority (``"https://host:443"``).
            By default: open when at least 10 % of at least 100 calls in the
            last 30 seconds failed (`http_failure`), stay open 5 seconds,
            then let one probe through.
        name: The name in error messages.

    Example:
        ```python
        breakers = BreakerPerAuthority(
            lambda key: resilio.CircuitBreaker(
                name=key, failure_threshold=5, on=resilio.httpx.http_failure
            )
        )
        ```
    """

    __slots__ = ("_breakers", "_factory", "_lock", "name")

    def __init__(
        self, factory: Callable[[str], CircuitBreaker] | None = None, *, name: str = "breakers"
    ) -> None:
        if factory is not None and not callable(factory):
            raise TypeError(f"factory must build a CircuitBreaker from a key, got {factory!r}")
        self._factory = factory or _default_breaker(10.0)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        self.name = name

    def __repr__(self) -> str:
        return f"BreakerPerAuthority(authorities={len(self._breakers)})"

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """A copy of the breakers made so far, by authority."""
        with self._lock:
            return dict(self._breakers)

    def breaker(self, target: httpx.Request | httpx.URL | str) -> CircuitBreaker:
        """Return the breaker of a request's or URL's authority, making it if needed."""
        key = authority(target)
        breaker = self._breakers.get(key)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = self._factory(key)
                if not isinstance(breaker, CircuitBreaker):
                    raise TypeError(f"the factory must return a CircuitBreaker, got {breaker!r}")
                self._breakers[key] = breaker
        return breaker

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        wrapped: dict[str, Callable[P, T]] = {}
        breaker_for = self.breaker

        def per_authority(*args: P.args, **kwargs: P.kwargs) -> T:
            key = authority(_request_arg(args))
            call = wrapped.get(key)
            if call is None:
                call = wrapped[key] = breaker_for(key)._wrap_sync(fn)
            return call(*args, **kwargs)

        return per_authority

    def _wrap_async(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        wrapped: dict[str, Callable[P, Awaitable[T]]] = {}
        breaker_for = self.breaker

        async def per_authority(*args: P.args, **kwargs: P.kwargs) -> T:
            key = authority(_request_arg(args))
            call = wrapped.get(key)
            if call is None:
                call = wrapped[key] = breaker_for(key)._wrap_async(fn)
            return await call(*args, **kwargs)

        return per_authority


def _request_arg(args: tuple[Any, ...]) -> httpx.Request:
    if not args or not isinstance(args[0], httpx.Request):
        raise TypeError("a per-authority strategy wraps calls whose first argument is the request")
    return args[0]


def _authority_key(request: httpx.Request, *args: Any, **kwargs: Any) -> str:
    return authority(request)


def standard_pipeline(
    *,
    total_timeout: float = 30.0,
    attempt_timeout: float = 10.0,
    retry: Retry | None = None,
    breaker: Strategy | None = None,
    limiter: RateLimiter | None = None,
    limiter_timeout: float | None = None,
) -> Pipeline:
    """Build the standard HTTP pipeline, outermost first.

    1. a total timeout of ``total_timeout`` seconds for the whole request,
       waits included;
    2. `http_retry` with its defaults: 3 attempts of safe methods on
       transient failures, exponential backoff with jitter, Retry-After
       honoured up to 30 s;
    3. optionally ``limiter``, keyed by authority, so every physical attempt
       counts against the quota; it waits up to ``limiter_timeout`` seconds
       (None: as long as the total timeout allows);
    4. a circuit breaker per authority (`BreakerPerAuthority`) whose window
       is at least twice the attempt timeout;
    5. a timeout of ``attempt_timeout`` seconds for each attempt.

    Args:
        total_timeout: Seconds for the whole request, retries and waits included.
        attempt_timeout: Seconds for one attempt; at most ``total_timeout``.
        retry: Replaces the default `http_retry`.
        breaker: Replaces the default `BreakerPerAuthority`.
        limiter: A client-side rate limiter applied per authority.
        limiter_timeout: Seconds to wait for the limiter; 0 rejects at once.

    Raises:
        ValueError: ``attempt_timeout`` is longer than ``total_timeout``.
    """
    for option, seconds in (("total_timeout", total_timeout), ("attempt_timeout", attempt_timeout)):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"{option} must be seconds (a number), got {seconds!r}")
    if attempt_timeout > total_timeout:
        raise ValueError(
            f"attempt_timeout ({attempt_timeout:g} s) is longer than total_timeout "
            f"({total_timeout:g} s), so it could never fire: shorten it or raise total_timeout"
        )
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry must be a resilio.Retry (see http_retry), got {retry!r}")
    steps: list[Strategy] = [
        _timeout(total_timeout, name="http-total"),
        retry if retry is not None else http_retry(),
    ]
    if limiter is not None:
        if not isinstance(limiter, RateLimiter):
            raise TypeError(f"limiter must be a resilio rate limiter, got {limiter!r}")
        steps.append(limiter.limit(key=_authority_key, timeout=limiter_timeout))
    steps.append(
        breaker if breaker is not None else BreakerPerAuthority(_default_breaker(attempt_timeout))
    )
    steps.append(_timeout(attempt_timeout, name="http-attempt"))
    return Pipeline(*steps, name="http-standard")


def _shrunk(base: dict[str, float | None] | None, remaining: float) -> dict[str, float | None]:
    """Return httpx timeouts no longer than ``remaining`` seconds."""
    remaining = max(remaining, _SHORTEST_TIMEOUT)
    base = base or {}
    shrunk: dict[str, float | None] = {}
    for key in _TIMEOUT_KEYS:
        value = base.get(key)
        shrunk[key] = remaining if value is None else min(value, remaining)
    return shrunk


def _start_attempt(request: httpx.Request) -> tuple[int, float | None]:
    """Mark the attempt number on the request and shrink its timeouts to the deadline."""
    attempt = current_attempt() or 1
    request.extensions[ATTEMPT_EXTENSION] = attempt
    remaining = time_remaining()
    if remaining is not None:
        exchange = _exchange.get()
        base = exchange.timeout if exchange is not None else request.extensions.get("timeout")
        request.extensions["timeout"] = _shrunk(base, remaining)
    return attempt, remaining


def _buffered(response: httpx.Response, body: bytes) -> httpx.Response:
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(body),
        extensions=response.extensions,
    )


def _not_replayable(
    request: httpx.Request, response: httpx.Response | None, error: BaseException | None
) -> NotReplayableError:
    what = f"status {response.status_code}" if response is not None else repr(error)
    return NotReplayableError(
        f"{request.method} {request.url} failed ({what}) and would be retried, but its body "
        "is a one-shot stream (an iterator or a file) that cannot be sent again. Pass the "
        "body as bytes, or call request.read() first, to make it retryable.",
        request=request,
        response=response,
    )


def _read_bound(pipeline: Strategy) -> float | None:
    """The seconds of the innermost timeout in ``pipeline``, the one of each attempt."""
    strategies = pipeline._flat() if isinstance(pipeline, Pipeline) else iter([pipeline])
    bound = None
    for strategy in strategies:
        seconds = strategy._timeout_seconds()
        if seconds is not None:
            bound = seconds
    return bound


def _check_pipeline(pipeline: Strategy | None) -> Strategy:
    if pipeline is None:
        return standard_pipeline()
    if not isinstance(pipeline, Strategy):
        raise TypeError(f"pipeline must be a resilio strategy or Pipeline, got {pipeline!r}")
    return pipeline


class ResilientTransport(httpx.BaseTransport):
    """An httpx transport that sends each request through a resilio pipeline.

    Each attempt goes to the wrapped transport with its httpx timeouts
    shrunk to the time left before the innermost resilio timeout, and with
    its number (from 1) in ``request.extensions["resilio.attempt"]``; the
    response carries the same key. Closing this transport closes the
    wrapped one.

    Args:
        transport: The transport that does the I/O; default ``httpx.HTTPTransport()``.
        pipeline: The strategies, outermost first; default `standard_pipeline`.
        read_body: Read each response body inside the attempt, so the
            attempt timeout covers it and a connection dropped mid-body is
            retried like any transport error. Responses are then held in
            memory; leave it off for streaming and large downloads.

    Raises:
        NotReplayableError: From requests whose one-shot body would need
            another attempt.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        pipeline: Strategy | None = None,
        read_body: bool = False,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport, got {transport!r}")
        self.pipeline = _check_pipeline(pipeline)
        self.read_body = bool(read_body)
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        self._send = self.pipeline(self._attempt)
        self._read_bound = _read_bound(self.pipeline)

    def _attempt(self, request: httpx.Request) -> httpx.Response:
        attempt, remaining = _start_attempt(request)
        response = self._transport.handle_request(request)
        if self.read_body:
            stream = response.stream
            if not isinstance(stream, httpx.SyncByteStream):
                raise TypeError(f"{self._transport!r} returned a response with an async stream")
            try:
                body = b"".join(stream)
            finally:
                response.close()
            response = _buffered(response, body)
        if remaining is not None and time_remaining() == 0:
            # Too late: the enclosing timeout turns this into TimeoutExceeded;
            # close the answer first so its connection goes back to the pool.
            response.close()
            raise httpx.ReadTimeout("the deadline passed as the response arrived", request=request)
        response.extensions[ATTEMPT_EXTENSION] = attempt
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pipeline (called by `httpx.Client`)."""
        exchange = _Exchange(request)
        token = _exchange.set(exchange)
        try:
            try:
                response = self._send(request)
            except Exception as exc:
                if exchange.blocked:
                    raise _not_replayable(request, None, exc) from exc
                raise
            if exchange.blocked:
                response.close()
                raise _not_replayable(request, response, None)
            return response
        finally:
            _exchange.reset(token)
            _restore_timeout(request, exchange, self._read_bound)

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """The async twin of `ResilientTransport`, for ``httpx.AsyncClient``; asyncio and trio.

    Timeouts cancel the attempt for real (through anyio); the httpx timeouts
    of each attempt are shrunk to the time left as well.

    Args:
        transport: The transport that does the I/O; default ``httpx.AsyncHTTPTransport()``.
        pipeline: The strategies, outermost first; default `standard_pipeline`.
        read_body: As for `ResilientTransport`.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        pipeline: Strategy | None = None,
        read_body: bool = False,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        self.pipeline = _check_pipeline(pipeline)
        self.read_body = bool(read_body)
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._send = self.pipeline(self._attempt)
        self._read_bound = _read_bound(self.pipeline)

    async def _attempt(self, request: httpx.Request) -> httpx.Response:
        attempt, _ = _start_attempt(request)
        response = await self._transport.handle_async_request(request)
        if self.read_body:
            stream = response.stream
            if not isinstance(stream, httpx.AsyncByteStream):
                raise TypeError(f"{self._transport!r} returned a response with a sync stream")
            try:
                body = b"".join([chunk async for chunk in stream])
            finally:
                await response.aclose()
            response = _buffered(response, body)
        response.extensions[ATTEMPT_EXTENSION] = attempt
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pipeline (called by `httpx.AsyncClient`)."""
        exchange = _Exchange(request)
        token = _exchange.set(exchange)
        try:
            try:
                response = await self._send(request)
            except Exception as exc:
                if exchange.blocked:
                    raise _not_replayable(request, None, exc) from exc
                raise
            if exchange.blocked:
                await response.aclose()
                raise _not_replayable(request, response, None)
            return response
        finally:
            _exchange.reset(token)
            _restore_timeout(request, exchange, self._read_bound)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()


def _restore_timeout(request: httpx.Request, exchange: _Exchange, read_bound: float | None) -> None:
    """Put the client's timeouts back on ``request``, for reading the body after the pipeline.

    A read the client leaves unbounded (``timeout=None``: the pipeline owns the
    timeouts) waits at most ``read_bound`` seconds, the pipeline's timeout of
    one attempt: a body that stalls fails instead of hanging the caller.
    """
    timeout = exchange.timeout
    if read_bound is not None and (timeout is None or timeout.get("read") is None):
        timeout = {**dict.fromkeys(_TIMEOUT_KEYS), **(timeout or {}), "read": read_bound}
    if timeout is None:
        request.extensions.pop("timeout", None)
    else:
        request.extensions["timeout"] = timeout
