"""Rate limiting for ASGI applications (Starlette, FastAPI, any ASGI framework).

`RateLimitMiddleware` is pure ASGI: it decides before the application runs,
answers ``429 Too Many Requests`` itself when a limit is exhausted, and adds
the IETF ``RateLimit`` and ``RateLimit-Policy`` headers to the responses it
lets through, without buffering or delaying them::

    from starlette.applications import Starlette
    import resilio
    from resilio.asgi import RateLimitMiddleware

    app = Starlette(...)
    app.add_middleware(RateLimitMiddleware, limiter=resilio.SlidingWindow("100/minute"))

It needs no package beyond resilio. See ``docs/asgi.md``.
"""

from __future__ import annotations

import fnmatch
import inspect
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, Final

from ._core.limiters import Decision, make_decision
from ._http_headers import check_policy_name, delay_seconds, format_items, policy_terms
from ._limiter import RateLimiter

__all__ = [
    "ASGIApp",
    "KeyFunction",
    "RateLimitMiddleware",
    "Rule",
    "client_address",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Returns the key (whose quota a request uses) from the ASGI scope, or None
#: to exempt the request. May be a coroutine function.
KeyFunction = Callable[[Scope], "str | Awaitable[str | None] | None"]
Header = tuple[bytes, bytes]

PROBLEM_TYPE: Final = "https://iana.org/assignments/http-problem-types#quota-exceeded"
_UNKNOWN_CLIENT: Final = "unknown"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(entry: str) -> _Network:
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"trusted_proxies takes IP addresses or networks, got {entry!r}") from exc


def client_address(trusted_proxies: Iterable[str] = ()) -> KeyFunction:
    """Return a key function that gives the client's IP address.

    By default the key is the address of the peer that opened the connection
    (``scope["client"]``), and ``X-Forwarded-For`` is ignored: anybody can
    send that header. Behind reverse proxies, list them in
    ``trusted_proxies``: when the peer is one of them, the key is the
    right-most address in ``X-Forwarded-For`` that is not a trusted proxy
    (the one the outermost trusted proxy saw).

    Requests without a client address (a Unix socket, some test clients)
    share the key ``"unknown"``.

    Args:
        trusted_proxies: Addresses or networks (``"10.0.0.0/8"``,
            ``"127.0.0.1"``, ``"::1"``) of proxies whose headers are trusted.

    Raises:
        ValueError: An entry is not an IP address or network.
    """
    networks = [_network(entry) for entry in trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    def key(scope: Scope) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else _UNKNOWN_CLIENT
        if not networks or not trusted(peer):
            return peer
        hops: list[str] = [
            hop.strip()
            for name, value in scope.get("headers", ())
            if name == b"x-forwarded-for"
            for hop in value.decode("latin-1").split(",")
        ]
        for hop in reversed(hops):
            if hop and not trusted(hop):
                return hop
        return next((hop for hop in hops if hop), peer)

    return key


def _path_matcher(path: str | re.Pattern[str] | None) -> Callable[[str], bool] | None:
    if path is None:
        return None
    if isinstance(path, re.Pattern):
        return lambda text: path.fullmatch(text) is not None
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(
            f"path must be a pattern starting with '/' or a compiled regex, got {path!r}"
        )
    if not any(char in path for char in "*?["):
        return path.__eq__
    pattern = re.compile(fnmatch.translate(path))
    return lambda text: pattern.match(text) is not None


def _methods(methods: Iterable[str]) -> frozenset[str]:
    """``methods`` upper-cased, refusing a bare string and an empty set (which match nothing)."""
    if isinstance(methods, (str, bytes)):
        raise TypeError(
            f"methods= takes a collection of method names, such as [{methods!r}], "
            f"not the string {methods!r} (whose letters would be the methods)"
        )
    names = list(methods)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(
            f"methods= takes one or more method names such as ['GET', 'POST'], got {names!r}; "
            "leave it out to apply the rule to every method"
        )
    return frozenset(name.upper() for name in names)


class Rule:
    """One limit of a `RateLimitMiddleware`: a limiter and the requests it applies to.

    Args:
        limiter: The rate limiter (any algorithm, any store).
        key: Whose quota a request uses; default the middleware's key (the
            client address). Return a constant (``lambda scope: "all"``) for a
            global limit, or None to exempt a request from this rule.
        name: The policy name in the RateLimit headers; default the limiter's name.
        path: Which paths the rule applies to: an exact path (``"/login"``),
            a shell-style pattern where ``*`` matches anything, slashes
            included (``"/api/*"``), or a compiled regular expression that
            must match the whole path. Default: every path.
        methods: The methods the rule applies to (upper case); default all.
        cost: The units one request uses.
    """

    __slots__ = ("_match", "cost", "key", "limiter", "methods", "name", "policies")

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        key: KeyFunction | None = None,
        name: str | None = None,
        path: str | re.Pattern[str] | None = None,
        methods: Iterable[str] | None = None,
        cost: int = 1,
    ) -> None:
        if not isinstance(limiter, RateLimiter):
            raise TypeError(f"limiter must be a resilio rate limiter, got {limiter!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of the ASGI scope, got {key!r}")
        if isinstance(cost, bool) or not isinstance(cost, int) or not 0 < cost <= limiter.max_cost:
            raise ValueError(
                f"cost must be an integer from 1 to the limiter's capacity "
                f"({limiter.max_cost}), got {cost!r}"
            )
        self.limiter = limiter
        self.key = key
        self.name = check_policy_name(limiter.name if name is None else name)
        self._match = _path_matcher(path)
        self.methods = None if methods is None else _methods(methods)
        self.cost = cost
        limits = limiter._limits  # the algorithms behind the limiter, for RateLimit-Policy
        if len(limits) == 1:
            names = [self.name]
        else:
            names = [f"{self.name}.{i}" for i in range(len(limits))]
        #: (policy name, capacity, quota, window in seconds) of each limit.
        self.policies: tuple[tuple[str, int, int, int], ...] = tuple(
            (policy, limit.capacity, *policy_terms(limit))
            for policy, limit in zip(names, limits, strict=True)
        )

    def __repr__(self) -> str:
        return f"Rule({self.limiter!r}, name={self.name!r})"

    def applies(self, scope: Scope) -> bool:
        """Whether this rule limits the request of ``scope``."""
        if self.methods is not None and scope.get("method") not in self.methods:
            return False
        return self._match is None or self._match(scope["path"])

    def policy_name(self, decision: Decision) -> str:
        """The name of the limit that bound ``decision`` (for a limiter of several limits)."""
        for name, capacity, _, _ in self.policies:
            if capacity == decision.limit:
                return name
        return self.policies[0][0]


