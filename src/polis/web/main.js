// The dashboard page: sign in with a department key, load every view, keep them live.

import { ApiError, apiKey, findPath, getJson, setApiKey } from "./api.js";
import { AlertsView } from "./alerts.js";
import { CrowdView } from "./crowd.js";
import { EpidemicView } from "./epidemic.js";
import { ALERT_TYPE, LiveFeed } from "./live.js";
import { MobilityView } from "./mobility.js";
import { StatusStrip } from "./status.js";
import { TrafficView } from "./traffic.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 10_000;
const METRICS_MS = 5_000;

// Does one of the grants allow `action` on `dataset` (at any tier)? For the page's messages only: the hub
// decides every request itself.
export function grants(me, dataset, action) {
  return (me.grants || []).some(
    (g) => (g.dataset === "*" || g.dataset === dataset) && (g.action === "*" || g.action === action),
  );
}

class Dashboard {
  constructor() {
    this.status = new StatusStrip($("status-strip"));
    this.traffic = new TrafficView({
      svg: $("traffic-map"),
      notice: $("traffic-notice"),
      chartSvg: $("sensor-chart"),
      hint: $("sensor-hint"),
      detail: $("sensor-detail"),
      name: $("sensor-name"),
      forecastNote: $("forecast-note"),
    });
    this.alerts = new AlertsView({
      list: $("alerts-list"),
      count: $("alerts-count"),
      notice: $("alerts-notice"),
      detail: $("cap-detail"),
      onAreas: (areas) => {
        this.traffic.map.setAreas(areas);
        this.crowd.map.setAreas(areas);
      },
    });
    this.crowd = new CrowdView({ svg: $("crowd-map"), table: $("crowd-table"), hour: $("crowd-hour") });
    this.mobility = new MobilityView({
      svg: $("mobility-map"),
      hours: $("station-hours"),
      matrix: $("od-matrix"),
      note: $("od-note"),
      dayLabel: $("mobility-day"),
      daySelect: $("mobility-day-select"),
      notice: $("mobility-notice"),
      body: $("mobility-body"),
    });
    this.epidemic = new EpidemicView({
      notice: $("epidemic-notice"),
      body: $("epidemic-body"),
      country: $("epidemic-country"),
      asOf: $("epidemic-asof"),
      riskTable: $("epidemic-risk"),
      form: $("epidemic-form"),
      regions: $("epidemic-regions"),
      mode: $("epidemic-mode"),
      reduction: $("epidemic-reduction"),
      start: $("epidemic-start"),
      days: $("epidemic-days"),
      result: $("epidemic-result"),
      chart: $("epidemic-chart"),
      summary: $("epidemic-summary"),
    });
    this.live = null;
    this.timers = [];
    this.me = null;
  }

  async signIn(key) {
    const previous = apiKey();
    setApiKey(key);
    try {
      this.me = await getJson("/polis/v1/access/me");
    } catch (error) {
      setApiKey(this.me ? previous : null); // a mistyped key leaves the signed-in department as it was
      throw error;
    }
    this.showDepartment();
    await this.start();
  }

  showDepartment() {
    $("department").textContent = this.me.department;
    $("department").title = (this.me.grants || []).map((g) => `${g.action} ${g.dataset}/${g.tier}`).join("\n");
    const signedIn = apiKey() !== null;
    $("api-key").hidden = signedIn;
    $("signin-button").hidden = signedIn;
    $("signout-button").hidden = !signedIn;
  }

  stop() {
    if (this.live) this.live.stop();
    this.live = null;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
  }

