"""Rate limits shared by every process and host: limiter state in Redis.

`RedisStore` plugs into any resilio rate limiter through ``store=``::

    import redis
    import resilio
    from resilio.redis import RedisStore

    client = redis.Redis(host="redis", socket_timeout=0.5)
    limiter = resilio.TokenBucket(rate=10, per=1.0, capacity=20, store=RedisStore(client))

Each decision is one atomic Lua script and one round trip, running the same
integer algorithms as the in-memory store, so both give the same answers.
Time comes from the Redis server (``TIME``), so clock skew between hosts
does not matter. See the deployment guide (docs/redis.md) for Cluster,
Sentinel, timeouts, the failure policy and the key layout.
"""

from __future__ import annotations

try:
    import redis
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "resilio.redis needs the redis package: install it with pip install 'resilio[redis]'"
    ) from exc

import logging
import math
import re
import time
import weakref
from collections.abc import Sequence
from typing import Any, Final, Literal

import anyio.to_thread
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import ResponseError

from ._core.limiters import US, Algorithm, Decision, Verdict, combine, make_decision
from ._errors import ResilioError
from ._redis_scripts import (
    Arg,
    AsyncScriptRunner,
    Key,
    Script,
    client_decodes,
    client_encoding,
    client_flavour,
    client_timeout,
    run_script,
    run_script_async,
)
from .stores import MemoryStore, Store

__all__ = ["RedisStore", "RedisUnavailableError"]

OnError = Literal["closed", "open", "local"]
TimeSource = Literal["server", "caller"]

logger = logging.getLogger("resilio.redis")

_LIMITER: Final = Script("limiter")
_KINDS: Final = {
    "gcra": "g",
    "leaky": "l",
    "fixed_window": "f",
    "sliding_window": "s",
    "sliding_log": "o",
}
_CONSUME: Final = b"1"
_LOOK: Final = b"0"
_SERVER_TIME: Final = b""  # a batched decision's time: read the server's clock

# What counts as "Redis is unavailable": the failure policy applies to these,
# once `_is_outage` agrees. Other errors (a WRONGTYPE from a key shared with
# another program, keys of one call in different cluster slots, a bug) are not
# outages and propagate unchanged. A write the server refused (NOREPLICAS,
# READONLY, MASTERDOWN) arrives as NotWritableError, a ConnectionError (see
# _redis_scripts), whatever the server's version wraps it in.
_FAILURES: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # CLUSTERDOWN, the retries of a moving slot spent
    redis.exceptions.RedisClusterException,  # outages and misuses alike: see _is_outage
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.OutOfMemoryError,
    OSError,
)
# The cluster client raises a bare RedisClusterException for misuse ("all keys
# must map to the same key slot", a command without keys) as well as for these
# outages, told apart only by their text: no node answered, or the nodes' slot
# maps leave slots uncovered or disagree (mid-failover).
_CLUSTER_OUTAGES: Final = (
    "Redis Cluster cannot be connected",
    "All slots are not covered",
    "startup_nodes could not agree",
    "No targets were found",
)


# host:port in an error's text: the node it names.
_ADDRESS: Final = re.compile(r"[\w.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+")

# Outages of the one node a call went to, as opposed to the whole cluster's.
_NODE_FAILURES: Final = (
    redis.exceptions.ConnectionError,  # NotWritableError (a refused write) too
    redis.exceptions.TimeoutError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    OSError,
)


def _is_outage(exc: BaseException) -> bool:
    """Whether ``exc``, one of `_FAILURES`, means Redis is unavailable (not misused)."""
    if isinstance(exc, redis.exceptions.RedisClusterException) and not isinstance(
        exc, redis.exceptions.SlotNotCoveredError
    ):
        return str(exc).startswith(_CLUSTER_OUTAGES)
    return True


class RedisUnavailableError(ResilioError):
    """Redis could not decide (down, timed out, failing over) and the store fails closed.

    The Redis error that caused it is chained as ``__cause__``.
    """