async def resolve_key(key: KeyFunction, scope: Scope) -> str | None:
    """Call a key function, sync or async, and check what it returns."""
    value = key(scope)
    if inspect.isawaitable(value):
        value = await value
    if value is not None and not isinstance(value, str):
        raise TypeError(f"the key function {key!r} returned {value!r}; return a str or None")
    return value


async def decide(active: Sequence[tuple[Rule, str]]) -> tuple[bool, list[tuple[Rule, Decision]]]:
    """Apply every (rule, key) as one decision: admitted by all, or consumed in none.

    A single rule is one atomic store call. With several, all but the last
    are first asked without consuming (peek); only if they would all admit
    is the last one acquired, then the others. So a rejected request
    consumes nothing, unless a concurrent request takes the last unit of an
    earlier rule between its peek and its acquire: then this request is
    rejected having consumed in the rules before it (an under-admission,
    never an over-admission).
    """
    if len(active) == 1:
        rule, key = active[0]
        decision = await rule.limiter.try_acquire_async(key, rule.cost)
        return decision.allowed, [(rule, decision)]
    *first, (last, last_key) = active
    peeks = [(rule, await rule.limiter.peek_async(key, rule.cost)) for rule, key in first]
    if not all(decision.allowed for _, decision in peeks):
        peeks.append((last, await last.limiter.peek_async(last_key, last.cost)))
        return False, _untouched(peeks)
    final = await last.limiter.try_acquire_async(last_key, last.cost)
    if not final.allowed:
        return False, _untouched([*peeks, (last, final)])
    taken: list[tuple[Rule, Decision]] = []
    for rule, key in first:
        decision = await rule.limiter.try_acquire_async(key, rule.cost)
        taken.append((rule, decision))
        if not decision.allowed:
            return False, taken
    return True, [*taken, (last, final)]


def _untouched(decisions: list[tuple[Rule, Decision]]) -> list[tuple[Rule, Decision]]:
    """Report peeks that would admit as they are: the request consumed nothing there."""
    return [
        (rule, d)
        if not d.allowed
        else (rule, make_decision(True, d.remaining + rule.cost, 0.0, d.reset_after, d.limit))
        for rule, d in decisions
    ]


