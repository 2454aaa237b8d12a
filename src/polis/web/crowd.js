// Pedestrian counts against what is expected: the expected count of a counter at an hour is the median of
// its counts at the same hour of the week over the previous eight weeks (the crowd-gathering detector's
// seasonal profile, polis.crowd.gathering), read from the temporal API. Weeks are stepped back in
// Melbourne's wall-clock time, so a daylight-saving change does not compare 11 pm with 10 pm. Beside them,
// the hub's forecast for the next hour with its 80 % interval, when the hub forecasts the counters.

import { findPath, getJson, query } from "./api.js";
import { CityMap, ratioColour } from "./map.js";

const WEEK_MS = 7 * 24 * 3600 * 1000;
const HOUR_MS = 3600 * 1000;
const WEEKS = 8;
const MIN_EXPECTED = 100;
const FORECASTS = "/polis/v1/forecasts";
const PREFIX = "^urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:";
const WALL_CLOCK = new Intl.DateTimeFormat("en-GB", {
  timeZone: "Australia/Melbourne",
  hourCycle: "h23",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
});

// Melbourne's offset from UTC at an instant, in ms.
function offset(at) {
  const parts = Object.fromEntries(WALL_CLOCK.formatToParts(new Date(at)).map((p) => [p.type, p.value]));
  const wall = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute);
  return wall - Math.floor(at / 60000) * 60000;
}

// The same Melbourne wall-clock hour, `weeks` weeks earlier.
export function weeksBefore(at, weeks) {
  const naive = at - weeks * WEEK_MS;
  return naive + offset(at) - offset(naive);
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function observedAt(entity) {
  const d = entity.dateObserved;
  const text = d && typeof d === "object" ? d["@value"] : d;
  return text ? Date.parse(text) : NaN;
}

export class CrowdView {
  constructor({ svg, table, hour }) {
    this.table = table;
    this.hour = hour;
    this.expected = new Map();
    this.nextHour = new Map(); // counter id -> the first point of its latest forecast
    this.map = new CityMap(svg, {
      radius: 6,
      colour: (count, sensor) => ratioColour(count / this.expected.get(sensor.id)),
      label: (s) => `${s.name}: ${s.value ?? "–"} people (expected ${this.expected.get(s.id) ?? "–"})`,
    });
  }

  // -> number of counters shown
  async load(baseMap) {
    const entities = await getJson(
      query("/ngsi-ld/v1/entities", { type: "CrowdFlowObserved", idPattern: PREFIX, options: "keyValues", limit: 1000 }),
      { ld: true },
    );
    const sensors = entities.filter((e) => e.location && e.location.coordinates);
    const latest = Math.max(...sensors.map(observedAt).filter(Number.isFinite));
    this.expected.clear();
    if (Number.isFinite(latest)) await Promise.all([this.loadExpected(latest), this.loadForecasts()]);
    this.map.setBase(baseMap);
    this.map.setSensors(
      sensors.map((e) => ({
        id: e.id,
        dataset: "melbourne-pedestrians",
        name: e.name || e.id,
        point: e.location.coordinates,
        value: observedAt(e) === latest ? e.peopleCount : null,
      })),
    );
    this.hour.textContent = Number.isFinite(latest)
      ? `pedestrians in the hour of ${new Date(latest).toISOString().slice(0, 16).replace("T", " ")} UTC against expected`
      : "no counts";
    this.renderTable();
    return sensors.length;
  }

  async loadExpected(latest) {
    const samples = new Map();
    const weeks = Array.from({ length: WEEKS }, (_, i) => weeksBefore(latest, i + 1));
    const answers = await Promise.all(
      weeks.map((start) =>
        getJson(
          query("/ngsi-ld/v1/temporal/entities", {
            type: "CrowdFlowObserved",
            idPattern: PREFIX,
            attrs: "peopleCount",
            timerel: "between",
            timeAt: new Date(start).toISOString(),
            endTimeAt: new Date(start + HOUR_MS).toISOString(),
            options: "temporalValues",
            limit: 1000,
          }),
          { ld: true },
        ),
      ),
    );
    for (const answer of answers) {
      for (const entity of answer) {
        const values = (entity.peopleCount && entity.peopleCount.values) || [];
        for (const [value] of values) {
          if (!samples.has(entity.id)) samples.set(entity.id, []);
          samples.get(entity.id).push(value);
        }
      }
    }
    for (const [id, values] of samples) this.expected.set(id, median(values));
  }

  // The next hour of each counter's latest forecast; none (no forecasts on this hub, or no access to them)
  // leaves a dash in the column rather than failing the view.
  async loadForecasts() {
    this.nextHour.clear();
    if (!(await findPath(FORECASTS))) return;
    let paths;
    try {
      paths = await getJson(query(FORECASTS, { type: "CrowdFlowObserved" }));
    } catch {
      return;
    }
    for (const path of paths) {
      const first = (path.points || [])[0];
      if (first && typeof first.value === "number") this.nextHour.set(path.entityId, first);
    }
  }

  reset() {
    this.expected.clear();
    this.nextHour.clear();
    this.map.setSensors([]);
    this.hour.textContent = "pedestrians against expected";
    this.renderTable();
  }

  update(entity) {
    if (entity.peopleCount === undefined) return;
    this.map.update(entity.id, entity.peopleCount);
    this.renderTable();
  }

  renderTable() {
    const rows = [...this.map.markers.values()]
      .map(({ sensor }) => ({ sensor, expected: this.expected.get(sensor.id) }))
      .filter((r) => r.sensor.value !== null && r.sensor.value !== undefined)
      .map((r) => ({ ...r, ratio: r.expected ? r.sensor.value / r.expected : null }))
      // Busy places first: doubling a handful of night walkers is not a crowd (the detector's min_expected).
      .sort((a, b) => (b.expected >= MIN_EXPECTED) - (a.expected >= MIN_EXPECTED) || (b.ratio ?? -1) - (a.ratio ?? -1));
    const body = this.table.tBodies[0];
    body.replaceChildren(
      ...rows.slice(0, 12).map(({ sensor, expected, ratio }) => {
        const tr = document.createElement("tr");
        tr.dataset.id = sensor.id;
        const bar = document.createElement("span");
        bar.className = "ratio-bar";
        bar.style.width = `${Math.min(60, Math.round((ratio ?? 0) * 20))}px`;
        bar.style.background = ratioColour(ratio);
        bar.title = ratio === null ? "no expected count" : `${Math.round(ratio * 100)}% of expected`;
        const next = this.nextHour.get(sensor.id);
        const cells = [
          sensor.name,
          String(sensor.value),
          expected === undefined || expected === null ? "–" : String(Math.round(expected)),
          next ? `${Math.round(next.value)} (${Math.round(next.lower80 ?? next.value)}–${Math.round(next.upper80 ?? next.value)})` : "–",
        ];
        for (const text of cells) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        }
        tr.cells[3].className = "forecast";
        if (next) tr.cells[3].title = `forecast for ${next.validAt.slice(0, 16).replace("T", " ")} UTC, 80 % interval in brackets`;
        const barCell = document.createElement("td");
        barCell.className = "ratio";
        barCell.append(bar, ratio === null ? "" : ` ×${ratio.toFixed(ratio < 10 ? 1 : 0)}`);
        tr.append(barCell);
        return tr;
      }),
    );
  }
}
