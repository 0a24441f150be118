"""Real HTTP servers on 127.0.0.1 for the integration tests: uvicorn in a thread or in processes.

`ServerThread` runs an ASGI app in a uvicorn server on a background thread of
this process (its state is shared with the test). `ServerProcess` runs
``uvicorn --workers N`` as a separate process tree, for tests that need
several worker processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

__all__ = ["ServerProcess", "ServerThread", "free_port"]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0  # seconds a server may take to start on a loaded machine


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """An ASGI app served by uvicorn on a free loopback port, on a background thread.

    Proxy headers are off, so ``scope["client"]`` is always the real peer
    (the middleware decides whom to trust, not uvicorn).
    """

    def __init__(self, app: Any, **options: Any) -> None:
        options = {
            "log_level": "warning",
            "lifespan": "off",
            "http": "h11",
            "ws": "none",
            "loop": "asyncio",
            "proxy_headers": False,
            "access_log": False,
            **options,
        }
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, **options))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(START_TIMEOUT)
        self._socket.close()


class ServerProcess:
    """``uvicorn <app> --workers N`` in its own process group, on a free port.

    Args:
        app: The import string of an app factory, e.g. ``"tests.http.apps:redis_app"``.
        workers: The number of worker processes.
        env: Extra environment variables for the server.
    """

    def __init__(self, app: str, *, workers: int, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._command = [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--http",
            "h11",
            "--ws",
            "none",
            "--lifespan",
            "off",
            "--no-proxy-headers",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        self._env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self._process = subprocess.Popen(
            self._command, cwd=ROOT, env=self._env, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self._process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"uvicorn workers did not start on {self.url}")
            time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()  # uvicorn's supervisor stops its workers on SIGTERM
        try:
            process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(START_TIMEOUT)
