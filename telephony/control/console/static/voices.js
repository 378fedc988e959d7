import { cell, detail, el, headers, json, page, playable, start, tenantPath } from "./api.js";

const $ = (id) => document.getElementById(id);
const form = $("upload");
const error = form.querySelector("[data-error-for=upload]");

async function list() {
  const rows = $("voices").querySelector("tbody");
  rows.replaceChildren();
  const voices = await json(tenantPath("/voices"));
  for (const voice of [...voices.filter((v) => v.kind === "uploaded"), ...voices.filter((v) => v.kind !== "uploaded")]) {
    const listen = voice.sample_url ? el("button", { type: "button", className: "listen" }, "Play")
                                    : el("span", { className: "hint" }, "no recording (see above)");
    if (voice.sample_url) {
      listen.onclick = async () => {
        const audio = el("audio", { controls: true, autoplay: true, src: await playable(voice.sample_url) });
        listen.replaceWith(audio);
      };
    }
    const about = voice.kind === "uploaded"
      ? `uploaded, ${voice.seconds} s, ${voice.sample_rate / 1000} kHz, ${voice.channels === 1 ? "mono" : "stereo"}`
      : "released";
    rows.append(el("tr", { dataset: { voice: voice.name } },
      cell("Voice", el("code", {}, voice.name)), cell("Kind", about), cell("Listen", listen),
      cell("Used by", ...(voice.used_by.length ? voice.used_by.flatMap((line, i) => [
        i ? ", " : "", el("a", { href: page(`/lines/${encodeURIComponent(line)}`) }, line)]) : ["no line"]))));
  }
}

// XMLHttpRequest rather than fetch: it reports the upload's progress.
function upload(name, file) {
  const bar = $("upload-progress");
  bar.hidden = false;
  bar.value = 0;
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("PUT", tenantPath(`/voices/${encodeURIComponent(name)}`));
    for (const [key, value] of Object.entries(headers({ "Content-Type": "audio/wav" }))) request.setRequestHeader(key, value);
    request.upload.onprogress = (event) => { if (event.lengthComputable) bar.value = event.loaded / event.total; };
    request.onload = () => resolve(request);
    request.onerror = () => resolve(request);
    request.send(file);
  });
}

start(async () => {
  await list();
  $("voice-file").onchange = () => {
    const file = $("voice-file").files[0];
    if (file && !$("voice-name").value) {
      $("voice-name").value = file.name.toLowerCase().replace(/\.wave?$/, "").replace(/[^a-z0-9_-]+/g, "-")
        .replace(/^[^a-z0-9]+/, "").slice(0, 60) + ".wav";
    }
  };
  form.onsubmit = async (event) => {
    event.preventDefault();
    error.textContent = $("uploaded").textContent = "";
    const file = $("voice-file").files[0];
    const name = $("voice-name").value.trim();
    if (!file) return void (error.textContent = "Choose a WAV file.");
    if (file.size > 16 * 1024 * 1024) return void (error.textContent = "The file is larger than 16 MiB.");
    if (!/^[a-z0-9][a-z0-9_-]{0,62}\.wav$/.test(name)) {
      return void (error.textContent = "The name must be lowercase letters, digits, - or _, ending in .wav.");
    }
    const request = await upload(name, file);
    if (request.status === 200) {
      $("uploaded").textContent = `Uploaded ${name}: choose it as a line's voice; the first call that uses it makes `
        + "its voice prompt.";
      await list();
    } else {
      error.textContent = request.status === 0 ? "The upload failed: no answer from the server."
        : await detail(new Response(request.responseText, { status: request.status }));
    }
  };
});
