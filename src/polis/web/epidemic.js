// Epidemic response on region-level mobility: per-region risk (reproduction number with its 95 % interval,
// importation pressure along the inflows), the served forecast for the next 14 days (the blend the
// benchmark scores, learned model included; the hub fits it once per data version in the background and
// answers 202 meanwhile, so the block says "fitting" and asks again after Retry-After), and a what-if form ("cut movement between these regions, or out
// of them, by X % from day D") whose projection, with and without the cut, is drawn with its 80 % band.
// Region-level counts and flows only: nothing here is about a person.

import { getJson, request } from "./api.js";
import { Panel } from "./panel.js";
import { svgElement } from "./map.js";

const BASE = "/polis/v1/epidemic";
const RISK_ROWS = 12;
const FORECAST_POLL_MS = 2000; // when the hub's 202 carries no Retry-After
const PAD = { left: 48, right: 12, top: 14, bottom: 26 };

const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const sum = (rows, pick) => rows.reduce((acc, r) => acc.map((v, i) => v + pick(r)[i]), rows.length ? pick(rows[0]).map(() => 0) : []);

export class EpidemicView extends Panel {
  constructor({ notice, body, country, asOf, riskTable, form, regions, mode, reduction, start, days, result, chart, summary }) {
    super();
    Object.assign(this, { notice, body, country, asOf, riskTable, form, regions, mode, reduction, start, days, result, chart, summary });
    this.risk = null;
    this.forecastFor = null; // the country whose forecast is being asked for: a stale answer is dropped
    this.buildForecast();
    country.addEventListener("change", () => this.loadCountry(country.value).catch((e) => this.fail(e)));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.runScenario().catch((e) => this.formError(e));
    });
  }

  // The forecast block sits under the risk table; built here so the page's HTML stays the layout only.
  buildForecast() {
    const block = document.createElement("div");
    block.id = "epidemic-forecast";
    const title = document.createElement("h3");
    title.append("Forecast, whole country ");
    const note = document.createElement("small");
    note.textContent = "next 14 days: the benchmark's blend of models, 80 % band (per-region bounds summed)";
    title.append(note);
    this.forecastStatus = Object.assign(document.createElement("p"), { className: "hint", id: "epidemic-forecast-status" });
    this.forecastStatus.setAttribute("role", "status");
    this.forecastChart = svgElement("svg", {
      id: "epidemic-forecast-chart",
      class: "chart",
      viewBox: "0 0 600 200",
      role: "img",
      "aria-label": "forecast cases a day, whole country",
    });
    block.append(title, this.forecastStatus, this.forecastChart);
    (this.body.firstElementChild || this.body).append(block);
    this.forecastBlock = block;
  }

  // Signed out or another department: nothing of what the last one was shown stays in the page (the country
  // list sits outside the hidden body).
  reset() {
    this.risk = null;
    this.forecastFor = null;
    this.notice.hidden = true;
    this.body.hidden = true;
    this.result.hidden = true;
    this.asOf.textContent = "";
    for (const element of [this.country, this.regions, this.riskTable.tBodies[0], this.chart, this.forecastChart]) {
      element.replaceChildren();
    }
    this.forecastStatus.textContent = this.summary.textContent = "";
    delete this.forecastBlock.dataset.status;
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
    this.asOf.textContent = "loading…"; // until the new country's regions are in the form (picks made before are replaced)
    this.risk = await getJson(`${BASE}/${encodeURIComponent(country)}/risk`);
    this.asOf.textContent = `week to ${this.risk.asOf}`;
    this.drawRisk();
    this.fillRegions();
    const next = new Date(Date.parse(this.risk.asOf) + 86400000).toISOString().slice(0, 10);
    this.start.min = this.risk.asOf;
    this.start.value = next;
    this.notice.hidden = true;
    this.body.hidden = false;
    this.loadForecast(country).catch((e) => this.forecastError(country, e));
  }

  // Asks until the hub has the forecast (202 while it fits the learned model), then draws it.
  async loadForecast(country) {
    this.forecastFor = country;
    delete this.forecastBlock.dataset.status;
    this.forecastChart.replaceChildren();
    this.forecastStatus.textContent = "asking for the forecast…";
    for (;;) {
      const response = await request(`${BASE}/${encodeURIComponent(country)}/forecast`);
      const body = await response.json();
      if (this.forecastFor !== country) return; // another country was picked meanwhile
      if (response.status !== 202) return this.drawForecast(body);
      this.forecastBlock.dataset.status = "fitting";
      this.forecastStatus.textContent =
        `The hub is fitting the forecast for data to ${body.asOf} (once per data version): ` +
        `${body.stage}, ${Math.round(100 * body.progress)} %.`;
      const wait = Number(response.headers.get("Retry-After")) * 1000 || FORECAST_POLL_MS;
      await new Promise((resolve) => setTimeout(resolve, wait));
      if (this.forecastFor !== country) return;
    }
  }

  forecastError(country, error) {
    if (this.forecastFor !== country) return;
    this.forecastBlock.dataset.status = "error";
    this.forecastStatus.textContent = `Forecast not available: ${error.message}`;
  }

  drawForecast(answer) {
    const total = (pick) => answer.dates.map((_, h) => answer.regions.reduce((acc, r) => acc + r[pick][h], 0));
    const arm = { expected: total("cases"), lower: total("lower"), upper: total("upper") };
    const weights = Object.entries(answer.weights)
      .sort((a, b) => b[1][0] - a[1][0])
      .map(([name, w]) => `${name} ${fmt(w[0])}`)
      .join(", ");
    this.forecastBlock.dataset.status = "ready";
    this.forecastBlock.dataset.nextDay = arm.expected[0].toFixed(1);
    this.forecastStatus.textContent =
      `Data to ${answer.asOf}. ${answer.dates[0]}: ${arm.expected[0].toFixed(0)} cases expected ` +
      `(80 %: ${arm.lower[0].toFixed(0)}–${arm.upper[0].toFixed(0)}); ` +
      `${answer.dates[answer.dates.length - 1]}: ${arm.expected[arm.expected.length - 1].toFixed(0)}. ` +
      `Next-day weights: ${weights}.`;
    drawArms(this.forecastChart, answer.dates, { baseline: arm }, "cases a day; band: per-region 80 % bounds, summed");
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
    drawArms(this.chart, answer.dates, { baseline: base, intervention: cut });
  }
}

