"""The streaming commands as an operator runs them: serve --mqtt, replay, deadletters, doctor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from polis.ingest.broker import start_broker
from polis.settings import Settings
from tests.conftest import free_port, key_headers, stop_server


def polis(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "polis.cli", *args], capture_output=True, text=True, timeout=120, env=full
    )


def test_replayed_readings_reach_a_served_hub_and_bad_ones_are_listed(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "broker")
    port = free_port()
    hub = tmp_path / "hub"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polis.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(hub),
            "--mqtt",
            broker.url,
        ],
        env={**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not answer in 60 s"
            try:
                if "polis_ingest_connected" in httpx.get(f"{url}/metrics", timeout=1, headers=key_headers(hub)).text:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)

        replayed = polis("replay", "los-loop", "--speed", "0", "--limit", "414", "--mqtt", broker.url)
        assert replayed.returncode == 0, replayed.stderr
        assert "published 414 messages" in replayed.stdout

        bad = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bad-sensor")
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        bad.publish(
            "polis/default/TrafficFlowObserved/urn:ngsi-ld:TrafficFlowObserved:x", b"{not json", qos=1
        ).wait_for_publish(10)
        bad.loop_stop()
        bad.disconnect()

        deadline = time.monotonic() + 30
        while True:
            values = dict(
                line.rsplit(" ", 1)
                for line in httpx.get(f"{url}/metrics", timeout=5, headers=key_headers(hub)).text.splitlines()
                if line and not line.startswith("#")
            )
            if float(values['polis_ingest_committed{source="mqtt"}']) >= 414 and values["polis_dead_letters"] == "1":
                break
            assert time.monotonic() < deadline, values
            time.sleep(0.2)
        history = httpx.get(
            f"{url}/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:TrafficFlowObserved:los-loop:773869",
            params={"options": "temporalValues"},
            timeout=10,
            headers=key_headers(hub),
        ).json()
        speed = history["https://smartdatamodels.org/dataModel.Transportation/averageVehicleSpeed"]["values"]
        assert [t for _, t in speed] == ["2012-03-01T08:00:00Z", "2012-03-01T08:05:00Z"]  # 414 = 2 steps x 207

        api_key = {"POLIS_API_KEY": (hub / "admin.key").read_text().strip()}  # the CLI asks a hub with a key
        listed = polis("deadletters", "--url", url, env=api_key)
        assert listed.returncode == 0, listed.stderr
        assert "{not json" in listed.stdout and "JSON" in listed.stdout

        doctor = polis("doctor", env={"POLIS_PORT": str(port), **api_key})
        assert "MQTT lag" in doctor.stdout
    finally:
        stop_server(server)
        broker.stop()
