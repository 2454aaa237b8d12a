"""A real webhook receiver on a loopback port for the subscription tests: records every POST it gets.

`Receiver(port).start()` listens; before `start()` (or after `stop()`) the port refuses connections, which
is how the tests make an endpoint "down" and bring it back on the same address."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from polis.localserver import free_port


class Receiver:
    def __init__(self, port: int | None = None, status: int = 200, delay_s: float = 0.0) -> None:
        self.port = port or free_port()
        self.status = status
        self.delay_s = delay_s  # how long each POST takes to answer (a slow endpoint keeps a backlog)
        self.received: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(size))
                with owner._lock:
                    owner.received.append((time.time(), dict(self.headers), body))
                time.sleep(owner.delay_s)
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [b for _, _, b in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return wait_until(lambda: (b if len(b := self.bodies()) >= count else None), timeout,
                          f"{count} notifications at {self.url}; got {len(self.bodies())}")

    def values(self, attribute: str) -> list[Any]:
        """The attribute's value in every notified entity, in arrival order (keyValues or normalized)."""
        out = []
        for body in self.bodies():
            for entity in body["data"]:
                value = entity.get(attribute)
                out.append(value["value"] if isinstance(value, dict) else value)
        return out


def wait_until(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class BlackHole:
    """An endpoint that accepts TCP connections and never answers: the worst kind of dead endpoint."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def close(self) -> None:
        self._sock.close()


class RawAnswerer(BlackHole):
    """An endpoint that answers each connection with `_answer` (a subclass's own bytes, on a socket): for
    receivers no HTTP server library would be, such as hostile ones. `_stop` is set by `close`."""

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        super().close()
