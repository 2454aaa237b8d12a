"""MQTT ingest: publish -> committed throughput and latency, against a bare paho baseline, and crash safety.

Targets (2 cores, the load generator on the same machine):
- >= 10,000 single-reading messages/s, publish -> committed in the hub;
- >= 100,000 readings/s when a gateway sends many readings per message;
- SIGKILL the ingest process at >= 20 random points during >= 20,000 messages: 0 acknowledged lost, 0 twice.

Set-up, every round on a fresh Mosquitto (polis.ingest.broker: persistence, bounded queues) and a fresh
on-disk hub holding the Los-loop dataset (`polis ingest los-loop`: 207 entities with locations and
417k readings), so every message updates a real entity:
- publisher: a separate process, stock paho-mqtt, QoS 1, 50 messages in flight (paho's sweet spot;
  more makes it slower), publishing as fast as the broker acknowledges. Payloads are the next Los-loop
  readings after the recorded week, in key-values form, time-major (207 sensors per 5-minute step);
- ingest: `MqttIngestor` in this process, as `polis serve --mqtt` runs it (defaults: groups of up to
  2,000 messages or 20 ms);
- baseline: the same publisher and a bare stock paho QoS 1 subscriber (MQTT 3.1.1 persistent session,
  manual acks, acknowledging each message on arrival), in two processes, through the same broker build:
  the transport alone. Bare and ingest rounds alternate; medians are reported and compared.
Latency is per message: the commit of the group holding it (ingest) or its arrival (bare) minus the
moment the publisher handed it to paho, both on this machine's clock. At full speed it is mostly time
queued in the broker (the publisher outruns the consumer), so it is also measured with the publisher
paced at 5,000 messages/s. Throughput: messages over the time from the first publish to the last commit.

Run: `python -m benchmarks.bench_mqtt` (all), or `... single batch crash` for some parts;
`--quick` runs smaller sizes. Results: benchmarks/out/mqtt.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, cleanup, fresh_dir, latency_stats, los_loop, save, say, verdict

TARGET_MESSAGES_PER_S = 10_000.0
TARGET_READINGS_PER_S = 100_000.0
SINGLE_MESSAGES = 60_000
BATCH_READINGS = 414_000  # 2,000 gateway messages of one 5-minute step each (207 readings)
CRASH_MESSAGES = 20_000
CRASH_KILLS = 25
ROUNDS = 3
IN_FLIGHT = 50
PACED_RATE = 5_000.0  # below saturation, so latency is the ingest path's, not a queue's
NEXT_WEEK = datetime(2012, 3, 8, 8, 0, tzinfo=UTC)  # the recorded week ends 2012-03-08T07:55Z


# ---------------------------------------------------------------------------------------------- load


def _payloads(messages: int, batch: bool) -> list[tuple[str, bytes]]:
    """Los-loop's speeds, replayed as the week after the recording (newer than anything the hub holds)."""
    import orjson

    loop = los_loop()
    ids, speeds = loop.entity_ids, loop.speeds
    n = len(ids)
    out: list[tuple[str, bytes]] = []
    if not batch:
        for k in range(messages):
            step, sensor = divmod(k, n)
            when = (NEXT_WEEK + timedelta(minutes=5 * step)).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {"averageVehicleSpeed": float(speeds[step % speeds.shape[0], sensor]), "dateObserved": when}
            out.append((f"polis/default/TrafficFlowObserved/{ids[sensor]}", orjson.dumps(body)))
        return out
    for step in range(messages):
        when = (NEXT_WEEK + timedelta(minutes=5 * step)).strftime("%Y-%m-%dT%H:%M:%SZ")
        row = speeds[step % speeds.shape[0]]
        items = [{"id": ids[s], "averageVehicleSpeed": float(row[s]), "dateObserved": when} for s in range(n)]
        out.append(("polis/default/TrafficFlowObserved/_batch", orjson.dumps(items)))
    return out


