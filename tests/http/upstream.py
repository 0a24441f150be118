"""An ASGI service whose failures the httpx tests script through the URL.

Every path is ``/<behaviour>/<key>``; the service counts requests per key
(`Upstream.hits`), so a test uses a fresh key and can tell how many requests
reached the server. Query parameters say how the first ``fail`` requests of a
key fail; later ones answer ``200`` with ``ok <n>``:

* ``/status/<key>?fail=N&status=503&retry_after=...&ratelimit=...``: answer
  ``status`` with the given ``Retry-After`` and ``RateLimit`` headers;
* ``/slow/<key>?fail=N&delay=2``: wait ``delay`` seconds before answering;
* ``/drop/<key>?fail=N``: promise 1000 bytes, send 10, close the connection;
* ``/stall/<key>?fail=N``: promise 1000 bytes, send 10, then nothing for 3 s;
* ``/trickle/<key>?fail=N&every=0.05``: send 60 bytes, one every ``every`` seconds;
* ``/echo/<key>``: (after the failures) answer with the request body.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Upstream:
    """The service; ``hits[key]`` counts the requests each key received."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.bodies: dict[str, list[bytes]] = collections.defaultdict(list)
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        _, behaviour, key = ([*scope["path"].split("/", 2), "", ""])[:3]
        query = {
            name: values[-1] for name, values in parse_qs(scope["query_string"].decode()).items()
        }
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            self.hits[key] += 1
            self.bodies[key].append(body)
            n = self.hits[key]
        failing = n <= int(query.get("fail", "0"))
        if failing and behaviour == "status":
            headers = []
            for name, header in (("retry_after", b"retry-after"), ("ratelimit", b"ratelimit")):
                if name in query:
                    headers.append((header, query[name].encode()))
            await _answer(send, int(query.get("status", "503")), b"failed", headers)
            return
        if failing and behaviour == "slow":
            await asyncio.sleep(float(query.get("delay", "2")))
        if failing and behaviour == "drop":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1000")],
                }
            )
            await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
            return  # uvicorn closes the connection of an unfinished response
        if failing and behaviour == "stall":
            headers = [(b"content-length", b"1000")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
            await asyncio.sleep(3)
            return
        if failing and behaviour == "trickle":
            headers = [(b"content-length", b"60")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for _ in range(60):
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
                await asyncio.sleep(float(query.get("every", "0.05")))
            await send({"type": "http.response.body", "body": b""})
            return
        content = body if behaviour == "echo" else f"ok {n}".encode()
        await _answer(send, 200, content, [])


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
