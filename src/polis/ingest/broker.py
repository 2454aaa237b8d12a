"""A real Mosquitto broker for tests, benchmarks and the demo: written config, started, waited for, stopped.

The config is what the ingest path relies on:
- one listener on 127.0.0.1 only, anonymous clients allowed (loopback, nothing else can reach it);
- persistence on, under the given directory: queued messages of persistent sessions survive a graceful
  broker restart (Mosquitto writes its database on shutdown and every `autosave_interval`; a broker
  *crash* can lose what arrived since the last save, a limit of Mosquitto itself);
- bounded queues: `max_queued_messages` per client above those in flight. This is the durability window
  while a subscriber is away or slow: Mosquitto PUBACKs a QoS 1 publisher on receipt whatever the
  subscribers do, and silently drops messages for a client whose queue is full (counted in
  `$SYS/broker/publish/messages/dropped`, which the ingestor reports). Size it for the longest outage
  at the highest rate you must absorb (the default holds 10 s at 10,000 messages/s);
- `max_inflight_messages` caps unacknowledged QoS 1 deliveries to MQTT 3.1.1 clients; MQTT 5 clients
  (the ingestor) announce their own Receive Maximum, which Mosquitto honours;
- `max_packet_size` so that one absurd message cannot take the broker's memory, refused *before* it is
  acknowledged: the publisher is disconnected without a PUBACK (an MQTT 5 client is told the limit when it
  connects, and the reason, "Packet too large"), so it knows the message did not get in and can retry or
  report it. `message_size_limit` would drop the message *after* completing the QoS 1 flow: a publisher
  told "received" for a message no subscriber ever sees (measured with Mosquitto 2.0.11, 2026-11-27);
- `$SYS` every second, so queue depth and drops are visible quickly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import getpass
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_QUEUED_MESSAGES = 100_000
MAX_INFLIGHT_MESSAGES = 20_000
# Bytes of a whole MQTT packet (topic, properties and payload). The ingestor's own payload limit is lower, so
# a message between the two gets a dead letter; one over this limit the broker refuses unacknowledged.
MAX_PACKET_SIZE = 1 << 20
CONFIG_NAME = "mosquitto.conf"
LOG_NAME = "mosquitto.log"


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the process that started it dies, so a
    broker never outlives a killed test or demo (it still saves its persistence on SIGTERM)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def find_mosquitto() -> str:
    """The mosquitto binary: on PATH, else Debian's /usr/sbin (not on a normal user's PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    directory: Path,
    port: int,
    *,
    max_queued_messages: int = MAX_QUEUED_MESSAGES,
    max_inflight_messages: int = MAX_INFLIGHT_MESSAGES,
    max_packet_size: int = MAX_PACKET_SIZE,
    autosave_interval_s: int = 60,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # Started as root, Mosquitto would switch to the 'mosquitto' user, who cannot write here.
        f"user {getpass.getuser()}",
        "persistence true",
        f"persistence_location {directory}/",
        "persistence_file mosquitto.db",
        f"autosave_interval {autosave_interval_s}",
        f"max_queued_messages {max_queued_messages}",
        f"max_inflight_messages {max_inflight_messages}",
        f"max_packet_size {max_packet_size}",
        "sys_interval 1",
        f"log_dest file {directory / LOG_NAME}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    path = directory / CONFIG_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Broker:
    """A running Mosquitto; `stop()` is graceful (the persistence database is written), `kill()` is a crash."""

    directory: Path
    port: int
    binary: str
    config: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.directory / LOG_NAME).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _spawn(self, timeout: float) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
            # Its own session: a terminal's Ctrl-C (SIGINT to the whole foreground group) reaches the hub alone,
            # which stops its MQTT ingest first and then this broker, instead of the broker going first.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence database on the way out."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if process.stderr:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL: a broker crash (whatever arrived since the last autosave is gone)."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)
            if process.stderr:
                process.stderr.close()

    def restart(self, timeout: float = 10.0) -> None:
        """Graceful stop, then start again on the same port with the same persistence."""
        self.stop()
        self._spawn(timeout)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_broker(
    directory: Path,
    port: int | None = None,
    *,
    max_queued_messages: int = MAX_QUEUED_MESSAGES,
    max_inflight_messages: int = MAX_INFLIGHT_MESSAGES,
    max_packet_size: int = MAX_PACKET_SIZE,
    timeout: float = 10.0,
) -> Broker:
    """Write a config under `directory`, start Mosquitto on 127.0.0.1:`port` (a free one when None) and
    wait until it accepts connections. Stop it with `.stop()` or use it as a context manager."""
    binary = find_mosquitto()
    attempts = 1 if port is not None else 3  # a free port can be taken between the probe and the bind
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        config = write_config(
            Path(directory),
            chosen,
            max_queued_messages=max_queued_messages,
            max_inflight_messages=max_inflight_messages,
            max_packet_size=max_packet_size,
        )
        broker = Broker(Path(directory), chosen, binary, config)
        try:
            broker._spawn(timeout)
            return broker
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def main() -> None:  # pragma: no cover - manual use: `python -m polis.ingest.broker DIR [PORT]`
    import sys

    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "polis-data/mosquitto")
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 1883
    broker = start_broker(directory, port)
    print(broker.url, flush=True)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping and broker.running:
            time.sleep(0.2)
    finally:
        broker.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
