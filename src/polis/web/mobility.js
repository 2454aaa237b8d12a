// Privacy-safe bike flows: departures per station or H3 cell (the hub's POLIS_FLOWS_UNIT) over a day and the
// origin-destination matrix between H3 cells, exactly as the hub releases them. A suppressed cell (a count below k,
// or hidden so that it cannot be worked out from the totals) is shown as suppressed, never estimated.

import { getJson, query } from "./api.js";
import { Panel } from "./panel.js";
import { Projection, boundsOf, svgElement } from "./map.js";

const BASE = "/polis/v1/mobility/citibike-jersey-city";

// The points inside the 5th-95th percentile box of both coordinates.
function trimmed(points) {
  const quantile = (values, q) => values.sort((a, b) => a - b)[Math.floor(q * (values.length - 1))];
  const [lo0, hi0] = [quantile(points.map((p) => p[0]), 0.05), quantile(points.map((p) => p[0]), 0.95)];
  const [lo1, hi1] = [quantile(points.map((p) => p[1]), 0.05), quantile(points.map((p) => p[1]), 0.95)];
  const inside = points.filter(([x, y]) => x >= lo0 && x <= hi0 && y >= lo1 && y <= hi1);
  return inside.length ? inside : points;
}

export class MobilityView extends Panel {
  constructor({ svg, hours, matrix, note, dayLabel, daySelect, notice, body }) {
    super();
    Object.assign(this, { svg, hours, matrix, note, dayLabel, daySelect, notice, body });
    this.summary = null;
    daySelect.addEventListener("change", () => this.loadDay(daySelect.value).catch((e) => this.fail(e)));
  }

  // Signed out or another department: nothing of what the last one was shown stays in the page.
  reset() {
    this.summary = null;
    this.notice.hidden = true;
    this.body.hidden = true;
    this.daySelect.hidden = true;
    this.dayLabel.textContent = "";
    for (const element of [this.svg, this.hours, this.matrix, this.daySelect]) element.replaceChildren();
    this.note.textContent = "";
  }

  fail(error) {
    this.failWith("Mobility flows", error);
  }

  async load(served) {
    if (!served) {
      this.show("Mobility flows are not available on this hub.", "not-available");
      return;
    }
    this.summary = await getJson(`${BASE}/summary`);
    if (!this.summary.days) {
      this.show("No bike trips are held yet (polis ingest citibike-jersey-city).", "not-available");
      return;
    }
    // Only days the hub holds (a calendar day without trips is a 404 on /flows), newest first.
    this.daySelect.replaceChildren(
      ...[...this.summary.recentDays].reverse().map((day) => Object.assign(document.createElement("option"), { value: day, textContent: day })),
    );
    this.daySelect.hidden = false;
    await this.loadDay(this.summary.lastDay);
  }

  async loadDay(day) {
    this.notice.hidden = true;
    const [flows, od] = await Promise.all([
      // per the hub's one flow unit (POLIS_FLOWS_UNIT): it releases stations or cells, never both
      getJson(query(`${BASE}/flows`, { day, by: this.summary.flowsUnit, direction: "departures" })),
      getJson(query(`${BASE}/od`, { day, window: "day" })),
    ]);
    this.body.hidden = false;
    this.dayLabel.textContent = `${day} · counts below ${flows.k} suppressed`;
    this.drawStations(flows);
    this.drawMatrix(od);
  }