class _Plan:
    """How one tuple of limits maps to keys and script arguments; built once, reused.

    The limits go to the script as bytes made here once, one per mode, so a
    call only puts its cost in front and encodes its keys: redis-py turns a
    str or an int into bytes at a few times the cost of passing bytes through.
    """

    __slots__ = ("capacity", "consume", "keys", "limits", "look", "single", "suffixes")

    # Keys are cached per user key, up to this many; the cache starts afresh when
    # full. Building them (hash tag, f-string, encode) costs more than a lookup.
    # Longer user keys are built per call, so the cache holds at most a few MB.
    KEYS_CACHED: Final = 4096
    LONGEST_CACHED: Final = 256

    def __init__(self, limits: Sequence[Algorithm]) -> None:
        suffixes: list[str] = []
        words: list[str] = []
        for limit in limits:
            kind = _KINDS.get(limit.kind)
            if kind is None:
                raise TypeError(f"RedisStore cannot run the {limit.kind!r} algorithm of {limit!r}")
            name = _key_name(limit.name)
            suffixes.append(f"}}:{name}")
            if kind == "o":
                suffixes.append(f"}}:{name}#total")
            words += [kind, *map(str, limit.params)]
        if len(suffixes) > _LimiterRunner.MOST_KEYS:
            raise ValueError(
                f"a RedisStore decides on at most {_LimiterRunner.MOST_KEYS} keys at once "
                f"(a sliding log takes two); these limits take {len(suffixes)}"
            )
        self.suffixes = tuple(suffixes)
        spec = " ".join(words)
        self.consume = f" {_CONSUME.decode()} {spec}".encode()
        self.look = f" {_LOOK.decode()} {spec}".encode()
        self.limits = tuple(limits)
        self.capacity = min(limit.capacity for limit in limits)
        self.single = len(limits) == 1
        self.keys: dict[str, tuple[bytes, ...]] = {}

    def decision(self, text: bytes | str) -> Decision:
        if self.single:
            allowed, remaining, retry, reset = text.split()
            return make_decision(
                allowed == b"1" or allowed == "1",
                int(remaining),
                int(retry) / US,
                int(reset) / US,
                self.capacity,
            )
        reply = [int(word) for word in text.split()]
        verdicts: list[Verdict] = [
            (reply[i] == 1, reply[i + 1], reply[i + 2], reply[i + 3])
            for i in range(0, len(reply), 4)
        ]
        return combine(verdicts, self.limits)


class _LimiterRunner(AsyncScriptRunner):
    """Runs the batch of concurrent decisions as one call of the limiter script.

    The limiter script takes many decisions at once (``'*'`` in ARGV[1]), so a
    batch costs one command to pack and one reply to parse, not one each. On
    a cluster the keys of a batch span slots: it goes out as a pipeline.
    """

    __slots__ = ()

    # Keys per script call: Redis is never busy for long, and the reply (one
    # status line, at most about 53 bytes per limit) stays below the 64 KiB
    # that redis.asyncio reads as one line.
    MOST_KEYS: Final = 1000

    async def send_batch(self, calls: list[tuple[Sequence[Key], Sequence[Arg]]]) -> list[Any]:
        """See `AsyncScriptRunner.send_batch`."""
        if isinstance(self._client, redis.asyncio.cluster.RedisCluster):
            return await super().send_batch(calls)
        replies: list[Any] = []
        keys: list[Key] = []
        args: list[Arg] = [b"*"]
        for call_keys, call_args in calls:
            if keys and len(keys) + len(call_keys) > self.MOST_KEYS:
                replies += await self._send(keys, args)
                keys, args = [], [b"*"]
            keys += call_keys
            args.append(len(call_keys))
            args += call_args
            if len(call_args) == 1:
                args.append(_SERVER_TIME)
        return replies + await self._send(keys, args)

    async def _send(self, keys: list[Key], args: list[Arg]) -> list[Any]:
        reply = await run_script_async(self._client, self.script, keys, args)
        text = reply.decode() if isinstance(reply, bytes) else reply
        # '!' and an error: that decision failed on its own keys (see the script).
        return [ResponseError(part[1:]) if part[:1] == "!" else part for part in text.split(",")]


def _keeps_ascii(encoding: str) -> bool:
    """Whether ``encoding`` writes ASCII text as ASCII bytes (the script replies are ASCII)."""
    try:
        return "0 1,!-WRONGTYPE".encode(encoding) == b"0 1,!-WRONGTYPE"
    except LookupError:
        return False


def _key_name(name: str) -> str:
    """``name`` as it appears in Redis keys: with ``#`` escaped, no name makes ``<log>#total``."""
    if "#" in name or "%" in name:
        return name.replace("%", "%25").replace("#", "%23")
    return name


