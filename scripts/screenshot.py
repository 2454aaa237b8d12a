"""Take the README's screenshot of the dashboard with headless Chromium (Debian's package).

    .venv/bin/python scripts/screenshot.py --demo    # start `polis demo` on a fresh data dir, time it, shoot
    .venv/bin/python scripts/screenshot.py           # or shoot a hub already running (`make run`)

With --demo it starts the demo city exactly as `make run` does (on a free port, in a temporary data
directory), and reports how long it took from the start until the dashboard was live in the browser
(every view loaded, the live stream open). It signs in with the hub's admin key, lets live readings
arrive for a few seconds, picks a sensor and the newest alert, and saves the page as a PNG.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_key(path: Path, process: subprocess.Popen[bytes] | None, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        if process is not None and process.poll() is not None:
            sys.exit(f"polis demo exited early with status {process.returncode}")
        time.sleep(0.2)
    sys.exit(f"no admin key at {path} after {timeout:.0f} s")


def shoot(url: str, key: str, args: argparse.Namespace, started: float | None) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            context.add_init_script(f"sessionStorage.setItem('polis.apiKey', {key!r})")
            page = context.new_page()
            deadline = time.monotonic() + args.timeout
            while True:  # the server may still be loading the demo city
                try:
                    page.goto(url + "/", timeout=5_000)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            page.wait_for_selector("body[data-ready=yes]", timeout=args.timeout * 1000)
            page.wait_for_function("document.querySelector('#m-live b').textContent === 'live'", timeout=30_000)
            if started is not None:
                print(f"dashboard live {time.monotonic() - started:.1f} s after `polis demo` started")
            sensor = f"#traffic-map circle.sensor[data-id='{args.sensor}']"
            page.dispatch_event(sensor, "click")
            page.wait_for_selector("#sensor-chart polyline.history", timeout=30_000)
            # the demo trains its first forecasting model in the background: wait for its forecasts
            deadline = time.monotonic() + args.forecast_wait
            while not page.locator("#sensor-chart polygon.band").count() and time.monotonic() < deadline:
                time.sleep(5)
                page.dispatch_event(sensor, "click")
            time.sleep(args.settle)
            if page.locator("#alerts-list li.alert").count():
                page.click("#alerts-list li.alert >> nth=0")
                page.wait_for_selector("#cap-detail dl.cap-fields", timeout=10_000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
        finally:
            browser.close()
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", action="store_true", help="start `polis demo` on a fresh data dir first")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a running hub (default http://127.0.0.1:8000)")
    parser.add_argument("--key-file", type=Path, default=Path("polis-data/admin.key"), help="API key to sign in with")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"), help="where to write the PNG")
    parser.add_argument("--sensor", default="urn:ngsi-ld:TrafficFlowObserved:los-loop:773869", help="sensor to chart")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of live updates before the shot")
    parser.add_argument("--forecast-wait", type=float, default=0.0, help="seconds to wait for a forecast to show")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the hub")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    args = parser.parse_args()

    if not args.demo:
        shoot(args.url.rstrip("/"), args.key_file.read_text().strip(), args, None)
        return
    with tempfile.TemporaryDirectory(prefix="polis-screenshot-") as folder:
        data_dir = Path(folder) / "hub"
        port = free_port()
        started = time.monotonic()
        demo = subprocess.Popen(
            [sys.executable, "-m", "polis.cli", "demo", "--port", str(port), "--data-dir", str(data_dir)],
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
        )
        try:
            key = wait_for_key(data_dir / "admin.key", demo, args.timeout)
            shoot(f"http://127.0.0.1:{port}", key, args, started)
        finally:
            demo.terminate()
            demo.wait(30)


if __name__ == "__main__":
    main()
