"""RateLimitMiddleware on Starlette and the FastAPI dependency, over real uvicorn and httpx."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from resilio import AllOf, FixedWindow, TokenBucket
from resilio._http_headers import parse_ratelimit
from resilio.asgi import RateLimitMiddleware, Rule, client_address
from resilio.fastapi import RateLimit
from resilio.testing import FakeClock, use_clock

from .apps import Calls, fastapi_app, starlette_app
from .servers import ServerThread

MINUTE = 60.0


@pytest.fixture(autouse=True)
def _frozen_limiter_time() -> Iterator[None]:
    """Limiters here read a clock that stands still in the middle of a window.

    Fixed windows are aligned on the clock: on the real one, a boundary passing
    between two requests of a test would refill the window and change the answer.
    """
    with use_clock(FakeClock(start=1_000_000.5)):
        yield


@contextmanager
def serving(app: Any) -> Iterator[httpx.Client]:
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=5.0) as client:
        yield client


def items(response: httpx.Response, header: str) -> dict[str, dict[str, str]]:
    parsed = parse_ratelimit(response.headers.get(header))
    assert parsed is not None, response.headers
    return dict(parsed)


def by_header(scope: Any) -> str | None:
    """Key requests by the X-Client header (tests all come from 127.0.0.1)."""
    for name, value in scope["headers"]:
        if name == b"x-client":
            return str(value.decode())
    return None


# -- admitted and rejected responses ---------------------------------------------------------


def test_admitted_responses_carry_the_ratelimit_fields() -> None:
    calls = Calls()
    app = starlette_app(calls, limiter=FixedWindow(limit=3, window=MINUTE))
    with serving(app) as http:
        responses = [http.get("/a") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [items(r, "RateLimit")["default"]["r"] for r in responses] == ["2", "1", "0"]
    assert items(responses[0], "RateLimit-Policy") == {"default": {"q": "3", "w": "60"}}
    assert 0 < int(items(responses[0], "RateLimit")["default"]["t"]) <= 60
    assert "x-ratelimit-limit" not in responses[0].headers
    assert calls.count == 3


def test_rejection_is_429_with_retry_after_and_a_problem_document() -> None:
    calls = Calls()
    app = starlette_app(calls, limiter=TokenBucket(rate=1, per=30.0, capacity=1), x_headers=True)
    with serving(app) as http:
        first = http.get("/a")
        rejected = http.get("/a")
    assert first.status_code == 200
    assert rejected.status_code == 429
    assert calls.count == 1  # the application never saw the rejected request
    retry_after = int(rejected.headers["Retry-After"])
    assert 28 <= retry_after <= 30
    assert items(rejected, "RateLimit") == {"default": {"r": "0", "t": str(retry_after)}}
    assert items(rejected, "RateLimit-Policy") == {"default": {"q": "1", "w": "30"}}
    assert rejected.headers["content-type"] == "application/problem+json"
    document = rejected.json()
    assert document["type"].endswith("#quota-exceeded")
    assert document["status"] == 429
    assert document["violated-policies"] == ["default"]
    assert rejected.headers["X-RateLimit-Limit"] == "1"
    assert rejected.headers["X-RateLimit-Remaining"] == "0"
    assert rejected.headers["X-RateLimit-Reset"] == str(retry_after)
    assert first.headers["X-RateLimit-Remaining"] == "0"


def test_headers_can_be_turned_off() -> None:
    app = starlette_app(Calls(), limiter=FixedWindow(limit=1, window=MINUTE), headers=False)
    with serving(app) as http:
        admitted, rejected = http.get("/a"), http.get("/a")
    assert "ratelimit" not in admitted.headers
    assert rejected.status_code == 429
    assert "ratelimit" not in rejected.headers
    assert "retry-after" in rejected.headers  # a 429 always says when to come back


# -- stacked and routed limits ---------------------------------------------------------------


def test_stacked_limits_admit_exactly_what_both_allow() -> None:
    per_client = FixedWindow(limit=3, window=MINUTE, name="per-client")
    overall = FixedWindow(limit=4, window=MINUTE, name="global")
    rules = [
        Rule(per_client, key=by_header),
        Rule(overall, key=lambda scope: "everyone"),
    ]
    calls = Calls()
    with serving(starlette_app(calls, rules=rules)) as http:

        def get(client: str) -> int:
            return http.get("/a", headers={"X-Client": client}).status_code

        statuses = [get("a"), get("a"), get("a"), get("a"), get("b"), get("b"), get("b")]
    # a: 3 admitted (its own limit), then rejected; b: 1 admitted (the global limit of 4).
    assert statuses == [200, 200, 200, 429, 200, 429, 429]
    assert calls.count == 4
    # Rejected requests consumed nothing: b used 1 of its 3 (a peek reports what would
    # remain after one more), the global window is full.
    assert per_client.peek("b").remaining == 1
    assert per_client.peek("a").remaining == 0
    assert overall.peek("everyone").remaining == 0


def test_a_rejection_reports_every_rule_and_the_longest_wait() -> None:
    short = FixedWindow(limit=1, window=10.0, name="short")
    long = FixedWindow(limit=1, window=100.0, name="long")
    with serving(starlette_app(Calls(), rules=[Rule(short), Rule(long)])) as http:
        http.get("/a")
        rejected = http.get("/a")
    assert rejected.status_code == 429
    fields = items(rejected, "RateLimit")
    assert set(fields) == {"short", "long"}
    # Windows are aligned on the clock, so the long one always ends last.
    assert int(rejected.headers["Retry-After"]) == int(fields["long"]["t"])
    assert int(fields["long"]["t"]) >= int(fields["short"]["t"]) > 0
    assert rejected.json()["violated-policies"] == ["short", "long"]
    assert items(rejected, "RateLimit-Policy") == {
        "short": {"q": "1", "w": "10"},
        "long": {"q": "1", "w": "100"},
    }


def test_rules_apply_per_path_pattern_and_method() -> None:
    rules = [
        Rule(FixedWindow(limit=2, window=MINUTE), name="api", path="/api/*"),
        Rule(FixedWindow(limit=1, window=MINUTE), name="login", path="/login", methods=["post"]),
        Rule(FixedWindow(limit=1, window=MINUTE), name="admin", path=re.compile(r"/admin/\d+")),
    ]
    with serving(starlette_app(Calls(), rules=rules)) as http:
        api = [http.get(f"/api/items/{i}").status_code for i in range(3)]
        login = [http.post("/login").status_code for _ in range(2)]
        login_get = http.get("/login")
        admin = [http.get("/admin/7").status_code for _ in range(2)]
        admin_other = http.get("/admin/x")
        free = http.get("/elsewhere")
    assert api == [200, 200, 429]
    assert login == [200, 429]
    assert login_get.status_code == 200
    assert "ratelimit" not in login_get.headers
    assert admin == [200, 429]
    assert admin_other.status_code == 200
    assert free.status_code == 200
    assert "ratelimit" not in free.headers


def test_limiter_of_several_limits_names_the_binding_one() -> None:
    both = AllOf(FixedWindow(limit=2, window=10.0), FixedWindow(limit=5, window=100.0))
    with serving(starlette_app(Calls(), rules=[Rule(both, name="api")])) as http:
        first = http.get("/a")
        http.get("/a")
        rejected = http.get("/a")
    assert set(items(first, "RateLimit-Policy")) == {"api.0", "api.1"}
    assert items(first, "RateLimit") == {
        "api.0": {"r": "1", "t": items(first, "RateLimit")["api.0"]["t"]}
    }
    assert rejected.json()["violated-policies"] == ["api.0"]


# -- keys ---------------------------------------------------------------------------------------


def test_proxy_headers_are_ignored_unless_the_proxy_is_trusted() -> None:
    untrusted = starlette_app(Calls(), limiter=FixedWindow(limit=1, window=MINUTE))
    with serving(untrusted) as http:
        first = http.get("/a", headers={"X-Forwarded-For": "1.1.1.1"})
        spoofed = http.get("/a", headers={"X-Forwarded-For": "2.2.2.2"})
    assert (first.status_code, spoofed.status_code) == (200, 429)

    trusted = starlette_app(
        Calls(),
        limiter=FixedWindow(limit=1, window=MINUTE),
        key=client_address(trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"]),
    )
    with serving(trusted) as http:
        one = http.get("/a", headers={"X-Forwarded-For": "1.1.1.1"})
        two = http.get("/a", headers={"X-Forwarded-For": "2.2.2.2"})
        # The left-most hop is whatever the client wrote; the right-most untrusted one counts.
        forged = http.get("/a", headers={"X-Forwarded-For": "9.9.9.9, 1.1.1.1, 10.0.0.5"})
    assert (one.status_code, two.status_code, forged.status_code) == (200, 200, 429)


def test_client_address_rules() -> None:
    key = client_address(trusted_proxies=["10.0.0.1"])

    def scope(peer: str | None, forwarded: str | None = None) -> dict[str, Any]:
        headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
        return {"client": None if peer is None else (peer, 1234), "headers": headers}

    assert client_address()(scope("1.2.3.4", "5.6.7.8")) == "1.2.3.4"
    assert key(scope("1.2.3.4", "5.6.7.8")) == "1.2.3.4"
    assert key(scope("10.0.0.1", "5.6.7.8")) == "5.6.7.8"
    assert key(scope("10.0.0.1", "10.0.0.1")) == "10.0.0.1"
    assert key(scope("10.0.0.1")) == "10.0.0.1"
    assert key(scope(None)) == "unknown"
    with pytest.raises(ValueError, match="trusted_proxies"):
        client_address(trusted_proxies=["not-an-ip"])


def test_async_key_and_exempt_requests() -> None:
    async def api_key(scope: Any) -> str | None:
        return by_header(scope)

    calls = Calls()
    app = starlette_app(calls, limiter=FixedWindow(limit=1, window=MINUTE), key=api_key)
    with serving(app) as http:
        keyed = [http.get("/a", headers={"X-Client": "k"}).status_code for _ in range(2)]
        anonymous = [http.get("/a") for _ in range(3)]
    assert keyed == [200, 429]
    assert [r.status_code for r in anonymous] == [200, 200, 200]
    assert "ratelimit" not in anonymous[0].headers


# -- streaming (case L12), other scopes ----------------------------------------------------------


def test_streaming_response_headers_arrive_before_the_body_exists() -> None:
    calls = Calls()
    app = starlette_app(calls, limiter=FixedWindow(limit=5, window=MINUTE))
    with (
        ServerThread(app) as server,
        httpx.stream("GET", f"{server.url}/stream", timeout=5.0) as response,
    ):
        # Headers are here, with the limit, while the endpoint has not produced a byte.
        assert response.status_code == 200
        assert not calls.produced.is_set()
        assert items(response, "RateLimit")["default"]["r"] == "4"
        started = time.monotonic()
        calls.gate.set()
        chunks = response.iter_bytes()
        first = next(chunks)
        first_byte = time.monotonic() - started
        rest = b"".join(chunks)
    assert (first + rest) == b"first;second"
    assert first_byte < 1.0


@pytest.mark.anyio
async def test_other_scopes_pass_through_untouched() -> None:
    seen: list[str] = []
    limiter = FixedWindow(limit=1, window=MINUTE)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        raise AssertionError(f"the middleware sent {message}")

    middleware = RateLimitMiddleware(app, limiter=limiter)
    for kind in ("lifespan", "websocket", "websocket"):
        await middleware(
            {"type": kind, "path": "/ws", "headers": [], "client": ("1.2.3.4", 1)}, receive, send
        )
    assert seen == ["lifespan", "websocket", "websocket"]
    assert limiter.peek("1.2.3.4").allowed  # nothing was consumed


def test_configuration_errors() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    limiter = FixedWindow(limit=1, window=MINUTE)
    with pytest.raises(ValueError, match="limiter= or some rules="):
        RateLimitMiddleware(app)
    with pytest.raises(ValueError, match="distinct names"):
        RateLimitMiddleware(app, rules=[Rule(limiter, name="x"), Rule(limiter, name="x")])
    with pytest.raises(ValueError, match="starting with '/'"):
        Rule(limiter, path="api/*")
    with pytest.raises(ValueError, match="cost"):
        Rule(limiter, cost=2)
    with pytest.raises(ValueError, match="printable ASCII"):
        Rule(limiter, name="per client ✓")
    with pytest.raises(TypeError, match="rate limiter"):
        Rule(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not the string 'POST'"):
        Rule(limiter, methods="POST")  # its letters would be the methods: never matches
    with pytest.raises(ValueError, match="one or more method names"):
        Rule(limiter, methods=[])
    with pytest.raises(TypeError, match="headers= takes True or False"):
        RateLimitMiddleware(app, limiter, headers="no")  # type: ignore[arg-type]


# -- FastAPI ------------------------------------------------------------------------------------


def test_fastapi_dependency_limits_one_route() -> None:
    calls = Calls()
    per_route = RateLimit(FixedWindow(limit=2, window=MINUTE), name="limited", x_headers=True)
    with serving(fastapi_app(calls, per_route)) as http:
        admitted = [http.get("/limited") for _ in range(2)]
        rejected = http.get("/limited")
        free = [http.get("/free").status_code for _ in range(4)]
    assert [r.json() for r in admitted] == [{"remaining": 1}, {"remaining": 0}]
    assert items(admitted[0], "RateLimit") == {
        "limited": {"r": "1", "t": items(admitted[0], "RateLimit")["limited"]["t"]}
    }
    assert items(admitted[0], "RateLimit-Policy") == {"limited": {"q": "2", "w": "60"}}
    assert admitted[1].headers["X-RateLimit-Remaining"] == "0"
    assert rejected.status_code == 429
    assert 0 < int(rejected.headers["Retry-After"]) <= 60
    assert items(rejected, "RateLimit")["limited"]["r"] == "0"
    assert "Rate limit exceeded" in json.loads(rejected.text)["detail"]
    assert free == [200, 200, 200, 200]
    assert calls.count == 2 + 4


def test_fastapi_with_the_middleware_and_the_dependency() -> None:
    calls = Calls()
    per_route = RateLimit(FixedWindow(limit=5, window=MINUTE), name="route")
    app = fastapi_app(calls, per_route, limiter=FixedWindow(limit=3, window=MINUTE))
    with serving(app) as http:
        statuses = [http.get("/limited").status_code for _ in range(4)]
        last = http.get("/free")
    assert statuses == [200, 200, 200, 429]
    assert last.status_code == 429  # the middleware's limit covers every route
    assert calls.count == 3
