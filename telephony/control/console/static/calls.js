import { cell, el, json, page, start, tenantPath, when } from "./api.js";

const $ = (id) => document.getElementById(id);

async function show() {
  const query = new URLSearchParams({ limit: "200" });
  if ($("filter-line").value) query.set("line", $("filter-line").value);
  if ($("filter-outcome").value) query.set("outcome", $("filter-outcome").value);
  if ($("filter-since").value) query.set("since", new Date($("filter-since").value).toISOString());
  if ($("filter-until").value) {
    query.set("until", new Date(new Date($("filter-until").value).getTime() + 86_400_000).toISOString());
  }
  const calls = await json(tenantPath(`/call-records?${query}`));
  $("calls").querySelector("tbody").replaceChildren(...calls.map((c) => el("tr", { dataset: { call: c.call_id } },
    cell("Answered", el("a", { href: page(`/calls/${encodeURIComponent(c.call_id)}`) }, when(c.answered_at))),
    cell("Line", c.line), cell("From", c.from), cell("Seconds", c.duration_seconds.toFixed(1)),
    cell("Outcome", `${c.outcome}: ${c.reason}`), cell("Recording", c.recorded ? "yes" : "no"))));
  $("no-calls").hidden = calls.length > 0;
  $("calls").hidden = calls.length === 0;
}

start(async () => {
  const tenant = await json(tenantPath());
  for (const line of tenant.lines) $("filter-line").append(el("option", {}, line));
  const asked = new URLSearchParams(location.search);
  if (asked.get("line")) $("filter-line").value = asked.get("line");
  $("filters").onsubmit = (event) => { event.preventDefault(); show(); };
  await show();
});
