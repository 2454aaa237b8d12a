"""Subscriptions: observation committed -> webhook notification delivered, while ingesting 5,000 observations/s.

Target (2 cores, everything on the same machine): p99 <= 200 ms.

Set-up, per round: a fresh Mosquitto and a fresh on-disk hub holding Los-loop (207 sensors, as in
bench_mqtt), MQTT ingest as `polis serve --mqtt` runs it, and bench_mqtt's publisher (a separate process,
stock paho, QoS 1) paced at 5,000 single-reading messages/s: the readings of the week after the recording.
Three subscriptions are active at once, each to its own path of one webhook receiver (a separate process,
Python's ThreadingHTTPServer, recording the arrival time of every POST):
- `one-sensor`: one sensor by id (about 24 notifications/s, one reading each);
- `slow-traffic`: every sensor with `q=averageVehicleSpeed<50` (a share of the readings);
- `all`: every reading of every sensor (one notification per ingest commit, ~100 readings each).
Latency is per reading: its arrival at the receiver minus the moment its commit returned (a bus listener
of the benchmark stamps each (entity, observedAt) right after the commit, before the subscription
listener's outbox write, so the outbox write is inside the measured time). Both clocks are this machine's.
Baseline of the same round: publish -> commit of the ingest path alone.

A second, "direct" round takes MQTT out: the benchmark commits upserts of 100 sensors back to back (paced at
one per 20 ms = 5,000 observations/s when the machine keeps up) through `EntityService.batch`, with the same
subscriptions and receiver; it also times the subscription listener (match + outbox write) per commit,
which is what subscriptions add to the write path.

Run: `python -m benchmarks.bench_notify` (`--quick`: fewer messages). Results: benchmarks/out/notify.json.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.bench_mqtt import NEXT_WEEK, PACED_RATE, _child, _finish, _seeded_hub
from benchmarks.common import ROOT, cleanup, fresh_dir, latency_stats, los_loop, save, say, verdict

TARGET_P99_MS = 200.0
MESSAGES = 40_000  # 8 s at 5,000/s
ROUNDS = 3
SDM = "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
SPEED = "averageVehicleSpeed"


def _receiver_main(port: str, out_path: str) -> None:
    """Child process: accept notifications, record (path, arrival time, body); save on 'stop'."""
    got: list[tuple[str, float, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real webhook receiver would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            got.append((self.path, time.time(), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.readline()
    server.shutdown()
    Path(out_path).write_bytes(orjson.dumps([(p, t, b.decode()) for p, t, b in got]))
    print("saved", flush=True)


def _round(work: Path, seed_db: Path, messages: int) -> dict[str, Any]:
    from polis.ingest.broker import start_broker
    from polis.ingest.mqtt import MqttIngestor
    from polis.localserver import free_port
    from polis.platform import Platform
    from polis.runtime import tune_for_service
    from polis.settings import Settings

    data_dir = work / "hub"
    data_dir.mkdir(parents=True)
    shutil.copy(seed_db, data_dir / "polis.duckdb")
    broker = start_broker(work / "broker")
    port = free_port()
    receiver = _child_receiver(port, work / "received.json")
    platform = Platform(Settings(data_dir=data_dir))
    terms = platform.contexts.resolve(SDM)
    speed_iri = terms.expand(SPEED)
    _subscribe(platform, terms, f"http://127.0.0.1:{port}", los_loop().entity_ids[0])

    committed: dict[tuple[str, str], float] = {}
    platform.bus._stagers.insert(0, _commit_stamps(speed_iri, committed))
    tune_for_service()
    commits: list[tuple[int, float]] = []
    ingestor = MqttIngestor(platform, broker.url, on_commit=lambda group, at: commits.append((len(group), at)))
    try:
        ingestor.start(wait_s=10)
        publisher = _child("publish", broker.port, messages, 0, work / "sent.npy", PACED_RATE)
        assert publisher.stdin is not None
        publisher.stdin.write("go\n")
        publisher.stdin.flush()
        deadline = time.monotonic() + 300
        while sum(n for n, _ in commits) < messages and time.monotonic() < deadline:
            time.sleep(0.01)
        _finish(publisher)
        time.sleep(2.0)  # the last notifications
        subs = platform.subscriptions.list("", 0, 10)[0]
        pending = {s.endpoint.uri.rsplit("/", 1)[1]: platform.subscriptions.pending("", s.id) for s, _ in subs}
        failures = {s.endpoint.uri.rsplit("/", 1)[1]: status.times_failed for s, status in subs}
    finally:
        ingestor.stop()
        platform.close()
        broker.stop()
        assert receiver.stdin is not None and receiver.stdout is not None
        receiver.stdin.write("stop\n")
        receiver.stdin.flush()
        receiver.stdout.readline()
        _finish(receiver, timeout=30)
    sent = np.load(work / "sent.npy")
    done = np.repeat([at for _, at in commits], [n for n, _ in commits])
    per_sub, notifications, unmatched = _latencies(work / "received.json", committed)
    readings_per_s = messages / float(done.max() - sent.min())
    result: dict[str, Any] = {
        "messages": messages,
        "ingested_per_s": round(readings_per_s, 1),
        "publish_to_commit": latency_stats(np.maximum(done - sent, 0.0)),
        "notifications": notifications,
        "unmatched_readings": unmatched,
        "pending_at_end": pending,
        "failures": failures,
        "commit_to_delivered": {name: latency_stats(v) for name, v in sorted(per_sub.items())},
        "commit_to_delivered_all_subscriptions": latency_stats([x for v in per_sub.values() for x in v]),
    }
    return result


def _direct_round(work: Path, seed_db: Path, seconds: float) -> dict[str, Any]:
    """The same subscriptions and receiver, with the MQTT path taken out: the benchmark itself commits
    upserts of 100 Los-loop sensors every 20 ms (5,000 observations/s) through `EntityService.batch`."""
    from polis.localserver import free_port
    from polis.platform import Platform
    from polis.runtime import tune_for_service
    from polis.settings import Settings

    data_dir = work / "hub"
    data_dir.mkdir(parents=True)
    shutil.copy(seed_db, data_dir / "polis.duckdb")
    port = free_port()
    receiver = _child_receiver(port, work / "received.json")
    platform = Platform(Settings(data_dir=data_dir))
    terms = platform.contexts.resolve(SDM)
    speed_iri = terms.expand(SPEED)
    loop = los_loop()
    ids, speeds = loop.entity_ids, loop.speeds
    _subscribe(platform, terms, f"http://127.0.0.1:{port}", ids[0])
    committed: dict[tuple[str, str], float] = {}
    listener_s: list[float] = []

    service = platform.subscriptions
    stage = service._stage  # timed, to report what matching adds to each write

    def timed(changes: Any) -> Any:
        t = time.perf_counter()
        rows = stage(changes)
        listener_s.append(time.perf_counter() - t)
        return rows

    bus = platform.bus
    bus._stagers = [_commit_stamps(speed_iri, committed)] + [timed if f == stage else f for f in bus._stagers]
    tune_for_service()
    per_commit, period = 100, 0.02
    commits = int(seconds / period)
    started = time.time()
    try:
        for k in range(commits):
            pause = started + k * period - time.time()
            if pause > 0:
                time.sleep(pause)
            items = []
            for j in range(k * per_commit, (k + 1) * per_commit):
                step, sensor = divmod(j, len(ids))
                when = (NEXT_WEEK + timedelta(minutes=5 * step)).strftime("%Y-%m-%dT%H:%M:%SZ")
                value = float(speeds[step % speeds.shape[0], sensor])
                items.append({"id": ids[sensor], "type": "TrafficFlowObserved",
                              SPEED: {"type": "Property", "value": value, "observedAt": when}})
            platform.entities.batch("", "upsert", items, lambda _: terms, replace=False)
        elapsed = time.time() - started
        time.sleep(2.0)
    finally:
        platform.close()
        assert receiver.stdin is not None and receiver.stdout is not None
        receiver.stdin.write("stop\n")
        receiver.stdin.flush()
        receiver.stdout.readline()
        _finish(receiver, timeout=30)
    per_sub, notifications, unmatched = _latencies(work / "received.json", committed)
    return {
        "committed_per_s": round(commits * per_commit / elapsed, 1),
        "notifications": notifications,
        "unmatched_readings": unmatched,
        "listener_ms_per_commit": latency_stats(listener_s),
        "commit_to_delivered": {name: latency_stats(v) for name, v in sorted(per_sub.items())},
        "commit_to_delivered_all_subscriptions": latency_stats([x for v in per_sub.values() for x in v]),
    }


def _commit_stamps(speed_iri: str, committed: dict[tuple[str, str], float]) -> Any:
    """A staged bus listener that records each reading's commit time, right after COMMIT (the first
    after-commit step, before the outbox hands anything to the delivery workers)."""

    class Stamp:
        def __init__(self, changes: Any) -> None:
            self.changes = changes

        def write(self, con: Any) -> None:
            pass

        def committed(self) -> None:
            now = time.time()
            for change in self.changes:
                entity = change.entity
                if entity is not None and speed_iri in entity:
                    committed[(change.entity_id, entity[speed_iri][0].get("observedAt", ""))] = now

    return Stamp


def _subscribe(platform: Any, terms: Any, base: str, sensor: str) -> None:
    for name, extra in (
        ("one-sensor", {"entities": [{"type": "TrafficFlowObserved", "id": sensor}]}),
        ("slow-traffic", {"entities": [{"type": "TrafficFlowObserved"}], "q": f"{SPEED}<50"}),
        ("all", {"entities": [{"type": "TrafficFlowObserved"}]}),
    ):
        body = {"type": "Subscription", "watchedAttributes": [SPEED], **extra,
                "notification": {"attributes": [SPEED], "endpoint": {"uri": f"{base}/{name}"}}}
        platform.subscriptions.create("", body, terms, SDM)


def _latencies(
    path: Path, committed: dict[tuple[str, str], float]
) -> tuple[dict[str, list[float]], dict[str, int], int]:
    per_sub: dict[str, list[float]] = {}
    notifications: dict[str, int] = {}
    unmatched = 0
    for url_path, arrived, text in orjson.loads(path.read_bytes()):
        name = url_path.strip("/")
        notifications[name] = notifications.get(name, 0) + 1
        for entity in orjson.loads(text)["data"]:
            at = committed.get((entity["id"], entity.get(SPEED, {}).get("observedAt", "")))
            if at is None:
                unmatched += 1
                continue
            per_sub.setdefault(name, []).append(arrived - at)
    return per_sub, notifications, unmatched


def _child_receiver(port: int, out_path: Path) -> Any:
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_notify", "_receiver", str(port), str(out_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError("webhook receiver did not start")
    return process


def run(quick: bool = False) -> dict[str, Any]:
    messages = 10_000 if quick else MESSAGES
    rounds = 1 if quick else ROUNDS
    work = fresh_dir("notify")
    try:
        seed_db = _seeded_hub(work)
        results = []
        for k in range(rounds):
            r = _round(work / f"round{k}", seed_db, messages)
            overall = r["commit_to_delivered_all_subscriptions"]
            say(f"  round {k + 1}: ingested {r['ingested_per_s']:,.0f} readings/s; commit -> delivered "
                f"p50 {overall['median_ms']:.1f} ms, p99 {overall['p99_ms']:.1f} ms over {overall['n']:,} readings "
                f"({r['notifications']} notifications); publish -> commit p50 "
                f"{r['publish_to_commit']['median_ms']:.1f} ms, p99 {r['publish_to_commit']['p99_ms']:.1f} ms")
            results.append(r)
        direct = []
        for k in range(rounds):
            d = _direct_round(work / f"direct{k}", seed_db, 2.0 if quick else 4.0)
            overall = d["commit_to_delivered_all_subscriptions"]
            say(f"  direct round {k + 1} (no MQTT): committed {d['committed_per_s']:,.0f} observations/s; commit -> "
                f"delivered p50 {overall['median_ms']:.1f} ms, p99 {overall['p99_ms']:.1f} ms over {overall['n']:,} "
                f"readings; subscription listener per commit p50 {d['listener_ms_per_commit']['median_ms']:.1f} ms")
            direct.append(d)
    finally:
        cleanup(work)
    p50 = float(np.median([r["commit_to_delivered_all_subscriptions"]["median_ms"] for r in results]))
    p99 = float(np.median([r["commit_to_delivered_all_subscriptions"]["p99_ms"] for r in results]))
    return {
        "target": f"p99 <= {TARGET_P99_MS:.0f} ms",
        "rate_per_s": PACED_RATE,
        "measured_p50_ms": round(p50, 1),
        "measured_p99_ms": round(p99, 1),
        "verdict": verdict(p99, TARGET_P99_MS, higher_is_better=False),
        "direct_p50_ms": round(float(np.median([d["commit_to_delivered_all_subscriptions"]["median_ms"]
                                                for d in direct])), 1),
        "direct_p99_ms": round(float(np.median([d["commit_to_delivered_all_subscriptions"]["p99_ms"]
                                                for d in direct])), 1),
        "rounds": results,
        "direct_rounds": direct,
    }


def main(argv: Sequence[str]) -> None:
    if argv and argv[0] == "_receiver":
        _receiver_main(*argv[1:])
        return
    say(f"notifications while ingesting {PACED_RATE:,.0f} observations/s (target p99 <= {TARGET_P99_MS:.0f} ms)")
    result = run(quick="--quick" in argv)
    say(f"  median of rounds: p50 {result['measured_p50_ms']} ms, p99 {result['measured_p99_ms']} ms: "
        f"{result['verdict']}; without MQTT: p50 {result['direct_p50_ms']} ms, p99 {result['direct_p99_ms']} ms")
    save("notify", result)


if __name__ == "__main__":
    main(sys.argv[1:])
