"""A webhook attempt ends by its deadline with resolving included: a subscriber whose name server keeps the
system resolver waiting (glibc: 5 s x attempts x servers) does not hold its subscription's delivery longer
(review of 2026-11-29), and the same sender delivers to a good endpoint right after."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from polis.subscriptions.endpoints import EndpointPolicy
from polis.subscriptions.transports import DeliveryFailed, HttpSender


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_slow_resolver_is_held_to_the_attempts_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real = socket.getaddrinfo

    def slow(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":  # the stand-in for a name server that answers late
            time.sleep(3.0)
            return real("127.0.0.1", port, type=socket.SOCK_STREAM)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    sender = HttpSender(EndpointPolicy.from_text("169.254.0.0/16", ""))
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryFailed, match=r"slow\.example was not resolved within 0\.5 s"):
            sender.send(f"http://slow.example:{port}/notify", b"{}", {}, 0.5)
        assert time.monotonic() - started < 1.5
        sender.send(f"http://127.0.0.1:{port}/notify", b"{}", {}, 5.0)  # the next delivery is not held either
    finally:
        sender.close()
        server.shutdown()
        server.server_close()
