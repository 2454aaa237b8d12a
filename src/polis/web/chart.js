// One sensor's history as a line, its forecast as a dashed line inside a shaded interval band (SVG).

import { svgElement } from "./map.js";

const PAD = { left: 44, right: 12, top: 12, bottom: 28 };

export class SensorChart {
  constructor(svg) {
    this.svg = svg;
    const box = svg.viewBox.baseVal;
    this.width = box.width;
    this.height = box.height;
    this.history = []; // [[time ms, value]]
    this.forecast = []; // [{t, value, lower, upper}]
    this.unit = "";
  }

  set(history, forecast, unit) {
    this.history = history;
    this.forecast = forecast;
    this.unit = unit;
    this.draw();
  }

  setForecast(forecast) {
    this.forecast = forecast;
    this.draw();
  }

  // A live reading: kept if newer than the last; the chart shows the `window` ms before the newest.
  append(time, value, window) {
    const last = this.history[this.history.length - 1];
    if (last && time <= last[0]) {
      if (time === last[0]) last[1] = value;
      else return;
    } else {
      this.history.push([time, value]);
    }
    this.history = this.history.filter(([t]) => t > time - window);
    this.forecast = this.forecast.filter((f) => f.t > time);
    this.draw();
  }

  draw() {
    const svg = this.svg;
    svg.replaceChildren();
    const points = [...this.history.map(([t, v]) => [t, v, v]), ...this.forecast.map((f) => [f.t, f.lower, f.upper])];
    if (!points.length) {
      svgElement("text", { x: this.width / 2, y: this.height / 2, "text-anchor": "middle", class: "axis" }, svg).textContent =
        "no readings";
      return;
    }
    const t0 = Math.min(...points.map((p) => p[0]));
    const t1 = Math.max(...points.map((p) => p[0]), t0 + 1);
    let lo = Math.min(...points.map((p) => p[1]));
    let hi = Math.max(...points.map((p) => p[2]));
    if (hi - lo < 1) [lo, hi] = [lo - 1, hi + 1];
    const pad = (hi - lo) * 0.08;
    [lo, hi] = [Math.max(0, lo - pad), hi + pad];
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (this.width - PAD.left - PAD.right);
    const y = (v) => this.height - PAD.bottom - ((v - lo) / (hi - lo)) * (this.height - PAD.top - PAD.bottom);

    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4;
      svgElement("line", { x1: PAD.left, x2: this.width - PAD.right, y1: y(v), y2: y(v), class: "gridline" }, svg);
      svgElement("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, svg).textContent = v.toFixed(0);
    }
    for (const t of [t0, (t0 + t1) / 2, t1]) {
      const label = new Date(t).toISOString().slice(5, 16).replace("T", " ");
      svgElement("text", { x: x(t), y: this.height - 8, "text-anchor": "middle", class: "axis" }, svg).textContent = label;
    }
    svgElement("text", { x: PAD.left + 4, y: PAD.top + 10, class: "axis unit" }, svg).textContent = this.unit;

    if (this.forecast.length) {
      const upper = this.forecast.map((f) => `${x(f.t).toFixed(1)},${y(f.upper).toFixed(1)}`);
      const lower = this.forecast.map((f) => `${x(f.t).toFixed(1)},${y(f.lower).toFixed(1)}`).reverse();
      svgElement("polygon", { points: [...upper, ...lower].join(" "), class: "band" }, svg);
      const anchor = this.history.length ? [this.history[this.history.length - 1]] : [];
      const line = [...anchor.map(([t, v]) => [t, v]), ...this.forecast.map((f) => [f.t, f.value])];
      svgElement("polyline", { points: line.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "), class: "forecast" }, svg);
    }
    if (this.history.length) {
      const line = this.history.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      svgElement("polyline", { points: line, class: "history" }, svg);
      const [tl, vl] = this.history[this.history.length - 1];
      svgElement("circle", { cx: x(tl), cy: y(vl), r: 3.5, class: "last", "data-value": vl }, svg);
    }
  }
}
