"""Run resilio's Lua scripts on any redis-py client, surviving a lost script cache.

A script runs by EVALSHA, so a call sends only the script's digest. When the
server answers NOSCRIPT (after ``SCRIPT FLUSH``, a restart or a failover to a
node that never saw the script) the call is sent again as EVAL, which runs the
script and caches it on that node: no error reaches the caller, and the
fallback costs one extra round trip once per node and flush.

The helpers work the same on `redis.Redis`, `redis.cluster.RedisCluster`
(EVALSHA is routed by its keys, so all keys of one call must share a hash
slot) and their `redis.asyncio` twins. `AsyncScriptRunner` also coalesces
the calls of concurrent tasks into pipelines, one round trip for many
decisions, while a lone caller goes straight through.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, NoScriptError, ReadOnlyError, ResponseError

__all__ = [
    "AsyncScriptRunner",
    "Script",
    "client_decodes",
    "client_encoding",
    "client_flavour",
    "client_timeout",
    "recover_async",
    "run_script",
    "run_script_async",
]

Arg = str | bytes | int
Key = str | bytes


class Script:
    """A Lua script and its SHA1 digest.

    Args:
        name: The file name in ``resilio/lua/`` (without ``.lua``).
    """

    __slots__ = ("name", "sha", "sha_bytes", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        path = resources.files("resilio").joinpath("lua").joinpath(f"{name}.lua")
        self.source = path.read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        # What EVALSHA sends: redis-py passes bytes through, while it encodes a
        # str or an int per call at a few times the cost (so do the callers, for
        # the number of keys).
        self.sha_bytes = self.sha.encode()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:12]}>"


SYNC_CLIENTS: Final = (redis.Redis, redis.cluster.RedisCluster)
ASYNC_CLIENTS: Final = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)


# Pipelines subclass the clients, but queue commands instead of running them.
PIPELINES: Final = (
    redis.client.Pipeline,
    redis.cluster.ClusterPipeline,
    redis.asyncio.client.Pipeline,
    redis.asyncio.cluster.ClusterPipeline,
)


def client_flavour(client: object) -> str:
    """Return ``"sync"`` or ``"async"`` for a redis-py client, or raise TypeError."""
    if isinstance(client, PIPELINES):
        raise TypeError(
            f"expected a redis-py client, got a pipeline ({type(client).__module__}."
            f"{type(client).__qualname__}): a pipeline queues commands until it is executed; "
            "give the client it was made from"
        )
    if isinstance(client, SYNC_CLIENTS):
        return "sync"
    if isinstance(client, ASYNC_CLIENTS):
        return "async"
    raise TypeError(
        "expected a redis-py client: redis.Redis, redis.asyncio.Redis, "
        f"redis.cluster.RedisCluster or redis.asyncio.cluster.RedisCluster; got {client!r}"
    )


def _connection_kwargs(client: object) -> dict[str, Any]:
    if isinstance(client, (redis.Redis, redis.asyncio.Redis)):
        return client.connection_pool.connection_kwargs
    if isinstance(client, redis.cluster.RedisCluster):
        return client.nodes_manager.connection_kwargs
    return getattr(client, "connection_kwargs", {})


def client_timeout(client: object) -> float | None:
    """The socket timeout (seconds) the client's connections use, if any.

    Raises:
        TypeError: The client was given something other than a number of seconds.
    """
    timeout = _connection_kwargs(client).get("socket_timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise TypeError(
            f"the Redis client's socket_timeout is {timeout!r}: give it a number of seconds, "
            "for example redis.Redis(..., socket_timeout=0.5)"
        )
    return None if timeout is None else float(timeout)


def client_encoding(client: object) -> tuple[str, str]:
    """The encoding and its error handler with which the client turns str into bytes.

    A caller that sends bytes it encoded itself (cheaper per call than letting
    redis-py do it) uses these, so the bytes are the ones redis-py would send.
    """
    kwargs = _connection_kwargs(client)
    return kwargs.get("encoding", "utf-8"), kwargs.get("encoding_errors", "strict")


def client_decodes(client: object) -> bool:
    """Whether the client decodes replies into str (``decode_responses=True``)."""
    return bool(_connection_kwargs(client).get("decode_responses", False))


class NotWritableError(RedisConnectionError):
    """The server refused a script's write, so it cannot decide: an outage.

    ``NOREPLICAS``: a master configured with ``min-replicas-to-write`` that its
    replicas do not follow, as an old master is once a replica was promoted
    in its place. ``READONLY``: the server is a replica now. ``MASTERDOWN``: a
    replica that lost its master. Raised as a connection error, so the
    store's failure policy applies, after the client's idle connections were
    dropped: the next call connects anew and, under Sentinel, asks the
    sentinels for the master.
    """


# Redis 7 answers a refused write inside a script with the command's own error
# first ("NOREPLICAS Not enough good replicas..."); Redis 6 wraps it ("Error
# running script (...): @user_script:308: -NOREPLICAS Not enough...").
_NOT_WRITABLE: Final = re.compile(r"(?:^|[\s-])(?:NOREPLICAS|READONLY|MASTERDOWN) ")


def _not_writable(error: object) -> NotWritableError | None:
    """The outage ``error`` (a reply or an exception) stands for, if it is a refused write."""
    # redis-py raises READONLY and MASTERDOWN replies as classes of their own and
    # drops the code from their text; a script's NOREPLICAS keeps it.
    if isinstance(error, (ReadOnlyError, MasterDownError)) or (
        isinstance(error, ResponseError) and _NOT_WRITABLE.search(str(error))
    ):
        lost = NotWritableError(str(error))
        lost.__cause__ = error
        return lost
    return None


def _pool(client: Any) -> Any:
    """The client's connection pool; None for a cluster client, which finds its nodes itself."""
    return getattr(client, "connection_pool", None)


