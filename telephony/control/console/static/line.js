import { api, body, detail, el, json, page, problem, showErrors, start, tenantPath } from "./api.js";
import { TestCall } from "./testcall.js";

const $ = (id) => document.getElementById(id);
const linePath = tenantPath(`/lines/${encodeURIComponent(body.line)}`);
const form = $("line-form");
// What the page holds, for people and for tests that drive it.
const editor = window.lineEditor = { line: null, etag: null, saves: 0, conflict: null };

const number = (input) => (input.value.trim() === "" ? null : Number(input.value));

function fill(line, etag) {
  editor.line = line;
  editor.etag = etag;
  const p = line.persona;
  const s = p.sampling;
  $("role").value = p.role;
  ensureVoice(p.voice);
  $("voice").value = p.voice;
  $("text-temperature").value = s.text.temperature;
  $("text-top-k").value = s.text.top_k;
  $("audio-temperature").value = s.audio.temperature;
  $("audio-top-k").value = s.audio.top_k;
  $("seed").value = s.seed ?? "";
  $("answers").value = line.answers.join("\n");
  $("greeting").value = line.greeting;
  $("recording").checked = line.recording;
  $("max-call-seconds").value = line.max_call_seconds ?? "";
  $("version").textContent = `Version ${(etag || "").replaceAll('"', "")}`;
  count();
  showErrors(form, []);
}

function ensureVoice(name) {
  if (![...$("voice").options].some((o) => o.value === name)) $("voice").append(el("option", { value: name }, name));
}

// The line as the form has it: what was loaded, with the fields of the form replaced (fields the form
// does not show, such as a transfer, go back as they were).
function edited() {
  const { id, tenant, ...line } = editor.line;
  return {
    ...line,
    answers: $("answers").value.split("\n").map((a) => a.trim()).filter(Boolean),
    greeting: $("greeting").value,
    recording: $("recording").checked,
    max_call_seconds: number($("max-call-seconds")),
    persona: {
      ...line.persona,
      role: $("role").value,
      voice: $("voice").value,
      sampling: {
        text: { temperature: number($("text-temperature")), top_k: number($("text-top-k")) },
        audio: { temperature: number($("audio-temperature")), top_k: number($("audio-top-k")) },
        seed: number($("seed")),
      },
    },
  };
}

function count() {
  const limit = Number($("role").dataset.limit);
  const length = $("role").value.trim().length;
  const words = $("role").value.trim().split(/\s+/).filter(Boolean).length;
  $("role-count").textContent = `${length} / ${limit} characters (about ${Math.round(words * 1.3)} tokens)`;
  $("role-count").classList.toggle("over", length > limit);
}

async function save(line, etag) {
  $("saved").textContent = "";
  const response = await api(linePath, {
    method: "PUT", headers: { "Content-Type": "application/json", "If-Match": etag }, body: JSON.stringify(line) });
  if (response.ok) {
    editor.saves += 1;
    $("conflict").hidden = true;
    fill(await response.json(), response.headers.get("ETag"));
    $("saved").textContent = "Saved: the next call uses it.";
  } else if (response.status === 422) {
    showErrors(form, (await response.json()).detail);
  } else if (response.status === 412) {
    const answer = await response.json();
    conflict(line, answer.current, response.headers.get("ETag"));
  } else {
    showErrors(form, [{ loc: ["body"], msg: `${response.status}: ${await detail(response)}` }]);
  }
}

function conflict(mine, theirs, etag) {
  editor.conflict = { mine, theirs, etag };
  const { id, tenant, ...saved } = theirs || {};
  const differs = new Set(changed(mine, saved));
  $("conflict-mine").replaceChildren(...lines(mine, differs));
  $("conflict-theirs").replaceChildren(...(theirs ? lines(saved, differs)
                                                  : ["The file as it is now does not load: see the tenant's problems."]));
  $("conflict").hidden = false;
  $("conflict").scrollIntoView();
}

