// Live updates from the hub's own subscription stream: one NGSI-LD subscription per page whose endpoint is
// `urn:polis:sse`, read with fetch (EventSource cannot send the department's key). The subscription
// expires by itself if the page dies without saying goodbye, and is renewed while the page lives.

import { ApiError, SDM_CONTEXT, apiKey, request } from "./api.js";

export const ALERT_TYPE = "https://smartdatamodels.org/dataModel.Alert/Alert";
const LIFETIME_MS = 15 * 60 * 1000;
const RENEW_MS = 5 * 60 * 1000;
const RETRY_MS = 1000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const expiry = () => new Date(Date.now() + LIFETIME_MS).toISOString();

// {id, type, name: value, ..., observedAt: {name: time}} from a normalized entity
export function flatten(entity) {
  const out = { id: entity.id, type: entity.type, observedAt: {} };
  for (const [name, attribute] of Object.entries(entity)) {
    if (name === "id" || name === "type" || name === "@context") continue;
    const first = Array.isArray(attribute) ? attribute[0] : attribute;
    if (first && typeof first === "object" && "value" in first) {
      out[name] = first.value;
      if (first.observedAt) out.observedAt[name] = first.observedAt;
    }
  }
  return out;
}

export class LiveFeed {
  // onData(entities): the entities of each notification (flattened); onState("live"|"reconnecting"|"off", why)
  constructor({ onData, onState }) {
    this.onData = onData;
    this.onState = onState;
    this.location = null;
    this.stopped = false;
    this.abort = new AbortController();
    this.renewTimer = null;
    this.key = apiKey(); // the subscription is this department's: renew and remove it with the same key
  }

  call(path, options = {}) {
    return request(path, { ...options, key: this.key });
  }

  async start() {
    try {
      this.location = await this.subscribe();
    } catch (error) {
      if (error instanceof ApiError) {
        this.onState("off", error.noAccess ? "no subscribe grant: refreshing every 10 s" : error.message);
        return false;
      }
      throw error;
    }
    this.renewTimer = setInterval(() => this.renew(), RENEW_MS);
    this.listen();
    return true;
  }

  async subscribe() {
    const body = {
      type: "Subscription",
      description: "dashboard live view",
      entities: [{ type: "TrafficFlowObserved" }, { type: "CrowdFlowObserved" }, { type: ALERT_TYPE }],
      // normalized, for each reading's observedAt; only the readings (an Alert only says "look again")
      notification: {
        format: "normalized",
        attributes: ["averageVehicleSpeed", "peopleCount"],
        endpoint: { uri: "urn:polis:sse", accept: "application/json" },
      },
      expiresAt: expiry(),
      "@context": SDM_CONTEXT,
    };
    const response = await this.call("/ngsi-ld/v1/subscriptions", { method: "POST", body, contentType: "application/ld+json" });
    return response.headers.get("Location");
  }

  async renew() {
    try {
      await this.call(this.location, { method: "PATCH", body: { expiresAt: expiry() } });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) this.location = await this.subscribe();
    }
  }

  async listen() {
    while (!this.stopped) {
      try {
        const response = await this.call(`${this.location}/stream`, { accept: "text/event-stream", signal: this.abort.signal });
        this.onState("live");
        await this.read(response.body);
      } catch (error) {
        if (this.stopped) return;
        if (error instanceof ApiError && error.status === 404) {
          try {
            this.location = await this.subscribe(); // expired or removed while we were away
          } catch {
            // the next round reports it
          }
        }
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await sleep(RETRY_MS);
    }
  }

  async read(stream) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        this.event(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  event(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (name !== "notification" || !data.length) return;
    const notification = JSON.parse(data.join("\n"));
    this.onData((notification.data || []).map(flatten));
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
    clearInterval(this.renewTimer);
    if (this.location) {
      // keepalive: the request outlives the page that is closing
      this.call(this.location, { method: "DELETE", keepalive: true }).catch(() => {});
    }
  }
}
