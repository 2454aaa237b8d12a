// Epidemic response on region-level mobility: per-region risk (reproduction number with its 95 % interval,
// importation pressure along the inflows) and a what-if form ("cut movement between these regions, or out
// of them, by X % from day D") whose projection, with and without the cut, is drawn with its 80 % band.
// Region-level counts and flows only: nothing here is about a person.

import { getJson, request } from "./api.js";
import { Panel } from "./panel.js";
import { svgElement } from "./map.js";

const BASE = "/polis/v1/epidemic";
const RISK_ROWS = 12;
const PAD = { left: 48, right: 12, top: 14, bottom: 26 };

const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const sum = (rows, pick) => rows.reduce((acc, r) => acc.map((v, i) => v + pick(r)[i]), rows.length ? pick(rows[0]).map(() => 0) : []);

export class EpidemicView extends Panel {
  constructor({ notice, body, country, asOf, riskTable, form, regions, mode, reduction, start, days, result, chart, summary }) {
    super();
    Object.assign(this, { notice, body, country, asOf, riskTable, form, regions, mode, reduction, start, days, result, chart, summary });
    this.risk = null;
    country.addEventListener("change", () => this.loadCountry(country.value).catch((e) => this.fail(e)));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.runScenario().catch((e) => this.formError(e));
    });
  }

  reset() {
    this.risk = null;
    this.notice.hidden = true;
    this.body.hidden = true;
    this.result.hidden = true;
    this.asOf.textContent = "";
  }

  fail(error) {
    this.failWith("Epidemic views", error);
  }

  // `served`: the hub has the epidemic routes; `mayRead`: the department holds a grant for them (asked
  // before any request, so a department without one sees why instead of a refused request).
  async load(served, mayRead) {
    if (!served) return this.show("Epidemic views are not available on this hub.", "not-available");
    if (!mayRead) return this.show("No access: this department has no grant to read epidemic.", "no-access");
    let held;
    try {
      held = await getJson(BASE);
    } catch (error) {
      return this.fail(error);
    }
    if (!held.countries.length) {
      return this.show(`No epidemic data is held yet (polis ingest ${held.dataset}).`, "not-available");
    }
    const previous = this.country.value;
    this.country.replaceChildren(
      ...held.countries.map((c) => Object.assign(document.createElement("option"), { value: c, textContent: c })),
    );
    this.country.value = held.countries.includes(previous) ? previous : held.countries[0];
    await this.loadCountry(this.country.value).catch((e) => this.fail(e));
  }

  async loadCountry(country) {
    this.result.hidden = true;
    this.risk = await getJson(`${BASE}/${encodeURIComponent(country)}/risk`);
    this.asOf.textContent = `week to ${this.risk.asOf}`;
    this.drawRisk();
    this.fillRegions();
    const next = new Date(Date.parse(this.risk.asOf) + 86400000).toISOString().slice(0, 10);
    this.start.min = this.risk.asOf;
    this.start.value = next;
    this.notice.hidden = true;
    this.body.hidden = false;
  }

  // Regions with an R estimate first, highest first; the rest (too few cases to say) after, by pressure.
  ranked() {
    const known = this.risk.regions.filter((r) => r.reproductionNumber);
    const unknown = this.risk.regions.filter((r) => !r.reproductionNumber);
    known.sort((a, b) => b.reproductionNumber.mean - a.reproductionNumber.mean);
    unknown.sort((a, b) => b.importationPressure - a.importationPressure);
    return [...known, ...unknown];
  }

  drawRisk() {
    const body = this.riskTable.tBodies[0];
    body.replaceChildren();
    for (const r of this.ranked().slice(0, RISK_ROWS)) {
      const row = body.insertRow();
      row.dataset.region = r.region;
      const R = r.reproductionNumber;
      const cells = [
        r.region,
        R ? fmt(R.mean) : "too few cases",
        R ? `${fmt(R.lower95)}–${fmt(R.upper95)}` : "–",
        fmt(r.casesLast7Days, 0),
        fmt(r.importationPressure),
        `${fmt(100 * r.importedShare, 1)} %`,
      ];
      for (const text of cells) row.insertCell().textContent = text;
      if (R && R.lower95 > 1) row.classList.add("growing"); // growth is likely, not just possible
      row.addEventListener("click", () => {
        for (const option of this.regions.options) if (option.value === r.region) option.selected = !option.selected;
      });
    }
  }

  fillRegions() {
    const names = this.ranked().map((r) => r.region);
    this.regions.replaceChildren(
      ...names.map((n) => Object.assign(document.createElement("option"), { value: n, textContent: n })),
    );
  }

  formError(error) {
    this.summary.textContent = error.message;
    this.summary.className = "error";
    this.result.hidden = false;
    this.chart.replaceChildren();
  }

  async runScenario() {
    const chosen = [...this.regions.selectedOptions].map((o) => o.value);
    const mode = this.mode.value;
    // Checked here too so that an incomplete form is explained before any request is made.
    if (!chosen.length || (mode === "between" && chosen.length < 2)) {
      throw new Error(mode === "between" ? "Pick at least two regions to cut movement between." : "Pick at least one region.");
    }
    const body = {
      regions: chosen,
      mode,
      reductionPercent: Number(this.reduction.value),
      start: this.start.value,
      days: Number(this.days.value),
    };
    this.summary.textContent = "projecting…";
    this.summary.className = "hint";
    this.result.hidden = false;
    const country = encodeURIComponent(this.country.value);
    const answer = await (await request(`${BASE}/${country}/scenario`, { method: "POST", body })).json();
    this.drawScenario(answer);
  }

  drawScenario(answer) {
    const rows = answer.regions.filter((r) => answer.intervention.regions.includes(r.region));
    const arm = (name) => ({
      expected: sum(rows, (r) => r[name].expected),
      lower: sum(rows, (r) => r[name].lower),
      upper: sum(rows, (r) => r[name].upper),
    });
    const base = arm("baseline");
    const cut = arm("intervention");
    const total = (a) => a.expected.reduce((x, y) => x + y, 0);
    const [without, withCut] = [total(base), total(cut)];
    const change = without > 0 ? (100 * (withCut - without)) / without : 0;
    this.result.dataset.baseline = without.toFixed(1);
    this.result.dataset.intervention = withCut.toFixed(1);
    this.summary.className = "scenario-summary";
    this.summary.textContent =
      `${rows.length} region(s), ${answer.dates.length} days from ${answer.dates[0]}: ` +
      `${without.toFixed(0)} cases expected without, ${withCut.toFixed(0)} with (${change >= 0 ? "+" : ""}${change.toFixed(1)} %). ` +
      `Whole country: ${answer.totals.baseline.toFixed(0)} → ${answer.totals.intervention.toFixed(0)}.`;
    drawArms(this.chart, answer.dates, base, cut);
  }
}