// The paths (persona.voice) whose values differ.
function changed(a, b, path = "") {
  if (a && b && typeof a === "object" && typeof b === "object" && !Array.isArray(a)) {
    return [...new Set([...Object.keys(a), ...Object.keys(b)])]
      .flatMap((key) => changed(a[key], b[key], path ? `${path}.${key}` : key));
  }
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null) ? [] : [path];
}

// A document as indented lines, the ones that differ marked.
function lines(document, differs, path = "", depth = 0) {
  const out = [];
  for (const [key, value] of Object.entries(document)) {
    const here = path ? `${path}.${key}` : key;
    const pad = "  ".repeat(depth);
    if (value && typeof value === "object" && !Array.isArray(value)) {
      out.push(`${pad}${key}:\n`, ...lines(value, differs, here, depth + 1));
    } else {
      const text = `${pad}${key}: ${JSON.stringify(value)}\n`;
      out.push(differs.has(here) ? el("mark", {}, text) : text);
    }
  }
  return out;
}

function startTestCall() {
  const words = $("agent-words");
  const callerWords = $("caller-words");
  const call = window.testCall = new TestCall(`${linePath}/whip`, (message) => {
    if (message.type === "call") {
      call.maxSeconds = message.max_call_seconds;
      $("call-link").replaceChildren("Call ", el("code", {}, message.call_id),
        ` (longest ${message.max_call_seconds} s)`);
    } else if (message.type === "text") {
      words.textContent += message.text;
    } else if (message.type === "caller") {  // the recogniser's words, as each one is complete
      callerWords.textContent = `${callerWords.textContent} ${message.text}`.trimStart();
    }
  }, (state) => {
    $("call-state").textContent = state;
    $("call").disabled = call.live;
    $("hang-up").disabled = !call.live;
    if (state === "connected") call.startedAt = Date.now();
    if (state.startsWith("ended")) showRecord(call.callId);
  });
  $("call").onclick = () => {
    words.textContent = callerWords.textContent = "";
    call.start($("agent-audio"));
  };
  $("hang-up").onclick = () => call.hangUp();
  setInterval(() => {
    if (call.state !== "connected" || !call.startedAt) return void ($("call-clock").textContent = "");
    const seconds = Math.floor((Date.now() - call.startedAt) / 1000);
    $("call-clock").textContent = `${seconds} s / ${call.maxSeconds} s`;
  }, 500);
}

// Once a call has ended, its record (both speakers' turns, if the worker recognises the caller).
async function showRecord(callId) {
  if (!callId) return;
  for (let i = 0; i < 20; i++) {
    const response = await api(tenantPath(`/call-records/${encodeURIComponent(callId)}`));
    if (response.ok) {
      const record = await response.json();
      const caller = record.transcript.items.filter((i) => i.kind === "speech" && i.speaker === "caller");
      $("caller-words").textContent = caller.length ? caller.map((t) => t.text).join("\n")  // the turns, final
                                                    : "No words of the caller's were recognised in this call.";
      $("call-link").replaceChildren(el("a", { href: page(`/calls/${encodeURIComponent(callId)}`) },
                                        "The call's record: timeline, recording, outcome"));
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

start(async () => {
  const [response, tenant, voices] = await Promise.all([api(linePath), json(tenantPath()), json(tenantPath("/voices"))]);
  if (!response.ok) throw new Error(`${response.status}: ${await detail(response)}`);
  for (const voice of voices) if (voice.kind === "uploaded") ensureVoice(voice.name);
  $("tenant-limit").textContent = `${tenant.limits.max_call_seconds} s`;
  fill(await response.json(), response.headers.get("ETag"));
  $("role").oninput = count;
  form.onsubmit = (event) => {
    event.preventDefault();
    save(edited(), editor.etag);
  };
  $("keep-mine").onclick = () => save(editor.conflict.mine, editor.conflict.etag);
  $("take-theirs").onclick = () => {
    if (!editor.conflict.theirs) return problem("The saved file does not load: fix it first.");
    $("conflict").hidden = true;
    fill(editor.conflict.theirs, editor.conflict.etag);
  };
  startTestCall();
});