// Projections (expected cases and summed per-region 80 % bounds) on one time axis; `arms` by CSS class.
function drawArms(svg, dates, arms, caption = "cases a day; bands: per-region 80 % bounds, summed") {
  svg.replaceChildren();
  const box = svg.viewBox.baseVal;
  const [width, height] = [box.width, box.height];
  const n = dates.length;
  const hi = Math.max(1, ...Object.values(arms).flatMap((a) => a.upper)) * 1.15; // headroom for the key
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
  for (const [name, a] of Object.entries(arms)) {
    const upper = a.upper.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    const lower = a.lower.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).reverse();
    svgElement("polygon", { points: [...upper, ...lower].join(" "), class: `arm-band ${name}` }, svg);
    const line = a.expected.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svgElement("polyline", { points: line, class: `arm-line ${name}` }, svg);
  }
  if (arms.intervention) {
    svgElement("text", { x: PAD.left + 4, y: PAD.top + 8, class: "axis key baseline" }, svg).textContent = "— no intervention";
    svgElement("text", { x: PAD.left + 120, y: PAD.top + 8, class: "axis key intervention" }, svg).textContent = "— with the cut";
  }
  svgElement("text", { x: width - PAD.right, y: PAD.top + 8, "text-anchor": "end", class: "axis" }, svg).textContent = caption;
}
