// The status strip: ingest rate and lag from /metrics (Prometheus text), entities held, and how accurate
// the hub's forecasts have been where the hub publishes that.

import { ApiError, request } from "./api.js";

const RATE_WINDOW_MS = 30_000;

export function parseMetrics(text) {
  const values = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    values.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return values;
}

function setMetric(element, text, kind = "") {
  element.querySelector("b").textContent = text;
  element.dataset.state = kind;
}

export class StatusStrip {
  constructor(root) {
    this.rate = root.querySelector("#m-rate");
    this.lag = root.querySelector("#m-lag");
    this.entities = root.querySelector("#m-entities");
    this.accuracy = root.querySelector("#m-accuracy");
    this.live = root.querySelector("#m-live");
    this.samples = []; // [{readings, at}] over the last RATE_WINDOW_MS: sensors report in bursts
  }

  reset() {
    this.samples = [];
    for (const element of [this.rate, this.lag, this.entities, this.accuracy]) setMetric(element, "–");
  }

  setLive(state, why = "") {
    const text = { live: "live", reconnecting: "reconnecting…", off: "polling" }[state] || state;
    setMetric(this.live, text, state);
    this.live.title = why || "live updates";
  }

  async refresh() {
    let text;
    try {
      text = await (await request("/metrics", { accept: "text/plain" })).text();
    } catch (error) {
      if (error instanceof ApiError && error.noAccess) {
        for (const element of [this.rate, this.lag, this.entities]) setMetric(element, "no access", "no-access");
        return;
      }
      throw error;
    }
    const values = parseMetrics(text);
    const now = performance.now();
    const readings = values.get('polis_ingest_readings{source="mqtt"}');
    setMetric(this.entities, String(values.get("polis_entities") ?? "–"));
    if (readings === undefined) {
      setMetric(this.rate, "no live source", "idle");
      setMetric(this.lag, "–", "idle");
      this.samples = [];
      return;
    }
    this.samples.push({ readings, at: now });
    while (this.samples.length > 2 && now - this.samples[1].at >= RATE_WINDOW_MS) this.samples.shift();
    const first = this.samples[0];
    if (now - first.at >= 1000) {
      const rate = (readings - first.readings) / ((now - first.at) / 1000);
      setMetric(this.rate, `${rate.toFixed(rate < 10 ? 1 : 0)} readings/s`);
    } else {
      setMetric(this.rate, "measuring…");
    }
    const lag = values.get('polis_ingest_lag_s{source="mqtt"}') ?? 0;
    const pending = values.get('polis_ingest_pending{source="mqtt"}') ?? 0;
    const latency = values.get('polis_ingest_last_latency_ms{source="mqtt"}');
    const stored = latency === undefined ? "" : ` · stored in ${Math.round(latency)} ms`;
    setMetric(this.lag, `${lag.toFixed(lag < 10 ? 2 : 0)} s · ${pending} waiting${stored}`, lag > 5 ? "warn" : "");
  }

  setAccuracy(text, kind = "") {
    setMetric(this.accuracy, text, kind);
  }
}
