// A plain SVG map: neighbourhood outlines as the base layer, sensors as circles coloured by their value.
// Equirectangular projection scaled by cos(latitude): exact enough at city scale, no library needed.

const SVG_NS = "http://www.w3.org/2000/svg";

export function svgElement(name, attributes = {}, parent = null) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (parent) parent.appendChild(element);
  return element;
}

export class Projection {
  // bounds: [minLon, minLat, maxLon, maxLat]; fits them into width x height with a margin
  constructor(bounds, width, height, margin = 12) {
    const [minLon, minLat, maxLon, maxLat] = bounds;
    this.kx = Math.cos((((minLat + maxLat) / 2) * Math.PI) / 180);
    const spanX = Math.max((maxLon - minLon) * this.kx, 1e-6);
    const spanY = Math.max(maxLat - minLat, 1e-6);
    this.scale = Math.min((width - 2 * margin) / spanX, (height - 2 * margin) / spanY);
    this.x0 = (width - spanX * this.scale) / 2 - minLon * this.kx * this.scale;
    this.y0 = (height - spanY * this.scale) / 2 + maxLat * this.scale;
  }
  point([lon, lat]) {
    return [this.x0 + lon * this.kx * this.scale, this.y0 - lat * this.scale];
  }
  metres(m) {
    return (m / 111_320) * this.scale; // metres to pixels (a degree of latitude is ~111.32 km)
  }
}

export function boundsOf(points, pad = 0.12) {
  if (!points.length) return null;
  let [minLon, minLat, maxLon, maxLat] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [lon, lat] of points) {
    minLon = Math.min(minLon, lon);
    maxLon = Math.max(maxLon, lon);
    minLat = Math.min(minLat, lat);
    maxLat = Math.max(maxLat, lat);
  }
  const dx = Math.max(maxLon - minLon, 0.01) * pad;
  const dy = Math.max(maxLat - minLat, 0.01) * pad;
  return [minLon - dx, minLat - dy, maxLon + dx, maxLat + dy];
}

function featurePoints(geojson) {
  const out = [];
  for (const feature of geojson.features) {
    const polygons = feature.geometry.type === "Polygon" ? [feature.geometry.coordinates] : feature.geometry.coordinates;
    for (const polygon of polygons) for (const ring of polygon) for (const p of ring) out.push(p);
  }
  return out;
}

export class CityMap {
  constructor(svg, { colour, label, onSelect, radius = 5 }) {
    this.svg = svg;
    this.colour = colour;
    this.label = label;
    this.onSelect = onSelect;
    this.radius = radius;
    this.markers = new Map();
    const box = svg.viewBox.baseVal;
    this.width = box.width;
    this.height = box.height;
    this.base = svgElement("g", { class: "base" }, svg);
    this.overlay = svgElement("g", { class: "overlay" }, svg);
    this.layer = svgElement("g", { class: "sensors" }, svg);
    this.geojson = null;
    this.projection = null;
    this.bounds = null;
    this.areas = [];
  }

  // Frame the sensors when there are some (the base map is larger than the network), else the base map.
  frame(points) {
    const bounds = boundsOf(points) || (this.geojson && boundsOf(featurePoints(this.geojson), 0.02));
    if (!bounds) return;
    this.bounds = bounds;
    this.projection = new Projection(bounds, this.width, this.height);
    this.drawBase();
  }

  setBase(geojson) {
    this.geojson = geojson;
    if (this.projection) this.drawBase();
  }

  drawBase() {
    this.base.replaceChildren();
    if (!this.geojson || !this.projection) return;
    const p = this.projection;
    for (const feature of this.geojson.features) {
      const polygons = feature.geometry.type === "Polygon" ? [feature.geometry.coordinates] : feature.geometry.coordinates;
      let d = "";
      for (const polygon of polygons) {
        for (const ring of polygon) {
          d += ring.map((c, i) => `${i ? "L" : "M"}${p.point(c).map((v) => v.toFixed(1)).join(",")}`).join("") + "Z";
        }
      }
      const path = svgElement("path", { d, class: "hood" }, this.base);
      svgElement("title", {}, path).textContent = feature.properties.name;
    }
  }

