"""Per-route rate limits for FastAPI, as a dependency.

``RateLimit`` applies one limiter to the routes that depend on it::

    from fastapi import Depends, FastAPI
    import resilio
    from resilio.fastapi import RateLimit

    app = FastAPI()
    login_limit = RateLimit(resilio.SlidingWindow("5/minute"), name="login")

    @app.post("/login", dependencies=[Depends(login_limit)])
    async def login() -> dict[str, str]: ...

For limits over the whole application, or over path patterns, use
`resilio.asgi.RateLimitMiddleware`; both write the same headers.
"""

from __future__ import annotations

try:
    from fastapi import HTTPException, Request, Response
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "resilio.fastapi needs FastAPI: install it with pip install 'resilio[fastapi]'"
    ) from exc

from ._core.limiters import Decision
from ._limiter import RateLimiter
from .asgi import KeyFunction, Rule, client_address, ratelimit_headers, resolve_key, retry_after

__all__ = ["RateLimit"]


class RateLimit:
    """A FastAPI dependency that admits a request through a rate limiter, or answers 429.

    Use it in ``dependencies=[Depends(limit)]`` or as a parameter
    (``decision: Decision = Depends(limit)``) to read the `resilio.Decision`.
    A rejection raises ``HTTPException(429)`` with ``Retry-After`` and the
    RateLimit headers (FastAPI's handler turns it into a JSON answer). An
    admitted request gets the RateLimit headers on its response, unless the
    endpoint returns a ``Response`` object itself: FastAPI only adds
    dependency headers to responses it builds.

    Args:
        limiter: The rate limiter; it is asked through its async methods.
        key: Whose quota a request uses: a function of the ASGI scope (sync
            or async) returning a str, or None to exempt the request. Default:
            the client address (`resilio.asgi.client_address`).
        name: The policy name in the headers; default the limiter's name.
        cost: The units one request uses.
        headers: Send ``RateLimit`` and ``RateLimit-Policy``.
        x_headers: Also send the ``X-RateLimit-*`` headers.
    """

    __slots__ = ("_key", "_rule", "headers", "x_headers")

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        key: KeyFunction | None = None,
        name: str | None = None,
        cost: int = 1,
        headers: bool = True,
        x_headers: bool = False,
    ) -> None:
        self._rule = Rule(limiter, key=key, name=name, cost=cost)
        self._key: KeyFunction = key if key is not None else client_address()
        self.headers = bool(headers)
        self.x_headers = bool(x_headers)

    def __repr__(self) -> str:
        return f"RateLimit({self._rule.limiter!r}, name={self._rule.name!r})"

    async def __call__(self, request: Request, response: Response) -> Decision | None:
        """Admit the request or raise ``HTTPException(429)``; None when it is exempt."""
        key = await resolve_key(self._key, request.scope)
        if key is None:
            return None
        rule = self._rule
        decision = await rule.limiter.try_acquire_async(key, rule.cost)
        pairs = [(rule, decision)]
        extra = ratelimit_headers(pairs, ietf=self.headers, legacy=self.x_headers)
        if not decision.allowed:
            seconds = retry_after(pairs)
            fields = {"Retry-After": str(seconds)}
            fields.update((name.decode(), value.decode()) for name, value in extra)
            raise HTTPException(
                status_code=429,
                detail=f"Rate limit exceeded; retry in {seconds} s.",
                headers=fields,
            )
        for name, value in extra:
            response.headers.append(name.decode(), value.decode())
        return decision
