// Talking to the hub: every call carries the department's key; a refusal becomes an ApiError whose
// status tells the view what to show (401 bad key, 403 no access, 404 not available).

const KEY_ITEM = "polis.apiKey";
export const SDM_CONTEXT =
  "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld";
const LINK = `<${SDM_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"`;

export class ApiError extends Error {
  constructor(status, problem, path) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status} on ${path}`);
    this.status = status;
    this.problem = problem;
  }
  get noAccess() {
    return this.status === 401 || this.status === 403;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

// `key`: undefined = the signed-in department's; a string or null (public) = that one.
export function authHeaders(extra = {}, key = undefined) {
  const headers = { ...extra };
  const used = key === undefined ? apiKey() : key;
  if (used) headers.Authorization = `Bearer ${used}`;
  return headers;
}

export async function request(
  path,
  { method = "GET", body, ld = false, accept = "application/json", contentType = "application/json", signal, keepalive, key } = {},
) {
  const headers = authHeaders({ Accept: accept }, key);
  if (ld) headers.Link = LINK;
  if (body !== undefined) headers["Content-Type"] = contentType;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    keepalive,
  });
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      problem = null;
    }
    throw new ApiError(response.status, problem, path);
  }
  return response;
}

export async function getJson(path, options = {}) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

export function query(path, params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) search.set(name, String(value));
  }
  return `${path}?${search}`;
}

// Which API paths this hub serves, from its own OpenAPI description: a view whose endpoint is not there
// shows "not available" instead of asking and logging a 404.
let served = null;
export async function servedPaths() {
  if (served === null) {
    served = fetch("/openapi.json")
      .then((r) => (r.ok ? r.json() : { paths: {} }))
      .then((doc) => new Set(Object.keys(doc.paths || {})));
  }
  return served;
}

// The first of these path templates the hub serves, or null.
export async function findPath(...candidates) {
  const paths = await servedPaths();
  return candidates.find((p) => paths.has(p)) || null;
}
