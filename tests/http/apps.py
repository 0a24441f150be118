"""Applications behind the rate-limit middleware and dependency, for the tests.

`starlette_app` and `fastapi_app` are served in-process by `ServerThread`;
`redis_app` is the factory ``uvicorn --workers N`` imports in each worker.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at
# runtime, and they name a local variable (the dependency).
import os
import threading
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from resilio import FixedWindow
from resilio._core.limiters import Decision
from resilio.asgi import RateLimitMiddleware, Rule
from resilio.fastapi import RateLimit

__all__ = ["Calls", "fastapi_app", "redis_app", "starlette_app"]

STREAM_WAIT = 10.0  # seconds the streaming endpoint waits for the test to let it go on


class Calls:
    """What reached the application behind the middleware."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = threading.Event()  # the streaming endpoint produces its body once set
        self.produced = threading.Event()  # set once the first body chunk exists


def starlette_app(calls: Calls, **middleware: Any) -> Starlette:
    """A Starlette app with plain and streaming endpoints, behind `RateLimitMiddleware`."""

    async def hello(request: Request) -> PlainTextResponse:
        calls.count += 1
        return PlainTextResponse(f"hello {request.url.path}")

    async def stream(request: Request) -> StreamingResponse:
        calls.count += 1

        async def body() -> Any:
            await anyio.to_thread.run_sync(calls.gate.wait, STREAM_WAIT)
            calls.produced.set()
            yield b"first;"
            yield b"second"

        return StreamingResponse(body(), media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/stream", stream),
            Route("/{path:path}", hello, methods=["GET", "POST"]),
        ]
    )
    app.add_middleware(RateLimitMiddleware, **middleware)
    return app


def fastapi_app(calls: Calls, per_route: RateLimit, **middleware: Any) -> FastAPI:
    """A FastAPI app: one route behind the `RateLimit` dependency, optionally the middleware."""
    app = FastAPI()

    @app.get("/limited")
    async def limited(decision: Annotated[Decision | None, Depends(per_route)]) -> dict[str, Any]:
        calls.count += 1
        return {"remaining": decision.remaining if decision is not None else None}

    @app.get("/free")
    async def free() -> dict[str, str]:
        calls.count += 1
        return {"free": "yes"}

    if middleware:
        app.add_middleware(RateLimitMiddleware, **middleware)
    return app


def redis_app() -> Starlette:
    """One global limit on Redis, shared by every worker; ``/pid`` is exempt and says who answered.

    Configured by ``REDIS_URL``, ``RESILIO_PREFIX`` and ``RESILIO_LIMIT`` (per minute).
    """
    import redis.asyncio

    from resilio.redis import RedisStore

    client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2.0)
    store = RedisStore(client, prefix=os.environ["RESILIO_PREFIX"])
    limiter = FixedWindow(limit=int(os.environ["RESILIO_LIMIT"]), window=600.0, store=store)

    async def pid(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(os.getpid()))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/pid", pid), Route("/limited", pid), Route("/health", health)])
    app.add_middleware(
        RateLimitMiddleware,
        rules=[Rule(limiter, name="global", path="/limited", key=lambda scope: "all")],
    )
    return app