  async start() {
    this.stop();
    document.body.dataset.ready = "loading";
    for (const view of [this.traffic, this.alerts, this.crowd, this.mobility, this.epidemic, this.status]) view.reset();
    const settle = (name, promise) =>
      promise.catch((error) => {
        console.warn(`${name}:`, error.message); // a view that cannot load says so in its panel
        return null;
      });
    const mayRead = (dataset) => grants(this.me, dataset, "read");
    const [laMap, melbourneMap] = await Promise.all([
      getJson("/dashboard/maps/los-angeles.geojson").catch(() => null),
      getJson("/dashboard/maps/melbourne.geojson").catch(() => null),
    ]);
    this.live = new LiveFeed({ onData: (entities) => this.onData(entities), onState: (s, why) => this.status.setLive(s, why) });
    const live = this.live.start();
    await Promise.all([
      settle("traffic", this.traffic.load(laMap, mayRead("los-loop"))),
      settle("alerts", this.alerts.refresh()),
      settle("crowd", this.loadCrowd(melbourneMap, mayRead("melbourne-pedestrians"))),
      settle("mobility", this.loadMobility()),
      settle("epidemic", this.loadEpidemic(mayRead("epidemic"))),
      settle("status", this.status.refresh()),
      settle("accuracy", this.loadAccuracy()),
    ]);
    const streaming = await live;
    this.timers.push(setInterval(() => settle("status", this.status.refresh()), METRICS_MS));
    this.timers.push(setInterval(() => settle("accuracy", this.loadAccuracy()), POLL_MS * 3));
    this.timers.push(setInterval(() => settle("alerts", this.alerts.refresh()), POLL_MS));
    if (!streaming && mayRead("los-loop")) {
      this.timers.push(setInterval(() => settle("traffic", this.traffic.load(laMap, mayRead("los-loop"))), POLL_MS));
    }
    document.body.dataset.ready = "yes";
  }

  async loadCrowd(baseMap, mayRead) {
    const notice = $("crowd-notice");
    notice.hidden = true;
    try {
      const shown = await this.crowd.load(baseMap);
      if (shown) return;
    } catch (error) {
      if (!(error instanceof ApiError && error.noAccess)) throw error;
    }
    notice.textContent = mayRead
      ? "No pedestrian counters are held yet (polis ingest melbourne-pedestrians)."
      : "No access: this department has no grant to read melbourne-pedestrians.";
    notice.className = `notice ${mayRead ? "not-available" : "no-access"}`;
    notice.hidden = false;
  }

  async loadMobility() {
    const served = await findPath("/polis/v1/mobility/citibike-jersey-city/summary");
    try {
      await this.mobility.load(served);
    } catch (error) {
      this.mobility.fail(error);
    }
  }

  async loadEpidemic(mayRead) {
    await this.epidemic.load(await findPath("/polis/v1/epidemic"), mayRead);
  }

  // Live accuracy: the rolling mean absolute error of each model's forecasts once their times have passed.
  async loadAccuracy() {
    if (!(await findPath("/polis/v1/forecast-accuracy"))) {
      this.status.setAccuracy("not available", "idle");
      return;
    }
    let scores;
    try {
      scores = await getJson("/polis/v1/forecast-accuracy");
    } catch (error) {
      this.status.setAccuracy(error instanceof ApiError && error.noAccess ? "no access" : "not available", "idle");
      return;
    }
    if (!scores.length) {
      this.status.setAccuracy("not scored yet", "idle");
      return;
    }
    const byModel = new Map();
    for (const s of scores) {
      const m = byModel.get(s.model) || { errors: 0, points: 0, steps: [] };
      m.errors += s.mae * s.points;
      m.points += s.points;
      m.steps.push(s);
      byModel.set(s.model, m);
    }
    const text = [...byModel].map(([model, m]) => `${model} MAE ${(m.errors / m.points).toFixed(2)}`).join(" · ");
    this.status.setAccuracy(text);
    this.status.accuracy.title = scores.map((s) => `${s.model} step ${s.step}: MAE ${s.mae.toFixed(2)} (${s.points} points)`).join("\n");
  }

  onData(entities) {
    let alerts = false;
    for (const entity of entities) {
      const type = entity.type || "";
      if (type === ALERT_TYPE || type === "Alert") alerts = true;
      else if (type === "CrowdFlowObserved") this.crowd.update(entity);
      else if (type === "TrafficFlowObserved") this.traffic.update(entity);
    }
    if (alerts) this.alerts.refresh().catch((error) => console.warn("alerts:", error.message));
  }
}

async function main() {
  const dashboard = new Dashboard();
  const form = $("signin");
  const error = $("signin-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const key = $("api-key").value.trim();
    if (!key) return;
    try {
      await dashboard.signIn(key);
      $("api-key").value = "";
    } catch (failure) {
      error.textContent = failure instanceof ApiError && failure.status === 401 ? "That key is not valid." : failure.message;
    }
  });
  $("signout-button").addEventListener("click", async () => {
    setApiKey(null);
    await dashboard.signIn(null);
  });
  window.addEventListener("pagehide", () => dashboard.stop());
  try {
    await dashboard.signIn(apiKey());
  } catch (failure) {
    error.textContent = failure.message;
    await dashboard.signIn(null);
  }
}

main();
