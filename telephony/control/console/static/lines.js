import { cell, detail, el, json, api, page, showErrors, start, tenantPath } from "./api.js";

start(async () => {
  const tenant = await json(tenantPath());
  document.getElementById("addresses").textContent = tenant.addresses.join(", ") || "none";
  const problems = document.getElementById("tenant-problems");
  problems.hidden = tenant.problems.length === 0;
  problems.textContent = tenant.problems.join("\n");
  const rows = document.querySelector("#lines tbody");
  for (const line of await json(tenantPath("/lines"))) {
    rows.append(el("tr", {},
      cell("Line", el("a", { href: page(`/lines/${encodeURIComponent(line.id)}`) }, line.id)),
      cell("Answers", line.answers.join(", ")), cell("Voice", line.persona.voice), cell("Greeting", line.greeting),
      cell("Recording", line.recording ? "yes" : "no")));
  }
  const form = document.getElementById("new-line");
  form.onsubmit = async (event) => {
    event.preventDefault();
    const line = {
      id: form.id.value.trim(),
      answers: form.answers.value.split("\n").map((a) => a.trim()).filter(Boolean),
      persona: { role: form.role.value, voice: form.voice.value.trim() },
    };
    const response = await api(tenantPath("/lines"), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(line) });
    if (response.ok) {
      location.href = page(`/lines/${encodeURIComponent(line.id)}`);
    } else if (response.status === 422) {
      showErrors(form, (await response.json()).detail);
    } else {
      showErrors(form, [{ loc: ["body"], msg: await detail(response) }]);
    }
  };
});
