// Los Angeles loop detectors on the map, coloured by their latest speed; the picked one's history from
// the temporal API with the hub's forecast and its interval, when the hub publishes forecasts.

import { ApiError, findPath, getJson, query } from "./api.js";
import { SensorChart } from "./chart.js";
import { CityMap, speedColour } from "./map.js";

const PREFIX = "^urn:ngsi-ld:TrafficFlowObserved:los-loop:";
const ATTRIBUTE = "averageVehicleSpeed";
const HISTORY_POINTS = 288; // a day of 5-minute readings
const DAY_MS = 24 * 3600 * 1000;

export const FORECAST_PATHS = [
  "/polis/v1/forecasts/{entity_id}",
  "/polis/v1/forecasts/{entity_id}/{attribute}",
  "/polis/v1/forecasts",
];

// The forecast of one entity's attribute as [{t, value, lower, upper}], from whichever shape the hub serves.
export function forecastPoints(body) {
  const path = Array.isArray(body) ? body[0] : body && (body.forecast || body.path || body);
  const points = (path && (path.points || path.steps || path.values)) || [];
  return points
    .map((p) => ({
      t: Date.parse(p.validAt || p.valid_at || p.time || p.at),
      value: p.value,
      lower: p.lower ?? p.value,
      upper: p.upper ?? p.value,
    }))
    .filter((p) => Number.isFinite(p.t) && typeof p.value === "number");
}

export class TrafficView {
  constructor({ svg, notice, chartSvg, hint, detail, name, forecastNote }) {
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
    this.detail.hidden = true;
    this.hint.hidden = false;
    this.chart.set([], [], "");
    this.forecastNote.textContent = "";
    this.notice.hidden = true;
    this.map.setSensors([]);
    this.map.setAreas([]);
  }

  show(text, kind) {
    this.notice.textContent = text;
    this.notice.className = `notice ${kind}`;
    this.notice.hidden = false;
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
      if (Number.isFinite(at)) this.chart.append(at, value);
    }
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
    // The last day before the newest reading: a replay observed "now" follows a recording years older.
    const newest = series.length ? series[series.length - 1][0] : 0;
    const recent = series.filter(([t]) => t > newest - DAY_MS);
    const forecast = await this.forecast(sensor.id);
    if (this.selected !== sensor.id) return;
    this.chart.set(recent, forecast, "mph");
  }

  async forecast(entityId) {
    const template = await findPath(...FORECAST_PATHS);
    if (!template) {
      this.forecastNote.textContent = "Forecasts are not available on this hub.";
      return [];
    }
    const path = template
      .replace("{entity_id}", encodeURIComponent(entityId))
      .replace("{attribute}", ATTRIBUTE);
    const url = template.includes("{entity_id}") ? query(path, { attrs: ATTRIBUTE }) : query(path, { id: entityId, attrs: ATTRIBUTE });
    try {
      const points = forecastPoints(await getJson(url, { ld: true }));
      this.forecastNote.textContent = points.length
        ? "Dashed: forecast; shaded: its 80 % interval."
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