def _publisher_main(port: int, messages: int, batch: bool, out_path: str, rate: float) -> None:
    """Child process: publish (at `rate` messages/s, or as fast as acknowledged when 0), wait for every
    PUBACK, save the publish times."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    payloads = _payloads(messages, batch)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(IN_FLIGHT)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *_: acked.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent = np.empty(len(payloads))
    print("ready", flush=True)
    sys.stdin.readline()  # go
    began = time.time()
    for k, (topic, payload) in enumerate(payloads):
        if rate > 0:
            pause = began + k / rate - time.time()
            if pause > 0:
                time.sleep(pause)
        sent[k] = time.time()
        client.publish(topic, payload, qos=1)
    for _ in payloads:
        acked.acquire()
    np.save(out_path, sent)
    client.disconnect()
    client.loop_stop()


def _bare_subscriber_main(port: int, messages: int, out_path: str) -> None:
    """Child process: the transport alone. Stock paho, QoS 1, persistent session, manual acks on arrival."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-sub", clean_session=False, manual_ack=True)
    received = np.empty(messages)
    count = [0]
    done = threading.Event()

    def on_message(c: Any, _u: Any, msg: Any) -> None:
        received[count[0]] = time.time()
        c.ack(msg.mid, msg.qos)
        count[0] += 1
        if count[0] == messages:
            done.set()

    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_connect = lambda c, *_: c.subscribe("polis/#", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.wait(10)
    print("ready", flush=True)
    done.wait(600)
    np.save(out_path, received[: count[0]])
    client.disconnect()
    client.loop_stop()


def _child(role: str, *args: Any) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_mqtt", "_" + role, *map(str, args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"benchmark {role} process did not start")
    return process


def _finish(process: subprocess.Popen[str], timeout: float = 600) -> None:
    process.wait(timeout=timeout)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    if process.returncode:
        raise RuntimeError(f"benchmark child exited with {process.returncode}")


# ---------------------------------------------------------------------------------------------- rounds


def _seeded_hub(work: Path) -> Path:
    """A hub database holding Los-loop, made once and copied for every round."""
    from benchmarks.common import ingest_datasets

    path = work / "seed" / "polis.duckdb"
    path.parent.mkdir(parents=True)
    ingest_datasets(path, ["los-loop"])
    return path


def _stats(sent: np.ndarray, done: np.ndarray, items: int) -> dict[str, Any]:
    seconds = float(done.max() - sent.min())
    return {
        "seconds": round(seconds, 3),
        "per_s": round(items / seconds, 1),
        "latency": latency_stats(np.maximum(done - sent, 0.0)),
    }


def _bare_round(work: Path, messages: int) -> dict[str, Any]:
    from polis.ingest.broker import start_broker

    broker = start_broker(work / "broker")
    try:
        subscriber = _child("bare", broker.port, messages, work / "received.npy")
        publisher = _child("publish", broker.port, messages, 0, work / "sent.npy", 0)
        assert publisher.stdin is not None
        publisher.stdin.write("go\n")
        publisher.stdin.flush()
        _finish(publisher)
        _finish(subscriber)
    finally:
        broker.stop()
    sent, received = np.load(work / "sent.npy"), np.load(work / "received.npy")
    if received.size != messages:
        raise RuntimeError(f"bare subscriber got {received.size} of {messages}")
    return _stats(sent, received, messages)


def _ingest_round(work: Path, seed_db: Path, messages: int, batch: bool, rate: float = 0) -> dict[str, Any]:
    from polis.ingest.broker import start_broker
    from polis.ingest.mqtt import MqttIngestor
    from polis.platform import Platform
    from polis.runtime import tune_for_service
    from polis.settings import Settings

    data_dir = work / "hub"
    data_dir.mkdir(parents=True)
    shutil.copy(seed_db, data_dir / "polis.duckdb")
    broker = start_broker(work / "broker")
    platform = Platform(Settings(data_dir=data_dir))
    tune_for_service()  # as `polis serve` does once the hub is up
    commits: list[tuple[int, float]] = []
    ingestor = MqttIngestor(platform, broker.url, on_commit=lambda group, at: commits.append((len(group), at)))
    cpu0 = time.process_time()
    try:
        ingestor.start(wait_s=10)
        publisher = _child("publish", broker.port, messages, int(batch), work / "sent.npy", rate)
        assert publisher.stdin is not None
        publisher.stdin.write("go\n")
        publisher.stdin.flush()
        deadline = time.monotonic() + 600
        while sum(n for n, _ in commits) < messages and time.monotonic() < deadline:
            time.sleep(0.01)
        _finish(publisher)
        metrics = ingestor.metrics()
    finally:
        ingestor.stop()
        cpu = time.process_time() - cpu0
        platform.close()
        broker.stop()
    if metrics["committed"] != messages or metrics["dead_lettered"] or metrics["duplicates"]:
        raise RuntimeError(f"ingest round did not commit every message exactly once: {metrics}")
    sent = np.load(work / "sent.npy")
    done = np.repeat([at for _, at in commits], [n for n, _ in commits])
    stats = _stats(sent, done, messages)
    if batch:
        stats["readings"] = metrics["readings"]
        stats["readings_per_s"] = round(metrics["readings"] / stats["seconds"], 1)
    stats["groups"] = metrics["groups"]
    stats["ingest_process_cpu_s"] = round(cpu, 2)
    return stats


def _median_of(rounds: list[dict[str, Any]], key: str) -> float:
    return round(float(np.median([r[key] for r in rounds])), 1)


def run_single(work: Path, seed_db: Path, messages: int) -> dict[str, Any]:
    say(f"  single-reading messages: {messages:,} per round, {ROUNDS} rounds, bare and ingest alternating")
    bare, ingest = [], []
    for k in range(ROUNDS):
        bare.append(_bare_round(work / f"bare-{k}", messages))
        ingest.append(_ingest_round(work / f"single-{k}", seed_db, messages, batch=False))
        say(
            f"    round {k}: bare {bare[-1]['per_s']:,.0f} msg/s, ingest {ingest[-1]['per_s']:,.0f} msg/s "
            f"(p50 {ingest[-1]['latency']['median_ms']:.0f} ms, p99 {ingest[-1]['latency']['p99_ms']:.0f} ms)"
        )
    paced = _ingest_round(work / "paced", seed_db, messages // 2, batch=False, rate=PACED_RATE)
    say(
        f"    paced at {PACED_RATE:,.0f} msg/s: p50 {paced['latency']['median_ms']:.0f} ms, "
        f"p99 {paced['latency']['p99_ms']:.0f} ms publish -> committed"
    )
    best = max(range(ROUNDS), key=lambda i: ingest[i]["per_s"])
    median_ingest, median_bare = _median_of(ingest, "per_s"), _median_of(bare, "per_s")
    return {
        "target": f">= {TARGET_MESSAGES_PER_S:,.0f} single-reading messages/s publish -> committed",
        "messages_per_round": messages,
        "measured_per_s": median_ingest,
        "verdict": verdict(median_ingest, TARGET_MESSAGES_PER_S, higher_is_better=True),
        "bare_paho_per_s": median_bare,
        "ratio_ingest_vs_bare": round(median_ingest / median_bare, 3),
        "latency_ms_p50_p99_median_round": [
            float(np.median([r["latency"]["median_ms"] for r in ingest])),
            float(np.median([r["latency"]["p99_ms"] for r in ingest])),
        ],
        "bare_latency_ms_p50_p99_median_round": [
            float(np.median([r["latency"]["median_ms"] for r in bare])),
            float(np.median([r["latency"]["p99_ms"] for r in bare])),
        ],
        "paced_rate_per_s": PACED_RATE,
        "paced_latency": paced["latency"],
        "best_ingest_round": ingest[best],
        "ingest_rounds": ingest,
        "bare_rounds": bare,
    }


def run_batch(work: Path, seed_db: Path, readings: int) -> dict[str, Any]:
    messages = readings // 207
    say(f"  gateway messages: {messages:,} of 207 readings per round, {ROUNDS} rounds")
    rounds = [_ingest_round(work / f"batch-{k}", seed_db, messages, batch=True) for k in range(ROUNDS)]
    for k, r in enumerate(rounds):
        say(
            f"    round {k}: {r['readings_per_s']:,.0f} readings/s (p50 {r['latency']['median_ms']:.0f} ms, "
            f"p99 {r['latency']['p99_ms']:.0f} ms per message)"
        )
    measured = _median_of(rounds, "readings_per_s")
    return {
        "target": f">= {TARGET_READINGS_PER_S:,.0f} readings/s in gateway messages",
        "readings_per_message": 207,
        "measured_readings_per_s": measured,
        "verdict": verdict(measured, TARGET_READINGS_PER_S, higher_is_better=True),
        "rounds": rounds,
    }


# ---------------------------------------------------------------------------------------------- crash


def run_crash(work: Path, messages: int, kills: int, seed: int = 20120301) -> dict[str, Any]:
    """SIGKILL `python -m polis.ingest.mqtt` at random moments while a publisher streams unique readings;
    restart it each time; at the end every reading the broker acknowledged must be stored exactly once."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from polis.ingest.broker import start_broker
    from polis.settings import Settings
    from polis.store.duckdb_ import DuckDBStore

    say(f"  crash safety: {messages:,} messages, {kills} SIGKILLs of the ingest process")
    rng = random.Random(seed)
    broker = start_broker(work / "crash-broker")
    data_dir = work / "crash-hub"
    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir)}
    log = (work / "crash-ingest.log").open("a")

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "polis.ingest.mqtt", "--url", broker.url, "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"ingest did not start; see {work / 'crash-ingest.log'}")
        return process

    def end(process: subprocess.Popen[str], sig: int) -> None:
        process.send_signal(sig)
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-crash-pub")
    client.max_inflight_messages_set(IN_FLIGHT)
    acked: set[int] = set()
    lock = threading.Lock()

    def on_publish(_c: Any, _u: Any, mid: int, *_: Any) -> None:
        with lock:
            acked.add(mid)

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    sent: dict[int, tuple[str, str]] = {}
    restarts: list[float] = []
    finished = threading.Event()
    started = time.monotonic()
    process = start()
    span = kills * 1.6

    def publish() -> None:
        for i in range(messages):
            eid = f"urn:ngsi-ld:TrafficFlowObserved:crash-{i % 207}"
            when = (NEXT_WEEK + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = json.dumps({"averageVehicleSpeed": i % 97, "dateObserved": when})
            sent[client.publish(f"polis/default/TrafficFlowObserved/{eid}", body, qos=1).mid] = (eid, when)
            time.sleep(span / messages)
        finished.set()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.05, 0.6))
            end(process, signal.SIGKILL)
            t0 = time.monotonic()
            process = start()
            restarts.append(time.monotonic() - t0)
        finished.wait(600)
        _wait(lambda: len(acked) >= messages, 120)
        time.sleep(2.0)
    finally:
        end(process, signal.SIGTERM)
        client.disconnect()
        client.loop_stop()
        broker.stop()
        log.close()
    store = DuckDBStore(data_dir / "polis.duckdb")
    try:
        rows = store._con.execute(
            "SELECT eid, strftime(observed_at, '%Y-%m-%dT%H:%M:%SZ') FROM history WHERE tenant = ''"
        ).fetchall()
    finally:
        store.close()
    acknowledged = {sent[m] for m in acked}
    stored = [tuple(r) for r in rows]
    lost = len(acknowledged - set(stored))
    duplicates = len(stored) - len(set(stored))
    ok = lost == 0 and duplicates == 0 and kills >= 20 and messages >= 20_000
    say(
        f"    acknowledged {len(acknowledged):,}, stored {len(stored):,}, lost {lost}, twice {duplicates}; "
        f"restart {np.median(restarts):.2f} s median"
    )
    return {
        "target": ">= 20 SIGKILLs during >= 20,000 messages: 0 acknowledged lost, 0 duplicates",
        "messages": messages,
        "kills": kills,
        "acknowledged": len(acknowledged),
        "stored": len(stored),
        "lost": lost,
        "duplicates": duplicates,
        "verdict": "MET" if ok else "MISSED",
        "restart_median_s": round(float(np.median(restarts)), 3),
        "seconds": round(time.monotonic() - started, 1),
    }


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- main


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(parts: list[str] | None = None, quick: bool = False) -> dict[str, Any]:
    parts = parts or ["single", "batch", "crash"]
    scale = 0.2 if quick else 1.0
    say("bench_mqtt: MQTT ingest through Mosquitto " + ("(quick sizes)" if quick else ""))
    work = fresh_dir("mqtt")
    result: dict[str, Any] = {"load_average_before": _load()}
    try:
        seed_db = _seeded_hub(work) if {"single", "batch"} & set(parts) else Path()
        if "single" in parts:
            result["single"] = run_single(work, seed_db, int(SINGLE_MESSAGES * scale))
        if "batch" in parts:
            result["batch"] = run_batch(work, seed_db, int(BATCH_READINGS * scale))
        if "crash" in parts:
            result["crash"] = run_crash(work, CRASH_MESSAGES if not quick else 3000, CRASH_KILLS if not quick else 20)
    finally:
        cleanup(work)
    result["load_average_after"] = _load()
    result["command"] = "python -m benchmarks.bench_mqtt " + " ".join(parts) + (" --quick" if quick else "")
    path = save("mqtt", result)
    summary = {
        k: {
            x: v[x]
            for x in v
            if x
            in (
                "measured_per_s",
                "measured_readings_per_s",
                "bare_paho_per_s",
                "ratio_ingest_vs_bare",
                "latency_ms_p50_p99_median_round",
                "lost",
                "duplicates",
                "verdict",
            )
        }
        for k, v in result.items()
        if isinstance(v, dict)
    }
    say(json.dumps(summary, indent=2))
    say(f"  written to {path}")
    return result


def main(argv: list[str]) -> None:
    if argv and argv[0] == "_publish":
        _publisher_main(int(argv[1]), int(argv[2]), bool(int(argv[3])), argv[4], float(argv[5]))
    elif argv and argv[0] == "_bare":
        _bare_subscriber_main(int(argv[1]), int(argv[2]), argv[3])
    else:
        quick = "--quick" in argv
        run([a for a in argv if not a.startswith("--")] or None, quick=quick)


if __name__ == "__main__":
    main(sys.argv[1:])
