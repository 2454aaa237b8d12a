"""Congestion and sudden-drop detection on the real Los-loop speeds (207 sensors, 5-minute steps, one week).

No incident log is published for METR-LA, so this measures what an operator would see, not accuracy:
- congestion: episodes (runs of readings under half the sensor's free-flow speed lasting >= 10 minutes)
  per sensor-day, and the share of sensor-time congested;
- sudden drops: alarms (first step of each run at or above the level) per sensor-day, for the
  neighbour-corrected score the hub uses against a baseline that looks at the sensor alone (its own drop);
  the difference is how many alarms were shared slowdowns (rush hour, jam waves) rather than local ones;
- injected incidents: at TRIALS random (sensor, step) pairs where the sensor runs free, its speed is set to
  15 mph for 30 minutes; detected if the score reaches the level at the first step.
Run: `.venv/bin/python -m benchmarks.bench_traffic_alerts` (seconds).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import save, say
from polis.settings import Settings
from polis.traffic.incidents import drop_scores, free_flow, los_loop_neighbours

LEVELS = (0.3, 0.4, 0.5)
TRIALS = 1000
SEED = 20120301


def runs(on: np.ndarray, min_len: int = 1) -> int:
    """Runs of True down each column lasting at least `min_len` rows."""
    count = 0
    for column in on.T:
        length = 0
        for value in [*column, False]:
            if value:
                length += 1
            else:
                count += length >= min_len
                length = 0
    return count


def run() -> dict[str, object]:
    datasets = Settings().datasets_dir
    path = datasets / "traffic" / "los-loop" / "los_speed.csv"
    speeds = np.loadtxt(path, delimiter=",", skiprows=1)
    with path.open() as handle:
        ids = [f"urn:ngsi-ld:TrafficFlowObserved:los-loop:{s}" for s in handle.readline().strip().split(",")]
    position = {entity_id: i for i, entity_id in enumerate(ids)}
    near = los_loop_neighbours(datasets)
    neighbours = [[position[n] for n in near[i]] for i in ids]
    free = np.array([free_flow(speeds[:, s]) for s in range(speeds.shape[1])])
    sensor_days = speeds.shape[0] * speeds.shape[1] / 288
    congested = speeds < 0.5 * free
    result: dict[str, object] = {
        "sensors": speeds.shape[1],
        "steps": speeds.shape[0],
        "free_flow_mph_median": round(float(np.median(free)), 1),
        "congested_share": round(float(congested.mean()), 4),
        "congestion_episodes_10min_per_sensor_day": round(runs(congested, 2) / sensor_days, 3),
    }
    hub = drop_scores(speeds, free, neighbours)
    own = np.full(speeds.shape, np.nan)  # the baseline: the sensor's own drop, no neighbours
    for t in range(3, speeds.shape[0]):
        own[t] = (speeds[t - 3 : t].mean(axis=0) - speeds[t]) / free
    rng = np.random.default_rng(SEED)
    levels = []
    for level in LEVELS:
        hub_alarms = runs(np.nan_to_num(hub, nan=-1) >= level)
        own_alarms = runs(np.nan_to_num(own, nan=-1) >= level)
        detected = 0
        candidates = np.argwhere(speeds[3:] > 0.8 * free) + np.array([3, 0])
        picks = candidates[rng.choice(len(candidates), size=TRIALS, replace=False)]
        for t, s in picks:
            window = speeds[t - 3 : t + 1].copy()
            window[-1, s] = 15.0
            drops = (window[:-1].mean(axis=0) - window[-1]) / free
            others = drops[neighbours[s]] if neighbours[s] else np.array([0.0])
            score = min(drops[s], drops[s] - float(np.median(others)))
            detected += score >= level
        levels.append(
            {
                "level": level,
                "alarms_per_sensor_day": round(hub_alarms / sensor_days, 3),
                "own_drop_only_alarms_per_sensor_day": round(own_alarms / sensor_days, 3),
                "injected_15mph_detected": round(detected / TRIALS, 4),
            }
        )
        say(
            f"  speed drop >= {level}: {hub_alarms / sensor_days:.3f} alarms per sensor-day "
            f"(own drop alone: {own_alarms / sensor_days:.3f}); injected 15 mph incidents detected "
            f"{detected / TRIALS:.1%}"
        )
    result["speed_drop"] = levels
    say(
        f"congestion: {result['congested_share']:.1%} of sensor-time under half free-flow, "
        f"{result['congestion_episodes_10min_per_sensor_day']} episodes of >= 10 min per sensor-day"
    )
    save("traffic_alerts", result)
    return result


if __name__ == "__main__":
    run()