  // Departures per flow area (a station, or the centre of an H3 cell holding stations), sized by count.
  drawStations(flows) {
    const svg = this.svg;
    svg.replaceChildren();
    const box = svg.viewBox.baseVal;
    const areas = new Map(this.summary.flowAreas.map((a) => [a.id, a]));
    const placed = flows.rows.map((id, i) => ({ area: areas.get(id), total: flows.rowTotals[i] })).filter((r) => r.area);
    // Frame the bulk of the stations: a few trips end across the river, far from the rest.
    const core = trimmed(placed.map((r) => [r.area.lon, r.area.lat]));
    const projection = new Projection(boundsOf(core, 0.1), box.width, box.height);
    const biggest = Math.max(1, ...placed.map((r) => r.total || 0));
    for (const { area, total } of placed) {
      const [x, y] = projection.point([area.lon, area.lat]);
      const suppressed = total === null;
      const r = suppressed ? 3 : 3 + 12 * Math.sqrt(total / biggest);
      const dot = svgElement("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: r.toFixed(1), class: suppressed ? "station suppressed" : "station" }, svg);
      const label = area.name || `cell ${area.id}`;
      svgElement("title", {}, dot).textContent = `${label}: ${suppressed ? "suppressed" : `${total} departures`}`;
    }
    svgElement("text", { x: 8, y: box.height - 8, class: "axis" }, svg).textContent =
      `${flows.total ?? "–"} departures; ${flows.suppressedCells} hourly cells suppressed`;
    this.drawHours(flows);
  }

  // Hourly departures of the areas that have any released hour (the busiest first).
  drawHours(flows) {
    const released = flows.rows
      .map((id, i) => ({ id, label: flows.rowLabels[i] || id, cells: flows.cells[i] }))
      .filter((r) => r.cells.some((v) => v !== null))
      .map((r) => ({ ...r, sum: r.cells.reduce((a, v) => a + (v ?? 0), 0) }))
      .sort((a, b) => b.sum - a.sum)
      .slice(0, 10);
    const biggest = Math.max(1, ...released.flatMap((r) => r.cells.filter((v) => v !== null)));
    const table = document.createElement("table");
    table.className = "od-table hours";
    const head = table.createTHead().insertRow();
    head.insertCell().textContent = "local hour →";
    flows.columns.forEach((_, j) => {
      const th = document.createElement("th");
      th.textContent = j % 3 === 0 ? String(j) : "";
      head.append(th);
    });
    const body = table.createTBody();
    for (const row of released) {
      const tr = body.insertRow();
      const th = document.createElement("th");
      th.textContent = row.label;
      tr.append(th);
      row.cells.forEach((value, j) => {
        const td = tr.insertCell();
        if (value === null) {
          td.className = "suppressed";
          td.title = `${row.label}, hour ${j}: suppressed`;
        } else {
          td.style.background = `rgba(40, 110, 200, ${(0.15 + 0.85 * (value / biggest)).toFixed(2)})`;
          td.title = `${row.label}, hour ${j}: ${value} departures`;
        }
      });
    }
    if (!released.length) {
      const tr = body.insertRow();
      const td = tr.insertCell();
      td.colSpan = flows.columns.length + 1;
      td.className = "empty";
      td.textContent = "Every hour of every area this day is below the threshold: nothing is released.";
    }
    this.hours.replaceChildren(table);
  }

  drawMatrix(od) {
    const biggest = Math.max(1, ...od.cells.flat().filter((v) => v !== null));
    const table = document.createElement("table");
    table.className = "od-table";
    const head = table.createTHead().insertRow();
    head.insertCell().textContent = "from \\ to";
    od.columns.forEach((_, j) => {
      const th = document.createElement("th");
      th.textContent = String(j + 1);
      th.title = od.columns[j];
      head.append(th);
    });
    const body = table.createTBody();
    od.rows.forEach((row, i) => {
      const tr = body.insertRow();
      const th = document.createElement("th");
      th.textContent = String(od.columns.indexOf(row) + 1 || row);
      th.title = row;
      tr.append(th);
      od.cells[i].forEach((value, j) => {
        const td = tr.insertCell();
        if (value === null) {
          td.className = "suppressed";
          td.title = `${row} → ${od.columns[j]}: suppressed`;
        } else {
          td.textContent = String(value);
          td.style.background = `rgba(40, 110, 200, ${(0.15 + 0.85 * (value / biggest)).toFixed(2)})`;
          td.title = `${row} → ${od.columns[j]}: ${value} trips`;
        }
      });
    });
    this.matrix.replaceChildren(table);
    this.note.textContent = `H3 cells, ${od.total ?? "–"} trips, ${od.suppressedCells} cells suppressed (grey)`;
  }
}
