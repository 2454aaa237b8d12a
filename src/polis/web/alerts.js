// The active alerts, newest first, and the CAP 1.2 message of the one picked (parsed from its XML).

import { ApiError, findPath, getJson, request } from "./api.js";
import { Panel } from "./panel.js";

const CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2";
const ATOM_NS = "http://www.w3.org/2005/Atom";
const SEVERITY_ORDER = { Extreme: 0, Severe: 1, Moderate: 2, Minor: 3, Unknown: 4 };

function el(name, attributes = {}, text = null) {
  const element = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== null) element.textContent = text;
  return element;
}

export class AlertsView extends Panel {
  constructor({ list, count, notice, detail, onAreas }) {
    super();
    this.list = list;
    this.count = count;
    this.notice = notice;
    this.detail = detail;
    this.onAreas = onAreas;
    this.selected = null;
    this.loading = null;
    this.again = false;
  }

  // Reloads coalesce: a burst of Alert notifications costs one request in flight and one after it.
  refresh() {
    if (this.denied) return Promise.resolve(); // grants change with a new sign-in, which resets this
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = this.load().finally(() => {
      this.loading = null;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    });
    return this.loading;
  }

  async load() {
    if (!(await findPath("/polis/v1/alerts"))) {
      this.show("Alerts are not available on this hub.", "not-available");
      return;
    }
    let alerts;
    try {
      alerts = await getJson("/polis/v1/alerts?status=active");
    } catch (error) {
      if (!(error instanceof ApiError && error.noAccess)) throw error;
      // Alert details are for departments with a grant; the CAP feed may be open to more (it is public).
      try {
        alerts = await this.feed();
      } catch (feedError) {
        if (!(feedError instanceof ApiError && feedError.noAccess)) throw feedError;
        this.show(`No access: ${error.message}`, "no-access");
        this.render([], false);
        this.denied = true;
        return;
      }
      this.show("The public CAP feed: this department may not read the alerts' details.", "not-available");
      this.render(alerts);
      return;
    }
    this.notice.hidden = true;
    this.render(alerts);
  }

  // The active alerts from the Atom feed, each entry carrying its CAP message.
  async feed() {
    const xml = await (await request("/polis/v1/alerts/feed", { accept: "application/atom+xml" })).text();
    const doc = new DOMParser().parseFromString(xml, "application/xml");
    return [...doc.getElementsByTagNameNS(ATOM_NS, "entry")].map((entry) => {
      const cap = entry.getElementsByTagNameNS(CAP_NS, "alert")[0];
      const info = cap && cap.getElementsByTagNameNS(CAP_NS, "info")[0];
      const text = (parent, name) => (parent && parent.getElementsByTagNameNS(CAP_NS, name)[0]?.textContent) || null;
      return {
        id: entry.getElementsByTagNameNS(ATOM_NS, "id")[0]?.textContent,
        headline: entry.getElementsByTagNameNS(ATOM_NS, "title")[0]?.textContent,
        severity: text(info, "severity"),
        onset: text(cap, "sent"),
        capXml: cap ? new XMLSerializer().serializeToString(cap) : null,
        area: null,
      };
    });
  }

  reset() {
    this.denied = false;
    this.selected = null;
    this.detail.hidden = true;
    this.detail.replaceChildren();
    this.notice.hidden = true;
    this.list.replaceChildren();
    this.count.textContent = "";
  }

  render(alerts, known = true) {
    alerts.sort((a, b) => (SEVERITY_ORDER[a.severity] ?? 5) - (SEVERITY_ORDER[b.severity] ?? 5) || (b.onset || "").localeCompare(a.onset || ""));
    this.count.textContent = alerts.length ? String(alerts.length) : "";
    if (this.selected && !alerts.some((a) => a.id === this.selected)) {
      this.selected = null; // it ended: its message goes with it
      this.detail.hidden = true;
      this.detail.replaceChildren();
    }
    const items = alerts.map((alert) => {
      const item = el("li", { class: `alert sev-${(alert.severity || "Unknown").toLowerCase()}`, "data-alert": alert.id, tabindex: "0" });
      item.append(el("span", { class: "sev" }, alert.severity || "Unknown"), el("span", { class: "headline" }, alert.headline || alert.event || alert.id));
      item.append(el("span", { class: "when" }, (alert.onset || "").replace("T", " ").slice(0, 16)));
      item.addEventListener("click", () => this.open(alert));
      item.addEventListener("keydown", (event) => {
        if (event.key === "Enter") this.open(alert);
      });
      if (alert.id === this.selected) item.classList.add("selected");
      return item;
    });
    if (!items.length && known) items.push(el("li", { class: "empty" }, "No active alerts."));
    this.list.replaceChildren(...items);
    const areas = alerts
      .filter((a) => a.area && a.area.circle)
      .map((a) => ({ id: a.id, center: a.area.circle.center, radiusM: a.area.circle.radiusM, title: a.headline }));
    this.onAreas(areas);
  }

  async open(alert) {
    this.selected = alert.id;
    for (const item of this.list.children) item.classList.toggle("selected", item.dataset.alert === alert.id);
    this.detail.hidden = false;
    this.detail.replaceChildren(el("p", { class: "hint" }, "Loading the CAP message…"));
    let xml = alert.capXml;
    try {
      if (!xml) xml = await (await request(alert.cap, { accept: "application/cap+xml" })).text();
    } catch (error) {
      this.detail.replaceChildren(el("p", { class: "notice no-access" }, `CAP message: ${error.message}`));
      return;
    }
    this.detail.replaceChildren(...capFields(xml));
  }
}

// The fields an operator reads in a CAP message, in the order the standard lists them.
export function capFields(xml) {
  const doc = new DOMParser().parseFromString(xml, "application/xml");
  const text = (parent, name) => {
    const found = parent.getElementsByTagNameNS(CAP_NS, name)[0];
    return found ? found.textContent : "";
  };
  const alert = doc.documentElement;
  const info = alert.getElementsByTagNameNS(CAP_NS, "info")[0] || alert;
  const area = info.getElementsByTagNameNS(CAP_NS, "area")[0];
  const rows = [
    ["identifier", text(alert, "identifier")],
    ["sender", text(alert, "sender")],
    ["sent", text(alert, "sent")],
    ["status / type", `${text(alert, "status")} / ${text(alert, "msgType")}`],
    ["event", text(info, "event")],
    ["urgency · severity · certainty", `${text(info, "urgency")} · ${text(info, "severity")} · ${text(info, "certainty")}`],
    ["headline", text(info, "headline")],
    ["description", text(info, "description")],
    ["instruction", text(info, "instruction")],
    ["expires", text(info, "expires")],
    ["area", area ? `${text(area, "areaDesc")} ${text(area, "circle")}`.trim() : ""],
  ];
  const list = el("dl", { class: "cap-fields" });
  for (const [name, value] of rows) {
    if (!value || value === " / " || value === " ·  · ") continue;
    list.append(el("dt", {}, name), el("dd", {}, value));
  }
  const title = el("h3", {}, "CAP 1.2 message");
  return [title, list];
}