def run_script(client: Any, script: Script, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
    """Run ``script`` by EVALSHA on a sync client, falling back to EVAL on NOSCRIPT.

    Raises:
        NotWritableError: The server refused the script's write.
    """
    try:
        try:
            numkeys = b"%d" % len(keys)
            return client.execute_command("EVALSHA", script.sha_bytes, numkeys, *keys, *args)
        except NoScriptError:
            return client.execute_command("EVAL", script.source, len(keys), *keys, *args)
    except ResponseError as error:
        lost = _not_writable(error)
        if lost is None:
            raise
        if (pool := _pool(client)) is not None:
            pool.disconnect(inuse_connections=False)
        raise lost from error


async def run_script_async(
    client: Any, script: Script, keys: Sequence[Key], args: Sequence[Arg]
) -> Any:
    """Async twin of `run_script`; also retries once on a dropped connection.

    redis.asyncio does not always replace a pooled connection that the server
    closed (a restart, a failover, an idle timeout): the next command on it
    fails with "Connection closed by server" whatever the client's retry
    settings. One immediate retry takes a fresh connection. A refused write
    is retried once too, after the idle connections were dropped: under
    Sentinel the fresh connection may reach the new master.
    """
    try:
        return await client.execute_command(
            "EVALSHA", script.sha_bytes, b"%d" % len(keys), *keys, *args
        )
    except (ResponseError, RedisConnectionError) as error:
        return await recover_async(client, script, keys, args, error)


async def recover_async(
    client: Any,
    script: Script,
    keys: Sequence[Key],
    args: Sequence[Arg],
    error: Exception,
    *,
    retried: bool = False,
) -> Any:
    """Go on from an EVALSHA of ``script`` that failed with ``error``, as `run_script_async`.

    Apart so that a caller on the hot path (`AsyncScriptRunner`) can send the
    first EVALSHA itself: a coroutine frame costs most of a microsecond there.
    Each step runs inside the handler of the error before it, so the error
    raised in the end chains every one that led to it. ``retried``: the one
    retry after a dropped connection or a refused write is spent.
    """
    if isinstance(error, NoScriptError):
        try:
            return await client.execute_command("EVAL", script.source, len(keys), *keys, *args)
        except NoScriptError:
            raise  # EVAL carries the script: a server that still says NOSCRIPT is not Redis
        except (ResponseError, RedisConnectionError) as again:
            return await recover_async(client, script, keys, args, again, retried=retried)
    if not isinstance(error, RedisConnectionError):
        lost = _not_writable(error)
        if lost is None:
            raise error
        if (pool := _pool(client)) is not None:
            await pool.disconnect(inuse_connections=False)
        if retried:
            raise lost from error
    elif retried:
        raise error
    try:
        return await client.execute_command(
            "EVALSHA", script.sha_bytes, b"%d" % len(keys), *keys, *args
        )
    except (ResponseError, RedisConnectionError) as again:
        return await recover_async(client, script, keys, args, again, retried=True)


Call = tuple[Sequence[Key], Sequence[Arg], "asyncio.Future[Any]"]


class AsyncScriptRunner:
    """Run one script on an async client, batching concurrent calls into pipelines.

    When nothing is in flight a call is sent at once, alone. Calls made while
    another is in flight wait in a queue; when the round trip in flight ends,
    the whole queue goes out as one pipeline (no transaction: each script is
    atomic on its own). So a single caller pays no batching cost, and many
    concurrent callers share round trips instead of each paying one.

    A caller cancelled while its call is queued is dropped from the batch; one
    cancelled while its call is on the wire cannot take it back (the server
    may run it).

    Args:
        client: A `redis.asyncio.Redis` or `redis.asyncio.cluster.RedisCluster`.
        script: The script to run.
    """

    __slots__ = ("_busy", "_client", "_flusher", "_loop", "_queue", "script")

    _client: Any

    def __init__(self, client: Any, script: Script) -> None:
        self._client = client
        self.script = script
        self._busy = False
        self._queue: list[Call] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[Key], args: Sequence[Arg]) -> Any:
        """Run the script with ``keys`` and ``args``; return its reply.

        Raises:
            RuntimeError: No asyncio event loop runs (trio, say): redis.asyncio
                clients need one.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "a RedisStore on a redis.asyncio client needs an asyncio event loop, and none "
                "is running (under trio, say): give the store a sync client (redis.Redis), "
                "whose calls the async methods run in worker threads"
            ) from None
        if loop is not self._loop:
            # A new event loop: whatever the old one had in flight is gone.
            self._loop, self._busy, self._queue = loop, False, []
        if self._busy:
            future: asyncio.Future[Any] = loop.create_future()
            self._queue.append((keys, args, future))
            return await future
        self._busy = True
        try:
            # run_script_async, written out: one coroutine frame less per decision.
            script = self.script
            try:
                return await self._client.execute_command(
                    "EVALSHA", script.sha_bytes, b"%d" % len(keys), *keys, *args
                )
            except (ResponseError, RedisConnectionError) as error:
                return await recover_async(self._client, script, keys, args, error)
        finally:
            self._release()

    def _release(self) -> None:
        if self._queue:
            assert self._loop is not None
            self._flusher = self._loop.create_task(self._flush())
        else:
            self._busy = False

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = [call for call in self._queue if not call[2].done()]
                self._queue = []
                if not batch:
                    continue
                try:
                    replies = await self.send_batch([(keys, args) for keys, args, _ in batch])
                except Exception as exc:  # every caller of the batch gets the failure
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled with its loop: so are its callers
                    for _, _, future in batch:
                        future.cancel()
                    raise
                for (_, _, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            # Empty unless the flush itself was cancelled: nobody is left to send these.
            for _, _, future in self._queue:
                future.cancel()
            self._queue = []
            self._busy = False
            self._flusher = None

    async def send_batch(self, calls: list[tuple[Sequence[Key], Sequence[Arg]]]) -> list[Any]:
        """Run several calls in one round trip; return their replies (or errors), in order.

        This sends a pipeline of EVALSHA (EVAL for those that met NOSCRIPT).
        Calls whose write was refused are sent once more after the idle
        connections were dropped, as `run_script_async` does. A subclass may
        do better when its script can take many calls at once.
        """
        replies = await self._run_all(calls)
        refused = [i for i, reply in enumerate(replies) if _not_writable(reply) is not None]
        if refused and (pool := _pool(self._client)) is not None:
            await pool.disconnect(inuse_connections=False)
            again = await self._run_all([calls[i] for i in refused])
            for i, reply in zip(refused, again, strict=True):
                replies[i] = reply
        lost = [_not_writable(reply) for reply in replies]
        return [
            reply if error is None else error for reply, error in zip(replies, lost, strict=True)
        ]

    async def _run_all(self, calls: list[tuple[Sequence[Key], Sequence[Arg]]]) -> list[Any]:
        replies = await self._pipeline(calls, "EVALSHA", self.script.sha_bytes)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            again = await self._pipeline([calls[i] for i in missing], "EVAL", self.script.source)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(
        self, calls: list[tuple[Sequence[Key], Sequence[Arg]]], command: str, script: str | bytes
    ) -> list[Any]:
        for attempt in (1, 2):  # one retry on a dropped connection, as in run_script_async
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.execute_command(command, script, b"%d" % len(keys), *keys, *args)
            try:
                return list(await pipe.execute(raise_on_error=False))
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
