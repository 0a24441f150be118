"""A FastAPI app with rate limits per client, shared through Redis by every worker.

* every request: 20 per minute per client address (a sliding window), and
  300 per minute for the whole service, applied by `RateLimitMiddleware`
  before FastAPI runs;
* ``POST /login``: also 5 per minute per client, through the `RateLimit`
  dependency on that route alone.

Limits live in Redis, so every worker process and every host agrees::

    REDIS_URL=redis://localhost:6379/0 uvicorn examples.fastapi_app:app --workers 4

Behind a reverse proxy, list it in ``TRUSTED_PROXIES`` (comma separated
addresses or networks) so the client address is read from X-Forwarded-For.
"""

from __future__ import annotations

import os

import redis.asyncio
from fastapi import Depends, FastAPI

from resilio import FixedWindow, SlidingWindow
from resilio.asgi import RateLimitMiddleware, Rule, client_address
from resilio.fastapi import RateLimit
from resilio.redis import RedisStore


def create_app(redis_url: str, *, prefix: str = "example:", trusted_proxies: str = "") -> FastAPI:
    """Build the app on the Redis server at ``redis_url``."""
    # A bounded socket timeout (seconds): a dead Redis must not hang requests.
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.5)
    store = RedisStore(client, prefix=prefix)
    proxies = [entry for entry in trusted_proxies.split(",") if entry.strip()]
    per_client = client_address(trusted_proxies=proxies)

    app = FastAPI(title="resilio rate limit example")
    app.add_middleware(
        RateLimitMiddleware,
        key=per_client,
        rules=[
            Rule(SlidingWindow("20/minute", name="per-client", store=store)),
            Rule(
                SlidingWindow("300/minute", name="service", store=store),
                key=lambda scope: "everyone",
            ),
        ],
    )
    login_limit = RateLimit(FixedWindow("5/minute", name="login", store=store), key=per_client)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.post("/login", dependencies=[Depends(login_limit)])
    async def login() -> dict[str, str]:
        return {"token": "not-a-real-token"}

    return app


app = create_app(
    os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
    trusted_proxies=os.environ.get("TRUSTED_PROXIES", ""),
)