// Two projections (expected cases and summed per-region 80 % bounds) on one time axis.
function drawArms(svg, dates, base, cut) {
  svg.replaceChildren();
  const box = svg.viewBox.baseVal;
  const [width, height] = [box.width, box.height];
  const n = dates.length;
  const hi = Math.max(1, ...base.upper, ...cut.upper) * 1.15; // headroom for the key
  const x = (i) => PAD.left + (n > 1 ? i / (n - 1) : 0) * (width - PAD.left - PAD.right);
  const y = (v) => height - PAD.bottom - (v / hi) * (height - PAD.top - PAD.bottom);
  for (let k = 0; k <= 4; k++) {
    const v = (hi * k) / 4;
    svgElement("line", { x1: PAD.left, x2: width - PAD.right, y1: y(v), y2: y(v), class: "gridline" }, svg);
    svgElement("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, svg).textContent = v.toFixed(0);
  }
  for (const [i, anchor] of [[0, "start"], [Math.floor((n - 1) / 2), "middle"], [n - 1, "end"]]) {
    svgElement("text", { x: x(i), y: height - 8, "text-anchor": anchor, class: "axis" }, svg).textContent = dates[i].slice(5);
  }
  for (const [name, a] of [["baseline", base], ["intervention", cut]]) {
    const upper = a.upper.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    const lower = a.lower.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).reverse();
    svgElement("polygon", { points: [...upper, ...lower].join(" "), class: `arm-band ${name}` }, svg);
    const line = a.expected.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svgElement("polyline", { points: line, class: `arm-line ${name}` }, svg);
  }
  svgElement("text", { x: PAD.left + 4, y: PAD.top + 8, class: "axis key baseline" }, svg).textContent = "— no intervention";
  svgElement("text", { x: PAD.left + 120, y: PAD.top + 8, class: "axis key intervention" }, svg).textContent = "— with the cut";
  svgElement("text", { x: width - PAD.right, y: PAD.top + 8, "text-anchor": "end", class: "axis" }, svg).textContent =
    "cases a day; bands: per-region 80 % bounds, summed";
}
