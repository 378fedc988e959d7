// What every page of the console shares: the signed-in token, calls to the admin API, small DOM helpers.
const KEY = "plexline-console";
export const body = document.body.dataset;
export const prefix = body.prefix;
export const tenant = body.tenant;

export function session() {
  try { return JSON.parse(sessionStorage.getItem(KEY)) || null; } catch { return null; }
}

export function signIn(token, operator) {
  sessionStorage.setItem(KEY, JSON.stringify({ token, operator }));
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  location.href = prefix;
}

export function headers(extra = {}) {
  const current = session();
  return current ? { Authorization: `Bearer ${current.token}`, ...extra } : extra;
}

// fetch() against the admin API with the token. A 401 means signed out (or another tenant's page): say so.
export async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) {
    problem(session() ? "This token does not administer this tenant. Sign in with another token."
                      : "Sign in first.");
    throw new Unauthorized();
  }
  return response;
}

export class Unauthorized extends Error {}

export async function json(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw new Error(`${response.status}: ${await detail(response)}`);
  return response.json();
}

export async function detail(response) {
  try {
    const answer = await response.clone().json();
    return typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail);
  } catch { return response.statusText; }
}

export function tenantPath(rest = "") {
  return `/tenants/${encodeURIComponent(tenant)}${rest}`;
}

export function page(rest = "") {
  return `${prefix}/tenants/${encodeURIComponent(tenant)}${rest}`;
}

export function problem(text) {
  const box = document.getElementById("problem");
  box.textContent = text;
  box.hidden = !text;
}

// el("td", {dataset: {label: "Line"}}, "text", child) -> an element
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function cell(label, ...children) {
  return el("td", { dataset: { label } }, ...children);
}

export function when(iso) {
  return new Date(iso).toLocaleString();
}

// An <audio> needs a URL it can fetch without our header: fetch with it and play the bytes.
export async function playable(path) {
  const response = await api(path);
  if (!response.ok) throw new Error(`${response.status}: ${await detail(response)}`);
  return URL.createObjectURL(await response.blob());
}

// Every page but the sign-in needs a session; the header shows what it may reach.
export function start(run) {
  const current = session();
  document.getElementById("sign-out").hidden = !current;
  document.getElementById("sign-out").onclick = signOut;
  document.getElementById("all-tenants").hidden = !(current && current.operator);
  if (!current) {
    location.href = `${prefix}?next=${encodeURIComponent(location.pathname)}`;
    return;
  }
  window.consoleReady = run().then(() => true, (error) => {
    if (error instanceof Unauthorized) {  // nothing of the page stays but why, and the way out
      document.querySelectorAll("main > :not(#problem)").forEach((node) => { node.hidden = true; });
      document.getElementById("problem").append(" ", el("a", { href: prefix }, "Sign in"));
    } else {
      problem(String(error.message || error));
    }
    return false;
  });
}

// FastAPI's 422 detail ([{loc: ["body", "persona", "role"], msg}]) beside the fields it names: the
// element with data-error-for="persona.role" (or "" for the form as a whole) gets the message and
// the field with data-field="persona.role" is marked invalid.
export function showErrors(form, problems) {
  form.querySelectorAll("[data-error-for]").forEach((node) => { node.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((node) => node.removeAttribute("aria-invalid"));
  for (const p of problems) {
    const path = p.loc.slice(1).filter((part) => typeof part === "string").join(".");
    const place = closest(form, path);
    const message = p.msg.replace(/^Value error, /, "");
    place.textContent = place.textContent ? `${place.textContent}; ${message}` : message;
    const field = form.querySelector(`[data-field="${place.dataset.errorFor}"]`)
                  || form.querySelector(`[name="${place.dataset.errorFor}"]`);
    if (field) field.setAttribute("aria-invalid", "true");
  }
}

function closest(form, path) {
  // persona.sampling.text.top_k, then persona.sampling.text, ..., then the form's own place ("")
  for (let parts = path.split("."); ; parts.pop()) {
    const place = form.querySelector(`[data-error-for="${parts.join(".")}"]`);
    if (place) return place;
    if (parts.length === 0) return form.querySelector('[data-error-for=""]');
  }
}