def ratelimit_headers(
    decisions: Sequence[tuple[Rule, Decision]], *, ietf: bool = True, legacy: bool = False
) -> list[Header]:
    """Build the RateLimit headers describing ``decisions`` (see ``docs/asgi.md``).

    ``t`` is the seconds until a rejected request would fit, or, for an
    admitted one, until the quota is whole again.
    """
    headers: list[Header] = []
    if ietf:
        items = [
            (rule.policy_name(d), (("r", d.remaining), ("t", _reset(d)))) for rule, d in decisions
        ]
        policies = [
            (name, (("q", quota), ("w", window)))
            for rule, _ in decisions
            for name, _, quota, window in rule.policies
        ]
        headers.append((b"ratelimit", format_items(items).encode()))
        headers.append((b"ratelimit-policy", format_items(policies).encode()))
    if legacy and decisions:
        tightest = min((d for _, d in decisions), key=lambda d: (d.allowed, d.remaining))
        headers += [
            (b"x-ratelimit-limit", str(tightest.limit).encode()),
            (b"x-ratelimit-remaining", str(tightest.remaining).encode()),
            (b"x-ratelimit-reset", str(_reset(tightest)).encode()),
        ]
    return headers


def _reset(decision: Decision) -> int:
    return delay_seconds(decision.reset_after if decision.allowed else decision.retry_after)


def retry_after(decisions: Sequence[tuple[Rule, Decision]]) -> int:
    """Whole seconds until every rejecting rule would admit the request (at least 1)."""
    wait = max((d.retry_after for _, d in decisions if not d.allowed), default=0.0)
    return max(1, delay_seconds(wait))


def problem(decisions: Sequence[tuple[Rule, Decision]], seconds: int) -> dict[str, object]:
    """The ``application/problem+json`` document of a rejection (RFC 9457, quota-exceeded)."""
    violated = [rule.policy_name(d) for rule, d in decisions if not d.allowed]
    return {
        "type": PROBLEM_TYPE,
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Rate limit exceeded; retry in {seconds} s.",
        "violated-policies": violated,
    }


class RateLimitMiddleware:
    """Pure ASGI middleware that applies rate limits before the application runs.

    Every rule that applies to a request (by path and method) is checked, as
    one decision (see `Rule` and ``docs/asgi.md``). A rejected request gets
    ``429`` with ``Retry-After``, the RateLimit headers and a
    ``application/problem+json`` body, and never reaches the application. An
    admitted one goes on at once; the headers are added to its response
    start, so streaming responses are neither buffered nor delayed.
    WebSocket and lifespan scopes pass through untouched. Only the limiters'
    async methods are used.

    Args:
        app: The ASGI application to protect.
        limiter: A limiter applied to every request (a rule named
            ``"default"``); give it, or ``rules``, or both.
        rules: Further limits, per path, method or key.
        key: The default key of every rule; default `client_address` (the
            peer's address, proxy headers not trusted).
        headers: Send ``RateLimit`` and ``RateLimit-Policy`` on every
            limited response, admitted or rejected.
        x_headers: Also send ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``
            and ``X-RateLimit-Reset`` (seconds) for the tightest rule.

    Raises:
        ValueError: No rule, or two rules with one name.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter | None = None,
        *,
        rules: Iterable[Rule] = (),
        key: KeyFunction | None = None,
        headers: bool = True,
        x_headers: bool = False,
    ) -> None:
        every: list[Rule] = [] if limiter is None else [Rule(limiter, name="default")]
        for rule in rules:
            if not isinstance(rule, Rule):
                raise TypeError(f"rules takes resilio.asgi.Rule objects, got {rule!r}")
            every.append(rule)
        if not every:
            raise ValueError("give RateLimitMiddleware a limiter= or some rules=")
        names = [rule.name for rule in every]
        if len(set(names)) != len(names):
            raise ValueError(f"rules need distinct names (they name policies), got {names}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of the ASGI scope, got {key!r}")
        self.app = app
        self.rules: tuple[Rule, ...] = tuple(every)
        self.key: KeyFunction = key if key is not None else client_address()
        for option, value in (("headers", headers), ("x_headers", x_headers)):
            if not isinstance(value, bool):
                raise TypeError(f"{option}= takes True or False, got {value!r}")
        self.headers = headers
        self.x_headers = x_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        active: list[tuple[Rule, str]] = []
        keys: dict[int, str | None] = {}  # one call per key function per request
        for rule in self.rules:
            if not rule.applies(scope):
                continue
            function = rule.key or self.key
            if id(function) not in keys:
                keys[id(function)] = await resolve_key(function, scope)
            key = keys[id(function)]
            if key is not None:
                active.append((rule, key))
        if not active:
            await self.app(scope, receive, send)
            return
        allowed, decisions = await decide(active)
        extra = ratelimit_headers(decisions, ietf=self.headers, legacy=self.x_headers)
        if not allowed:
            await self._reject(send, decisions, extra)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers if extra else send)

    async def _reject(
        self, send: Send, decisions: Sequence[tuple[Rule, Decision]], extra: list[Header]
    ) -> None:
        seconds = retry_after(decisions)
        body = json.dumps(problem(decisions, seconds)).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(seconds).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
