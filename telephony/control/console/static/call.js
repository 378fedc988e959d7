import { body, el, json, page, playable, start, tenantPath, when } from "./api.js";

const $ = (id) => document.getElementById(id);
const seconds = (s) => `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, "0")}`;

function item(entry) {
  if (entry.kind === "speech") {
    return el("li", { className: entry.speaker }, el("span", { className: "at" }, seconds(entry.start)),
              el("strong", {}, entry.speaker === "agent" ? "Agent: " : "Caller: "), entry.text);
  }
  if (entry.kind === "dtmf") {
    return el("li", { className: "dtmf" }, el("span", { className: "at" }, seconds(entry.at)), `pressed ${entry.digit}`);
  }
  return el("li", { className: "event" }, el("span", { className: "at" }, seconds(entry.at)),
            entry.event.replaceAll("_", " "), entry.detail ? `: ${entry.detail}` : "");
}

start(async () => {
  const record = await json(tenantPath(`/call-records/${encodeURIComponent(body.call)}`));
  const facts = [
    ["Line", el("a", { href: page(`/lines/${encodeURIComponent(record.line)}`) }, record.line)],
    ["From", record.from], ["To", record.to], ["Answered", when(record.answered_at)],
    ["Ended", when(record.ended_at)], ["Length", `${record.duration_seconds.toFixed(1)} s`],
    ["Outcome", el("strong", { id: "outcome" }, record.outcome)], ["Why", record.reason],
    ["Voice", record.persona ? record.persona.voice : "unknown"],
  ];
  $("summary").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
  $("timeline").replaceChildren(...record.transcript.items.map(item));
  if (record.recording) {
    $("recording").hidden = false;
    $("recording-audio").src = await playable(record.recording.url);
  }
});
