"""A real browser calls a line: headless Chromium opens the dialer page of a `plexline serve` on the tiny
dummy model, calls, talks (its fake microphone plays espeak-ng speech), hears the agent, reads the
live transcript, and hangs up."""

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.interop.chromium import chromium
from bench.serving import OPERATOR, serving

SPEECH = "Hello, I would like to check the status of my order. The order number is four two seven one."
TALK_SECONDS = 6


def speech_wav(folder: Path) -> Path:
    """espeak-ng speech as the fake microphone wants it: 16-bit mono WAV at 48 kHz."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: scripts/test.sh installs it")
    raw, wav = folder / "espeak.wav", folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), SPEECH], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(wav)], check=True, capture_output=True)
    return wav


INBOUND_AUDIO = """(async () => {
  const stats = {};
  (await dialer.pc.getStats()).forEach((s) => {
    if (s.kind === "audio" && (s.type === "inbound-rtp" || s.type === "outbound-rtp")) stats[s.type] = s;
  });
  return stats;
})()"""


def test_a_browser_calls_a_line_hears_the_agent_reads_its_words_and_hangs_up(tmp_path):
    async def call(server):
        async with chromium(tmp_path / "profile", speech_wav(tmp_path), tmp_path / "chromium.log") as page:
            await page.send("Page.enable")
            await page.send("Page.navigate", url=server.url + "/dialer")
            await page.wait_for("document.readyState === 'complete' && typeof dialer === 'object'", 15)
            await page.evaluate(f"document.getElementById('token').value = {OPERATOR!r}")
            await page.evaluate("loadLines()")
            lines = await page.evaluate("[...document.getElementById('line').options].map((o) => o.value)")
            await page.evaluate("document.getElementById('line').value = 'acme/support'")
            await page.evaluate("document.getElementById('call').click()")
            connected = await page.wait_for("dialer.state === 'connected'", 20)
            in_call = server.sessions()
            await asyncio.sleep(TALK_SECONDS)
            stats = await page.evaluate(INBOUND_AUDIO)
            during = server.sessions()
            texts = await page.evaluate("dialer.messages.filter((m) => m.type === 'text').length")
            await page.evaluate("hangUp()")
            ended = await page.wait_for("dialer.state.startsWith('ended') && dialer.state", 10)
            transcript = await page.evaluate("dialer.transcript")
            shown = await page.evaluate("document.getElementById('transcript').textContent")
            last = await page.evaluate("dialer.messages[dialer.messages.length - 1]")
            return lines, connected, in_call, stats, during, transcript, texts, ended, shown, last

    with serving("dummy", 2, tmp_path) as server:
        lines, connected, in_call, stats, during, transcript, texts, ended, shown, last = asyncio.run(call(server))
        free_after = server.free_slots()
        record = server.call("acme", in_call[0]["call_id"]) if in_call else {}

    assert "acme/support" in lines and connected, "the call did not connect"
    assert len(in_call) == 1 and free_after == 2  # the slot was taken, and freed by the hang-up
    assert (record["state"], record["reason"]) == ("ended", "the caller hung up")
    assert last["type"] == "ended" and last["reason"] == "the caller hung up"

    inbound, outbound = stats["inbound-rtp"], stats["outbound-rtp"]
    assert inbound["packetsReceived"] >= 40 * TALK_SECONDS and inbound["packetsLost"] == 0
    assert inbound["totalSamplesDuration"] >= TALK_SECONDS - 1  # the agent's audio played for the call's time
    assert inbound["totalAudioEnergy"] > 1e-3 * inbound["totalSamplesDuration"]  # and it is not silence
    assert outbound["packetsSent"] >= 40 * TALK_SECONDS  # the browser's microphone went out ...
    session = during[0]
    assert session["frames"] >= 10 * TALK_SECONDS and session["concealed"] < session["frames"] / 4  # ... and in

    assert texts >= 5 and transcript.strip() and shown.strip() == transcript.strip()
    assert ended == "ended: the caller hung up"
