import { api, cell, detail, el, json, start, tenantPath, when } from "./api.js";

const $ = (id) => document.getElementById(id);

async function deliveries() {
  const waiting = await json(tenantPath("/webhooks/deliveries"));
  $("deliveries").querySelector("tbody").replaceChildren(...waiting.map((d) => el("tr", { dataset: { event: d.event_id } },
    cell("Event", el("code", {}, d.type), " ", el("code", {}, d.event_id)), cell("Call", el("code", {}, d.call_id)),
    cell("Failed attempts", String(d.attempts)), cell("Last error", d.error || "none yet"),
    cell("Next attempt", d.retry_at ? when(d.retry_at) : "now"))));
  $("no-deliveries").hidden = waiting.length > 0;
  $("deliveries").hidden = waiting.length === 0;
}

async function delivered() {
  const taken = await json(tenantPath("/webhooks/delivered"));
  $("delivered").querySelector("tbody").replaceChildren(...taken.map((d) => el("tr", { dataset: { event: d.event_id } },
    cell("Event", el("code", {}, d.type), " ", el("code", {}, d.event_id)), cell("Call", el("code", {}, d.call_id)),
    cell("Attempts", String(d.attempts)), cell("Status", String(d.status)), cell("Delivered", when(d.delivered_at)))));
  $("no-delivered").hidden = taken.length > 0;
  $("delivered").hidden = taken.length === 0;
}

async function deadLetters() {
  const letters = await json(tenantPath("/webhooks/dead-letters"));
  $("dead-letters").querySelector("tbody").replaceChildren(...letters.map((letter) => {
    const replay = el("button", { type: "button" }, "Replay");
    replay.onclick = async () => {
      replay.disabled = true;
      const response = await api(tenantPath(`/webhooks/dead-letters/${encodeURIComponent(letter.event_id)}/replay`),
                                 { method: "POST" });
      replay.replaceWith(response.ok ? el("span", { className: "ok" }, "replayed: being delivered")
                                     : el("span", { className: "error" }, await detail(response)));
    };
    return el("tr", { dataset: { event: letter.event_id } },
      cell("Event", el("code", {}, letter.type), " ", el("code", {}, letter.event_id)),
      cell("Call", el("code", {}, letter.call_id)), cell("Attempts", String(letter.attempts)),
      cell("Last error", letter.error), cell("Died", when(letter.died_at)), cell("", replay));
  }));
  $("no-dead-letters").hidden = letters.length > 0;
  $("dead-letters").hidden = letters.length === 0;
}

start(async () => {
  const tenant = await json(tenantPath());
  $("webhook-url").textContent = tenant.webhook_url || "no webhook (the operator sets one in tenant.yaml)";
  $("rotate").disabled = !tenant.webhook_url;
  $("rotate").onclick = async () => {
    if (!confirm("Rotate the signing secret? Your receiver must verify with the new one from now on.")) return;
    const response = await api(tenantPath("/webhooks/secret"), { method: "POST" });
    const error = document.querySelector("[data-error-for=rotate]");
    if (!response.ok) return void (error.textContent = await detail(response));
    error.textContent = "";
    $("new-secret").textContent = (await response.json()).secret;
    $("new-secret").hidden = false;
  };
  await Promise.all([deliveries(), delivered(), deadLetters()]);
});
