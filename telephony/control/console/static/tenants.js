import { cell, el, json, prefix, start } from "./api.js";

start(async () => {
  const rows = document.querySelector("#tenants tbody");
  for (const t of await json("/tenants")) {
    rows.append(el("tr", {},
      cell("Tenant", el("a", { href: `${prefix}/tenants/${encodeURIComponent(t.id)}/lines` }, t.id)),
      cell("Name", t.name), cell("Addresses", t.addresses.join(", ")), cell("Lines", t.lines.join(", ")),
      cell("Problems", t.problems.join("; ") || "none")));
  }
});