# The limits named through each client, per prefix, whichever store registered
# them: two different limits under one name would share keys.
_names_by_client: weakref.WeakKeyDictionary[Any, dict[str, dict[str, tuple[str, tuple[int, ...]]]]]
_names_by_client = weakref.WeakKeyDictionary()


def _names_for(client: Any, prefix: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The names registered on ``client`` under ``prefix``, shared by every store on it."""
    try:
        prefixes = _names_by_client.setdefault(client, {})
    except TypeError:  # a client that takes no weak reference: this store alone
        return {}
    return prefixes.setdefault(prefix, {})


def _hash_tag(key: str) -> str:
    """The Cluster hash tag of ``key``: never empty, and distinct keys get distinct tags."""
    # Braces would end the {hash tag} early: escape them (and the escape character).
    if "{" in key or "}" in key or "%" in key:
        return key.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    # Cluster hashes the whole key when its tag is empty ("{}"), which would
    # scatter one decision's keys over several slots. An escaped key has no
    # "%" that is not followed by 25, 7B or 7D, so a lone "%" stands for "" alone.
    return key or "%"


def _not_a_key(key: object) -> TypeError:
    return TypeError(f"a rate limit key must be a str, got {type(key).__name__}: {key!r}")


class RedisStore:
    """Rate limiter state in Redis, shared by every process that uses the same keys.

    Works with `redis.Redis` (also as returned by Sentinel's ``master_for``),
    `redis.cluster.RedisCluster`, and their `redis.asyncio` twins. On an async
    client only the limiters' ``_async`` methods work; the sync ones raise
    `TypeError`. On a sync client the async methods run the call in a worker
    thread, so they never block the event loop.

    Every key is ``<prefix>{<user key>}:<limit name>``: the braces are the
    Redis Cluster hash tag, so all limits of one decision live in one slot,
    while different user keys spread over the cluster (the empty key is tagged
    ``{%}``, a tag no other key gets). Keys are str, encoded with the
    client's ``encoding``. Every key written has a TTL that ends when its
    state is back to the initial one.

    Args:
        client: The redis-py client. Its ``socket_timeout`` must be a number of
            seconds above 0 (not None), so a dead or frozen Redis cannot hang a
            request.
        prefix: Put before every key; must not contain ``{`` or ``}``.
        on_error: What a decision does when Redis is unreachable, times out
            or is failing over: ``"closed"`` (the default) raises
            `RedisUnavailableError`, so nothing is admitted that Redis did not
            count; ``"open"`` admits every request; ``"local"`` decides with
            an in-memory store in this process (each process then applies
            the full limit on its own).
        recovery_time: Seconds during which, after a failure, the store does
            not ask Redis again and applies ``on_error`` at once; the next
            request after that tries Redis again.
        time_source: ``"server"`` (the default) reads the Redis server's
            clock in the script, so client clocks do not matter;
            ``"caller"`` uses the time the limiter passes in (its own clock),
            for tests with a fake clock or a single host.
    """

    __slots__ = (
        "__weakref__",  # limiters on one store share their waiting lines (resilio._waiting)
        "_async",
        "_client",
        "_cluster",
        "_down_nodes",
        "_down_until",
        "_encoding",
        "_fallback",
        "_last_error",
        "_names",
        "_on_error",
        "_plans",
        "_prefix",
        "_recovery_time",
        "_runner",
        "_server_time",
        "_signatures",
    )

    _PLANS_CACHED: Final = 4096  # sets of limit objects looked up directly

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "resilio:",
        on_error: OnError = "closed",
        recovery_time: float = 1.0,
        time_source: TimeSource = "server",
    ) -> None:
        flavour = client_flavour(client)
        timeout = client_timeout(client)
        if timeout is None or not math.isfinite(timeout):
            raise ValueError(
                "the Redis client has no socket_timeout, so a dead Redis could hang every "
                "request: create it with a timeout in seconds, for example "
                "redis.Redis(..., socket_timeout=0.5)"
            )
        if timeout <= 0:
            raise ValueError(
                f"the Redis client's socket_timeout is {timeout!r}: redis-py takes 0 as "
                "'do not wait', so every command would fail; give it a timeout in seconds "
                "above 0, for example redis.Redis(..., socket_timeout=0.5)"
            )
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be a string without braces, got {prefix!r}")
        if on_error not in ("closed", "open", "local"):
            raise ValueError(f"on_error must be 'closed', 'open' or 'local', got {on_error!r}")
        if time_source not in ("server", "caller"):
            raise ValueError(f"time_source must be 'server' or 'caller', got {time_source!r}")
        if (
            isinstance(recovery_time, bool)
            or not isinstance(recovery_time, (int, float))
            or not 0 <= recovery_time < math.inf
        ):
            raise ValueError(
                f"recovery_time must be a finite number of seconds >= 0, got {recovery_time!r}"
            )
        self._client = client
        # Keys are sent as bytes encoded here, as redis-py would encode them.
        self._encoding = client_encoding(client)
        if client_decodes(client) and not _keeps_ascii(self._encoding[0]):
            raise ValueError(
                f"the Redis client decodes replies as {self._encoding[0]!r}, which does not "
                "keep ASCII as it is, so the store could not read its scripts' replies: use "
                "UTF-8 (the default), or decode_responses=False"
            )
        self._async = flavour == "async"
        self._runner = _LimiterRunner(client, _LIMITER) if self._async else None
        self._prefix = prefix
        self._on_error = on_error
        self._recovery_time = float(recovery_time)
        self._server_time = time_source == "server"
        self._fallback: Store | None = MemoryStore() if on_error == "local" else None
        self._plans: dict[tuple[Algorithm, ...], _Plan] = {}
        self._signatures: dict[tuple[tuple[str, str, tuple[int, ...]], ...], _Plan] = {}
        self._names = _names_for(client, prefix)
        self._cluster = isinstance(
            client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)
        )
        self._down_until = 0.0
        self._down_nodes: dict[str, float] = {}
        self._last_error: BaseException | None = None

    @property
    def is_async(self) -> bool:
        """Whether the store is built on an async client: then only async forms work."""
        return self._async

    def __repr__(self) -> str:
        return f"RedisStore({self._client!r}, prefix={self._prefix!r}, on_error={self._on_error!r})"

    @property
    def client(self) -> Any:
        """The redis-py client this store talks through."""
        return self._client

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._prefix

    # -- plumbing ---------------------------------------------------------

    def _plan_for(self, limits: Sequence[Algorithm]) -> _Plan:
        plan = self._plans.get(limits) if limits.__class__ is tuple else None
        return plan if plan is not None else self._plan(limits)

    def _check_limits(self, limits: Sequence[Algorithm]) -> None:
        """Refuse, when a limiter is built, limits this store could not decide."""
        self._plan_for(limits)

    def _plan(self, limits: Sequence[Algorithm]) -> _Plan:
        # Plans are found by the limit objects on the hot path, and kept by what
        # the limits are: a limiter rebuilt per request shares one plan (and its
        # cache of keys), and the map by objects stays bounded.
        signature = tuple((limit.kind, limit.name, limit.params) for limit in limits)
        plan = self._signatures.get(signature)
        if plan is None:
            for limit in limits:
                seen = self._names.get(limit.name, (limit.kind, limit.params))
                if seen != (limit.kind, limit.params):
                    raise ValueError(
                        f"two different limits share the name {limit.name!r} in one store: "
                        "give each limiter its own name="
                    )
            plan = _Plan(limits)  # may refuse the limits: then nothing is registered
            for limit in limits:
                self._names[limit.name] = (limit.kind, limit.params)
            self._signatures[signature] = plan
        if len(self._plans) >= self._PLANS_CACHED:
            self._plans.clear()
        self._plans[tuple(limits)] = plan
        return plan

    def _keys(self, plan: _Plan, key: str) -> tuple[bytes, ...]:
        keys = plan.keys.get(key)
        if keys is None:
            # The str itself, not how a subclass formats: Plan.FREE of a
            # `class Plan(str, Enum)` equals "free" and must use the same keys.
            text = key if key.__class__ is str else str.__str__(key)
            head = f"{self._prefix}{{{_hash_tag(text)}"
            encoding, errors = self._encoding
            keys = tuple((head + suffix).encode(encoding, errors) for suffix in plan.suffixes)
            if len(text) <= plan.LONGEST_CACHED:
                if len(plan.keys) >= plan.KEYS_CACHED:
                    plan.keys.clear()
                plan.keys[text] = keys
        return keys

    @property
    def keeps_time(self) -> bool:
        """Whether decisions read the server's clock (``time_source="server"``)."""
        return self._server_time

    def _args(self, plan: _Plan, cost: int, now: int, mode: bytes) -> tuple[bytes, ...]:
        request = b"%d" % cost + (plan.consume if mode == _CONSUME else plan.look)
        if self._server_time:
            return (request,)
        return (request, b"%d" % now)

    def _sync_only(self) -> None:
        raise TypeError(
            "this RedisStore wraps an async client (redis.asyncio): use the limiter's async "
            "methods (try_acquire_async, acquire_async, peek_async, reset_async) or give "
            "the store a sync client"
        )

    # Outages: the whole server (or cluster) is down until `_down_until`; on a
    # Cluster client, a node that failed alone is down until `_down_nodes[node]`,
    # and only the keys it serves take the failure policy meanwhile.

    def _node(self, key: Key) -> str | None:
        """The Cluster node serving ``key`` now; None on a standalone client or when unknown."""
        if not self._cluster:
            return None
        try:
            slot = self._client.keyslot(key)
            return self._client.nodes_manager.get_node_from_slot(slot).name  # type: ignore[no-any-return]
        except (redis.exceptions.RedisError, LookupError, AttributeError):
            return None  # no slot map yet, or the slot is not covered

    def _is_down(self, key: Key) -> bool:
        """Whether the failure policy applies to ``key`` now, without asking Redis."""
        now = time.monotonic()
        if self._down_until:
            if now < self._down_until:
                return True
            self._down_until = 0.0
        if self._down_nodes and (node := self._node(key)) is not None:
            until = self._down_nodes.get(node)
            if until is not None:
                if now < until:
                    return True
                del self._down_nodes[node]
        return False

    def _failing_node(self, exc: BaseException, key: Key) -> str | None:
        """The Cluster node that ``exc`` shows failing alone, or None for the whole store.

        The node the error names (redis-py says "Timeout reading from
        host:port": a call may fail on another node than its own, one the
        client turned to meanwhile), else the one that serves ``key``.
        """
        if not self._cluster or not isinstance(exc, _NODE_FAILURES):
            return None
        nodes = getattr(self._client.nodes_manager, "nodes_cache", {})
        for named in _ADDRESS.findall(str(exc)):
            if named in nodes:
                return named  # type: ignore[no-any-return]
        return self._node(key)

    def _failed(self, exc: BaseException, key: Key) -> None:
        """Apply the failure policy for ``recovery_time``, to just a Cluster node if it failed."""
        node = self._failing_node(exc, key)
        if self._last_error is None:
            logger.warning(
                "Redis is unavailable (%r%s); the rate limiter store fails %s for %.3g s",
                exc,
                "" if node is None else f", Cluster node {node}",
                self._on_error,
                self._recovery_time,
            )
        self._last_error = exc
        until = time.monotonic() + self._recovery_time
        if node is None:
            self._down_until = until
        else:
            self._down_nodes[node] = until

    def _recovered(self, key: Key) -> None:
        """A call on ``key`` succeeded after a failure: its node (or the server) is back."""
        if self._down_nodes:
            node, now = self._node(key), time.monotonic()
            # This node is back, and so is every one whose time is up: a node that
            # serves no slot after a failover is never asked about again.
            self._down_nodes = {
                name: until
                for name, until in self._down_nodes.items()
                if until > now and name != node
            }
            if self._down_nodes:
                return  # other nodes still failing
        logger.info("Redis is available again; the rate limiter store uses it")
        self._last_error = None
        self._down_until = 0.0

    def _unavailable(self, key: str) -> RedisUnavailableError:
        error = RedisUnavailableError(
            f"Redis could not decide for key {key!r} and the store fails closed: "
            f"{self._last_error!r}"
        )
        error.__cause__ = self._last_error
        return error

    def _degraded(
        self, limits: Sequence[Algorithm], plan: _Plan, key: str, cost: int, now: int, mode: bytes
    ) -> Decision:
        if self._on_error == "closed":
            raise self._unavailable(key)
        if self._fallback is not None:
            if mode is _CONSUME:
                return self._fallback.acquire(limits, key, cost, now)
            return self._fallback.peek(limits, key, cost, now)
        return make_decision(True, plan.capacity - cost, 0.0, 0.0, plan.capacity)

    def _decide(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int, mode: bytes
    ) -> Decision:
        if self._async:
            self._sync_only()
        if not isinstance(key, str):
            raise _not_a_key(key)
        plan = self._plan_for(limits)
        keys = self._keys(plan, key)
        if (self._down_until or self._down_nodes) and self._is_down(keys[0]):
            return self._degraded(limits, plan, key, cost, now, mode)
        try:
            reply = run_script(self._client, _LIMITER, keys, self._args(plan, cost, now, mode))
        except _FAILURES as exc:
            if not _is_outage(exc):
                raise
            self._failed(exc, keys[0])
            return self._degraded(limits, plan, key, cost, now, mode)
        if self._last_error is not None:
            self._recovered(keys[0])
        return plan.decision(reply)

    async def _decide_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int, mode: bytes
    ) -> Decision:
        if self._runner is None:
            return await anyio.to_thread.run_sync(self._decide, limits, key, cost, now, mode)
        if not isinstance(key, str):
            raise _not_a_key(key)
        plan = self._plan_for(limits)
        keys = self._keys(plan, key)
        if (self._down_until or self._down_nodes) and self._is_down(keys[0]):
            return self._degraded(limits, plan, key, cost, now, mode)
        try:
            reply = await self._runner(keys, self._args(plan, cost, now, mode))
        except _FAILURES as exc:
            if not _is_outage(exc):
                raise
            self._failed(exc, keys[0])
            return self._degraded(limits, plan, key, cost, now, mode)
        if self._last_error is not None:
            self._recovered(keys[0])
        return plan.decision(reply)

    def _reset_keys(self, limits: Sequence[Algorithm], key: str) -> tuple[bytes, ...] | None:
        """The keys to delete, or None when Redis is down and the policy was applied."""
        if not isinstance(key, str):
            raise _not_a_key(key)
        keys = self._keys(self._plan_for(limits), key)
        if (self._down_until or self._down_nodes) and self._is_down(keys[0]):
            self._reset_degraded(limits, key)
            return None
        return keys

    def _reset_degraded(self, limits: Sequence[Algorithm], key: str) -> None:
        if self._on_error == "closed":
            raise self._unavailable(key)
        if self._fallback is not None:
            self._fallback.reset(limits, key)

    # -- the Store protocol ------------------------------------------------

    def acquire(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> Decision:
        """See `resilio.stores.Store.acquire`."""
        return self._decide(limits, key, cost, now, _CONSUME)

    def allow(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        """See `resilio.stores.Store.allow`."""
        return self._decide(limits, key, cost, now, _CONSUME)[0]  # type: ignore[no-any-return]

    def peek(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> Decision:
        """See `resilio.stores.Store.peek`."""
        return self._decide(limits, key, cost, now, _LOOK)

    def reset(self, limits: Sequence[Algorithm], key: str) -> None:
        """See `resilio.stores.Store.reset`."""
        if self._async:
            self._sync_only()
        keys = self._reset_keys(limits, key)
        if keys is None:
            return
        try:
            self._client.execute_command("DEL", *keys)
        except _FAILURES as exc:
            if not _is_outage(exc):
                raise
            self._failed(exc, keys[0])
            self._reset_degraded(limits, key)
        if self._fallback is not None:
            self._fallback.reset(limits, key)

    async def acquire_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int
    ) -> Decision:
        """See `resilio.stores.Store.acquire_async`."""
        return await self._decide_async(limits, key, cost, now, _CONSUME)

    async def allow_async(self, limits: Sequence[Algorithm], key: str, cost: int, now: int) -> bool:
        """See `resilio.stores.Store.allow_async`."""
        return (await self._decide_async(limits, key, cost, now, _CONSUME))[0]  # type: ignore[no-any-return]

    async def peek_async(
        self, limits: Sequence[Algorithm], key: str, cost: int, now: int
    ) -> Decision:
        """See `resilio.stores.Store.peek_async`."""
        return await self._decide_async(limits, key, cost, now, _LOOK)

    async def reset_async(self, limits: Sequence[Algorithm], key: str) -> None:
        """See `resilio.stores.Store.reset_async`."""
        if not self._async:
            await anyio.to_thread.run_sync(self.reset, limits, key)
            return
        keys = self._reset_keys(limits, key)
        if keys is None:
            return
        try:
            await self._client.execute_command("DEL", *keys)
        except _FAILURES as exc:
            if not _is_outage(exc):
                raise
            self._failed(exc, keys[0])
            self._reset_degraded(limits, key)
        if self._fallback is not None:
            self._fallback.reset(limits, key)
