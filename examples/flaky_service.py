"""A deliberately unreliable HTTP service on 127.0.0.1, for the demo and the tests.

The service answers ``GET /items/<key>`` and fails a share of requests:

* ``500``: a plain server error;
* ``503`` with ``Retry-After: <seconds>``: overloaded, come back later;
* a hang: the handler sleeps longer than any sensible client timeout;
* a drop: the connection is closed without an answer (a transport error);
* an outage window: for a few seconds every request fails, half of them with
  a ``500`` and half by hanging (the way an overloaded server fails).

The faults are a pure function of ``(seed, key, n)``, where ``n`` counts the
requests the service has seen for ``key``: two services started with the same
seed treat the same traffic the same way, however the requests interleave.
Only the outage window is set by the wall clock.

It uses the standard library only, and runs in a background thread::

    with FlakyService(seed=7) as service:
        httpx.get(f"{service.url}/items/1")
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import enum
import http.server
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Fault", "FaultMix", "FlakyService"]


class Fault(str, enum.Enum):
    """What the service does with one request."""

    OK = "ok"
    ERROR = "error"  # 500
    OVERLOADED = "overloaded"  # 503 + Retry-After
    HANG = "hang"  # answers only after hang_seconds
    DROP = "drop"  # closes the connection without answering
    OUTAGE = "outage"  # 500 during the outage window
    OUTAGE_HANG = "outage_hang"  # a hang during the outage window


@dataclass(frozen=True)
class FaultMix:
    """The share of requests (0 to 1) that get each fault outside the outage.

    Attributes:
        error: Share answered with ``500``.
        overloaded: Share answered with ``503`` and ``Retry-After``.
        hang: Share that hangs for ``hang_seconds``.
        drop: Share whose connection is closed without an answer.
    """

    error: float = 0.10
    overloaded: float = 0.04
    hang: float = 0.04
    drop: float = 0.02

    def __post_init__(self) -> None:
        total = self.error + self.overloaded + self.hang + self.drop
        if min(self.error, self.overloaded, self.hang, self.drop) < 0 or total > 1:
            raise ValueError(f"fault shares must be >= 0 and add up to at most 1, got {self}")

    def pick(self, draw: float) -> Fault:
        """Return the fault for a uniform ``draw`` in [0, 1)."""
        for fault, share in (
            (Fault.ERROR, self.error),
            (Fault.OVERLOADED, self.overloaded),
            (Fault.HANG, self.hang),
            (Fault.DROP, self.drop),
        ):
            if draw < share:
                return fault
            draw -= share
        return Fault.OK


class FlakyService:
    """An HTTP server with seeded faults and an outage window, run in a thread.

    Args:
        seed: Makes the fault sequence reproducible.
        mix: The fault shares outside the outage.
        outage: ``(start, end)`` in seconds after `start`, during which every
            request fails (half with ``500``, half by hanging); ``None`` for
            no outage.
        hang_seconds: How long a hanging request takes to answer, in seconds.
        retry_after: The ``Retry-After`` value sent with ``503``, in whole seconds.
        latency: The time every answer takes, in seconds.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        mix: FaultMix | None = None,
        outage: tuple[float, float] | None = None,
        hang_seconds: float = 5.0,
        retry_after: int = 1,
        latency: float = 0.002,
    ) -> None:
        self.seed = seed
        self.mix = mix if mix is not None else FaultMix()
        self.outage = outage
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self.latency = latency
        self.counts: collections.Counter[Fault] = collections.Counter()
        self._seen: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._epoch = 0.0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("the service is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> int:
        """How many requests the service has received."""
        with self._lock:
            return sum(self.counts.values())

    def fault_for(self, key: str, now: float) -> Fault:
        """Decide (and record) the fault for the next request on ``key`` at time ``now``."""
        with self._lock:
            self._seen[key] += 1
            n = self._seen[key]
            draw = random.Random(f"{self.seed}:{key}:{n}").random()
            elapsed = now - self._epoch
            if self.outage is not None and self.outage[0] <= elapsed < self.outage[1]:
                fault = Fault.OUTAGE if draw < 0.5 else Fault.OUTAGE_HANG
            else:
                fault = self.mix.pick(draw)
            self.counts[fault] += 1
            return fault

    def start(self, epoch: float | None = None) -> FlakyService:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread.

        Args:
            epoch: The ``time.monotonic()`` value the outage window counts
                from; now by default. Give two services the same epoch to put
                them through the same outage.
        """
        if self._server is not None:
            raise RuntimeError("the service is already running")
        self._epoch = time.monotonic() if epoch is None else epoch
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.service = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are released at once."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> FlakyService:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Hanging handlers must not hold up server_close().
    block_on_close = False
    service: FlakyService

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients give up on hanging requests and close the socket under us:
        # expected here, so not worth a traceback.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # the name http.server dispatches GET requests to
        service = self.server.service
        if not self.path.startswith("/items/"):
            self._send(404, b"not found\n")
            return
        fault = service.fault_for(self.path.removeprefix("/items/"), time.monotonic())
        service._wait(service.latency)
        if fault is Fault.OK:
            self._send(200, b'{"ok": true}\n', content_type="application/json")
        elif fault is Fault.ERROR:
            self._send(500, b"internal error\n")
        elif fault is Fault.OUTAGE:
            self._send(500, b"outage\n")
        elif fault is Fault.OVERLOADED:
            self._send(503, b"overloaded\n", headers={"Retry-After": str(service.retry_after)})
        elif fault is Fault.HANG or fault is Fault.OUTAGE_HANG:
            service._wait(service.hang_seconds)
            self._send(200, b'{"ok": true, "late": true}\n', content_type="application/json")
        else:  # Fault.DROP
            self.close_connection = True

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo prints its own report


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the flaky service until Ctrl-C.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with FlakyService(seed=args.seed) as service:
        print(f"serving on {service.url}/items/<key> (seed {args.seed}); Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