  // sensors: [{id, point: [lon, lat], value, name, dataset}]
  setSensors(sensors) {
    this.layer.replaceChildren();
    this.markers.clear();
    this.frame(sensors.map((s) => s.point));
    for (const sensor of sensors) {
      const [x, y] = this.projection.point(sensor.point);
      const circle = svgElement(
        "circle",
        { cx: x.toFixed(1), cy: y.toFixed(1), r: this.radius, class: "sensor", "data-id": sensor.id, "data-dataset": sensor.dataset, tabindex: 0 },
        this.layer,
      );
      svgElement("title", {}, circle);
      circle.addEventListener("click", () => this.select(sensor.id));
      circle.addEventListener("keydown", (event) => {
        if (event.key === "Enter") this.select(sensor.id);
      });
      this.markers.set(sensor.id, { circle, sensor });
      this.update(sensor.id, sensor.value);
    }
    this.setAreas(this.areas);
  }

  update(id, value, extra = {}) {
    const marker = this.markers.get(id);
    if (!marker) return false;
    Object.assign(marker.sensor, extra, { value });
    const { circle, sensor } = marker;
    circle.setAttribute("fill", this.colour(value, sensor));
    circle.setAttribute("data-value", value === null || value === undefined ? "" : String(value));
    circle.firstChild.textContent = this.label(sensor);
    // a brief ring shows which sensors just reported (Web Animations: no forced layout per marker)
    circle.animate([{ stroke: "#ffffff", strokeWidth: 3 }, { stroke: "#0c1116", strokeWidth: 1 }], { duration: 800 });
    return true;
  }

  select(id) {
    for (const { circle } of this.markers.values()) circle.classList.toggle("selected", circle.dataset.id === id);
    const marker = this.markers.get(id);
    if (marker) this.layer.appendChild(marker.circle); // drawn last: on top of its neighbours
    if (marker && this.onSelect) this.onSelect(marker.sensor);
  }

  // circles: [{center: [lon, lat], radiusM, id, title}]; those whose centre is on this map are drawn
  setAreas(areas) {
    this.areas = areas; // drawn again once the sensors have framed the map
    this.overlay.replaceChildren();
    if (!this.projection) return;
    const [minLon, minLat, maxLon, maxLat] = this.bounds;
    const here = areas.filter(({ center: [lon, lat] }) => lon >= minLon && lon <= maxLon && lat >= minLat && lat <= maxLat);
    for (const area of here) {
      const [x, y] = this.projection.point(area.center);
      const ring = svgElement(
        "circle",
        { cx: x.toFixed(1), cy: y.toFixed(1), r: Math.max(this.projection.metres(area.radiusM), 8), class: "alert-area", "data-alert": area.id },
        this.overlay,
      );
      svgElement("title", {}, ring).textContent = area.title;
    }
  }
}

// Speeds: red when crawling, green at free flow (mph).
export function speedColour(mph) {
  if (mph === null || mph === undefined || Number.isNaN(mph)) return "#888";
  const t = Math.max(0, Math.min(1, (mph - 15) / 50));
  return `hsl(${Math.round(t * 125)}, 80%, 45%)`;
}

// Ratio of observed to expected: blue when quiet, grey as expected, magenta when busier than usual.
export function ratioColour(ratio) {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return "#999";
  const t = Math.max(-1, Math.min(1, Math.log2(ratio)));
  if (t >= 0) return `hsl(320, ${Math.round(20 + 70 * t)}%, ${Math.round(55 - 10 * t)}%)`;
  return `hsl(210, ${Math.round(20 - 70 * t)}%, ${Math.round(55 + 5 * t)}%)`;
}
