// Los Angeles loop detectors on the map, coloured by their latest speed; the picked one's history from
// the temporal API with the hub's forecast and its interval, when the hub publishes forecasts.

import { ApiError, findPath, getJson, query } from "./api.js";
import { Panel } from "./panel.js";
import { SensorChart } from "./chart.js";
import { CityMap, speedColour } from "./map.js";

const PREFIX = "^urn:ngsi-ld:TrafficFlowObserved:los-loop:";
const ATTRIBUTE = "averageVehicleSpeed";
const HISTORY_POINTS = 72; // six hours of 5-minute readings: the hour of forecast stays readable beside them
const WINDOW_MS = 6 * 3600 * 1000;

const FORECASTS = "/polis/v1/forecasts";
const FORECAST_CACHE_MS = 20_000;
const FORECAST_REFRESH_MS = 3_000;

// A forecast path as the hub serves it -> [{t, value, lower, upper}] (the 80 % interval).
export function forecastPoints(path) {
  return (path.points || [])
    .map((p) => ({ t: Date.parse(p.validAt), value: p.value, lower: p.lower80 ?? p.value, upper: p.upper80 ?? p.value }))
    .filter((p) => Number.isFinite(p.t) && typeof p.value === "number");
}

export class TrafficView extends Panel {
  constructor({ svg, notice, chartSvg, hint, detail, name, forecastNote }) {
    super();
    Object.assign(this, { notice, hint, detail, name, forecastNote });
    this.chart = new SensorChart(chartSvg);
    this.selected = null;
    this.map = new CityMap(svg, {
      colour: (mph) => speedColour(mph),
      label: (s) => `${s.name}: ${s.value === null || s.value === undefined ? "–" : Number(s.value).toFixed(1)} mph`,
      onSelect: (sensor) => this.select(sensor).catch((error) => this.chartFailed(error)),
    });
  }

  // Another department signs in: nothing of the previous one stays on screen.
  reset() {
    this.selected = null;
    clearTimeout(this.forecastTimer);
    this.detail.hidden = true;
    this.hint.hidden = false;
    this.chart.set([], [], "");
    this.forecastNote.textContent = "";
    this.notice.hidden = true;
    this.map.setSensors([]);
    this.map.setAreas([]);
  }

  // -> number of sensors drawn
  async load(baseMap, mayRead) {
    this.notice.hidden = true;
    this.map.setBase(baseMap);
    let entities = [];
    try {
      entities = await getJson(
        query("/ngsi-ld/v1/entities", { type: "TrafficFlowObserved", idPattern: PREFIX, options: "keyValues", limit: 1000 }),
        { ld: true },
      );
    } catch (error) {
      if (!(error instanceof ApiError && error.noAccess)) throw error;
      entities = [];
    }
    const sensors = entities
      .filter((e) => e.location && e.location.coordinates)
      .map((e) => ({ id: e.id, dataset: "los-loop", name: e.name || e.id, point: e.location.coordinates, value: e[ATTRIBUTE] }));
    const same = sensors.length > 0 && sensors.length === this.map.markers.size && sensors.every((s) => this.map.markers.has(s.id));
    if (same) {
      for (const sensor of sensors) this.map.update(sensor.id, sensor.value); // polling: keep the selection
    } else {
      this.map.setSensors(sensors);
    }
    if (!sensors.length) {
      if (!mayRead) this.show("No access: this department has no grant to read los-loop.", "no-access");
      else this.show("No loop detectors are held yet (polis ingest los-loop).", "not-available");
    }
    return sensors.length;
  }

  update(entity) {
    const value = entity[ATTRIBUTE];
    if (value === undefined) return;
    this.map.update(entity.id, value);
    if (this.selected === entity.id) {
      const at = Date.parse(entity.observedAt[ATTRIBUTE]);
      if (Number.isFinite(at)) this.chart.append(at, value, WINDOW_MS);
      this.refreshForecastSoon();
    }
  }

  // New readings make new forecasts (the hub refreshes them after each burst): look again shortly.
  refreshForecastSoon() {
    clearTimeout(this.forecastTimer);
    this.forecastTimer = setTimeout(async () => {
      const id = this.selected;
      if (!id) return;
      const points = await this.forecast(id);
      if (this.selected === id) this.chart.setForecast(points);
    }, FORECAST_REFRESH_MS);
  }

  async select(sensor) {
    this.selected = sensor.id;
    this.hint.hidden = true;
    this.detail.hidden = false;
    this.name.textContent = `${sensor.name} · ${ATTRIBUTE}`;
    const id = encodeURIComponent(sensor.id);
    const history = await getJson(
      query(`/ngsi-ld/v1/temporal/entities/${id}`, { attrs: ATTRIBUTE, lastN: HISTORY_POINTS, options: "temporalValues" }),
      { ld: true },
    );
    if (this.selected !== sensor.id) return;
    const values = (history[ATTRIBUTE] && history[ATTRIBUTE].values) || [];
    const series = values.map(([v, t]) => [Date.parse(t), v]).sort((a, b) => a[0] - b[0]);
    // The hours before the newest reading: a replay observed "now" follows a recording years older.
    const newest = series.length ? series[series.length - 1][0] : 0;
    const recent = series.filter(([t]) => t > newest - WINDOW_MS);
    const forecast = await this.forecast(sensor.id);
    if (this.selected !== sensor.id) return;
    this.chart.set(recent, forecast, "mph");
  }

  // The latest forecasts of every loop detector, in one request that is never a 404 (none yet = []),
  // reused for a few seconds while an operator clicks around.
  async forecasts() {
    const now = Date.now();
    if (!this.cached || now - this.cached.at > FORECAST_CACHE_MS) {
      this.cached = { at: now, paths: getJson(query(FORECASTS, { type: "TrafficFlowObserved" })) };
    }
    try {
      return await this.cached.paths;
    } catch (error) {
      this.cached = null;
      throw error;
    }
  }

  async forecast(entityId) {
    if (!(await findPath(FORECASTS))) {
      this.forecastNote.textContent = "Forecasts are not available on this hub.";
      return [];
    }
    try {
      const path = (await this.forecasts()).find((p) => p.entityId === entityId && p.attribute.endsWith(ATTRIBUTE));
      const points = path ? forecastPoints(path) : [];
      this.forecastNote.textContent = points.length
        ? `Dashed: ${path.model} forecast issued ${path.issuedAt.slice(11, 16)} UTC; shaded: its 80 % interval.`
        : "No forecast has been issued for this sensor yet.";
      return points;
    } catch (error) {
      this.forecastNote.textContent =
        error instanceof ApiError && error.noAccess ? "No access to forecasts for this department." : `Forecast: ${error.message}`;
      return [];
    }
  }

  chartFailed(error) {
    this.detail.hidden = false;
    this.forecastNote.textContent = error instanceof ApiError && error.noAccess ? "No access to this sensor's history." : error.message;
  }
}
