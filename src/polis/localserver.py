"""`polis serve` in a child process on a free loopback port, with the shipped defaults: the real uvicorn
server that the test suite and the benchmarks start, wait for, and stop. Its output goes to a log file beside
the data directory, so a server that dies early says why."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from polis.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def headers(self) -> dict[str, str]:
        """The bootstrap admin key (written by the server on first start) as a request header; none before."""
        key_file = self.data_dir / "admin.key"
        return {"Authorization": f"Bearer {key_file.read_text().strip()}"} if key_file.is_file() else {}

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def memory_mib(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak resident) of the server process, in MiB."""
        out: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(rest.split()[0]) / 1024.0, 1)
        return out


def start_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    ready_path: str = "/health",
    args: Sequence[str] = (),
) -> Server:
    """Start `polis serve --data-dir DATA_DIR [ARGS]` and wait until `ready_path` answers 200."""
    port = free_port()
    full_env = {**os.environ, **(env or {}), "POLIS_DATASETS_DIR": str(Settings().datasets_dir)}
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "polis.cli", "serve", "--port", str(port), "--data-dir", str(data_dir), *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", data_dir, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early: {server.log_tail(2000)}")
        try:
            if httpx.get(server.url + ready_path, timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_server(process)
    raise RuntimeError(f"server did not start in {timeout:.0f} s: {server.log_tail(2000)}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Terminate (then kill) a server process, and close whatever pipes its starter gave it."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
