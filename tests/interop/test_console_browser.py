"""The admin console in a real browser: headless Chromium drives each page as an admin would, against a
`plexline serve` on the tiny dummy model (WebRTC test calls, call records, recordings, webhooks).

Screenshots of each page at phone (390 px) and desktop (1280 px) widths go to $PLEXLINE_SCREENSHOTS
when it is set, for a person to look at; they are not checked here.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import shutil
import struct
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from personas.tokens import hash_token
from tests.interop.chromium import Page, chromium
from bench.serving import OPERATOR, Server, free_port, serving
from tests.interop.test_webrtc_browser import TALK_SECONDS, speech_wav

EXAMPLE_ACME = Path(__file__).parents[2] / "personas" / "examples" / "tenants" / "acme"
ACME, GLOBEX = "acme-console-token", "globex-console-token"
HOOK_PORT = free_port()
SHOTS = os.environ.get("PLEXLINE_SCREENSHOTS")
ROBIN = "You work for Acme and your name is Robin. Be brief."


def tenants(root: Path) -> Path:
    shutil.copytree(EXAMPLE_ACME, root / "acme")
    tenant = yaml.safe_load((root / "acme" / "tenant.yaml").read_text())
    tenant |= {"admin_token_hash": hash_token(ACME, n=1024),
               "webhook": {"url": f"http://127.0.0.1:{HOOK_PORT}/hook", "secret": "whsec_" + "QUFB" * 8,
                           "allow_http": True, "allow_private_network": True}}
    (root / "acme" / "tenant.yaml").write_text(yaml.safe_dump(tenant))
    support = root / "acme" / "support.yaml"
    support.write_text(support.read_text().replace("recording: false", "recording: true"))
    (root / "globex" / "voices").mkdir(parents=True)
    (root / "globex" / "tenant.yaml").write_text(yaml.safe_dump({
        "name": "Globex", "addresses": ["+15555550200"], "admin_token_hash": hash_token(GLOBEX, n=1024)}))
    (root / "globex" / "desk.yaml").write_text(yaml.safe_dump({
        "answers": ["+15555550200"], "persona": {"role": "You work for Globex, secret plans.", "voice": "VARF1"}}))
    a_wav(root / "globex" / "voices" / "globex-secret.wav", 2.0)
    return root


def a_wav(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(24000)
        frames = int(seconds * 24000)
        f.writeframes(struct.pack(f"<{frames}h", *[int(3000 * ((i // 40) % 2 * 2 - 1)) for i in range(frames)]))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def server(folder) -> Iterator[Server]:
    env = {"PLEXLINE_DATA_DIR": str(folder / "data"), "PLEXLINE_WEBHOOK_RETRY_FIRST": "0.2",
           "PLEXLINE_WEBHOOK_RETRY_CAP": "0.5", "PLEXLINE_WEBHOOK_MAX_AGE": "2"}
    with serving("dummy", 2, folder, tenants(folder / "tenants"), env=env) as server:
        yield server


@pytest.fixture
def browser(server, tmp_path):
    """A function running `drive(page)` in a fresh headless Chromium (fake microphone: speech)."""
    microphone = speech_wav(tmp_path)

    def run(drive):
        async def main():
            async with chromium(tmp_path / "profile", microphone, tmp_path / "chromium.log") as page:
                await page.send("Page.enable")
                return await drive(page)
        return asyncio.run(main())
    return run


async def go(page: Page, url: str) -> bool:
    """Open a console page and wait until its module has loaded what it shows (False: it showed a problem)."""
    await page.send("Page.navigate", url=url)
    await page.wait_for("document.readyState === 'complete' && window.consoleReady !== undefined", 15)
    return await page.evaluate("window.consoleReady")


async def sign_in(page: Page, server: Server, token: str, tenant: str = "") -> str:
    await page.send("Page.navigate", url=server.url + "/console")
    await page.wait_for("document.readyState === 'complete' && document.getElementById('sign-in')", 15)
    await page.evaluate(f"document.getElementById('token').value = {token!r};"
                        f"document.getElementById('tenant').value = {tenant!r};"
                        "document.querySelector('#sign-in button').click()")
    await page.wait_for("location.pathname !== '/console' && document.readyState === 'complete'", 10)
    await page.wait_for("window.consoleReady !== undefined", 10)
    await page.evaluate("window.consoleReady")
    return await page.evaluate("location.pathname")


async def shoot(page: Page, name: str) -> None:
    if not SHOTS:
        return
    for width, height, mobile in ((390, 844, True), (1280, 900, False)):
        await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=mobile)
        await asyncio.sleep(0.2)
        shot = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        Path(SHOTS, f"{name}-{width}.png").write_bytes(base64.b64decode(shot["data"]))
    await page.send("Emulation.clearDeviceMetricsOverride")


def the_line(server: Server) -> dict:
    return httpx.get(f"{server.url}/tenants/acme/lines/support", headers=server.operator).json()


async def a_test_call(page: Page) -> dict:
    """Press Call on the line page, talk a little, hang up; what the page saw."""
    await page.evaluate("document.getElementById('call').click()")
    connected = await page.wait_for("testCall.state === 'connected'", 30)
    await asyncio.sleep(3)
    await page.evaluate("document.getElementById('hang-up').click()")
    await page.wait_for("testCall.state.startsWith('ended')", 10)
    await page.wait_for("document.querySelector('#call-link a')", 10)
    return {"connected": connected, "messages": await page.evaluate("testCall.messages"),
            "words": await page.evaluate("document.getElementById('agent-words').textContent"),
            "call_id": await page.evaluate("testCall.callId")}


def record(server: Server, call_id: str) -> dict:
    return httpx.get(f"{server.url}/tenants/acme/call-records/{call_id}", headers=server.operator).json()


def test_an_admin_signs_in_edits_a_line_and_the_next_test_call_uses_it(server, browser):
    async def drive(page: Page):
        landed = await sign_in(page, server, ACME, "acme")
        await shoot(page, "lines")
        listed = await page.evaluate("[...document.querySelectorAll('#lines tbody tr')].map((r) => r.textContent)")
        await go(page, server.url + "/console/tenants/acme/lines/support")
        await page.evaluate("""(() => {
            const role = document.getElementById('role');
            role.value = '""" + ROBIN + """';
            role.dispatchEvent(new Event('input'));
            document.getElementById('voice').value = 'VARM2';
            document.getElementById('max-call-seconds').value = '321';
            document.getElementById('save').click();
        })()""")
        saved = await page.wait_for("lineEditor.saves === 1 && document.getElementById('saved').textContent", 10)
        count = await page.evaluate("document.getElementById('role-count').textContent")
        call = await a_test_call(page)
        await shoot(page, "line")
        return landed, listed, saved, count, call

    landed, listed, saved, count, call = browser(drive)

    assert landed == "/console/tenants/acme/lines"
    assert len(listed) == 1 and "support" in listed[0] and "+15555550100" in listed[0]
    assert saved.startswith("Saved") and count.startswith(f"{len(ROBIN)} / 6000 characters")
    line = the_line(server)
    assert (line["persona"]["voice"], line["max_call_seconds"]) == ("VARM2", 321)
    assert call["connected"] and call["words"].strip()
    assert next(m for m in call["messages"] if m["type"] == "call")["max_call_seconds"] == 321
    assert record(server, call["call_id"])["persona"] == {"voice": "VARM2", "role": ROBIN}


def test_a_bad_edit_is_shown_beside_its_field_and_nothing_is_saved(server, browser):
    before = the_line(server)

    async def drive(page: Page):
        await sign_in(page, server, ACME, "acme")
        await go(page, server.url + "/console/tenants/acme/lines/support")
        await page.evaluate("""(() => {
            document.getElementById('role').value = '   ';
            document.getElementById('text-top-k').value = '99999';
            document.getElementById('save').click();
        })()""")
        await page.wait_for("document.querySelector('[data-error-for=\"persona.role\"]').textContent", 10)
        await shoot(page, "line-errors")
        return await page.evaluate("""(() => {
            const error = (f) => document.querySelector(`[data-error-for="${f}"]`).textContent;
            return { role: error('persona.role'), topK: error('persona.sampling.text.top_k'),
                     invalid: [...document.querySelectorAll('[aria-invalid=true]')].map((n) => n.id),
                     saves: lineEditor.saves };
        })()""")

    shown = browser(drive)

    assert shown["role"] == "must not be blank"
    assert shown["topK"] == "Input should be less than or equal to 32000"
    assert set(shown["invalid"]) == {"role", "text-top-k"} and shown["saves"] == 0
    assert the_line(server) == before


def test_an_admin_creates_a_line_and_an_address_not_its_own_is_shown_beside_its_field(server, browser):
    async def drive(page: Page):
        await page.send("Page.navigate", url=server.url + "/console")
        await page.wait_for("document.readyState === 'complete' && document.getElementById('sign-in')", 15)
        await shoot(page, "sign-in")
        await sign_in(page, server, ACME, "acme")
        fill = """(() => {{
            document.getElementById('new-id').value = 'evening';
            document.getElementById('new-answers').value = {answers!r};
            document.getElementById('new-role').value = 'You work for Acme in the evening.';
            document.querySelector('#new-line button').click();
        }})()"""
        await page.evaluate(fill.format(answers="+15555550200"))
        refused = await page.wait_for("document.querySelector('#new-line [data-error-for=answers]').textContent", 10)
        await page.evaluate(fill.format(answers="+15555550101"))
        await page.wait_for("location.pathname.endsWith('/lines/evening')", 10)
        return refused, await go(page, server.url + "/console/tenants/acme/lines/evening")

    refused, opened = browser(drive)

    assert refused == "+15555550200 is not one of this tenant's addresses"
    assert opened
    lines = httpx.get(f"{server.url}/tenants/acme/lines", headers=server.operator).json()
    assert {line["id"]: line["answers"] for line in lines} == {"support": ["+15555550100", "acme-support"],
                                                               "evening": ["+15555550101"]}


def test_two_tabs_editing_one_line_see_the_conflict_with_both_versions(server, browser):
    async def drive(first: Page):
        async with first.new_tab() as second:
            await second.send("Page.enable")
            for tab in (first, second):
                await sign_in(tab, server, ACME, "acme")
                await go(tab, server.url + "/console/tenants/acme/lines/support")
            await first.evaluate("document.getElementById('role').value = 'Role saved by the first tab.';"
                                 "document.getElementById('save').click()")
            await first.wait_for("lineEditor.saves === 1", 10)
            await second.evaluate("document.getElementById('role').value = 'Role written in the second tab.';"
                                  "document.getElementById('save').click()")
            await second.wait_for("!document.getElementById('conflict').hidden", 10)
            await shoot(second, "line-conflict")
            shown = await second.evaluate("""({
                mine: document.getElementById('conflict-mine').textContent,
                theirs: document.getElementById('conflict-theirs').textContent,
                marked: [...document.querySelectorAll('#conflict-theirs mark')].map((m) => m.textContent.trim()) })""")
            saved_meanwhile = the_line(server)["persona"]["role"]
            await second.evaluate("document.getElementById('keep-mine').click()")
            await second.wait_for("lineEditor.saves === 1", 10)
            return shown, saved_meanwhile

    shown, saved_meanwhile = browser(drive)

    assert '"Role written in the second tab."' in shown["mine"]
    assert '"Role saved by the first tab."' in shown["theirs"]
    assert shown["marked"] == ['role: "Role saved by the first tab."']
    assert saved_meanwhile == "Role saved by the first tab."  # the second tab overwrote nothing unasked
    assert the_line(server)["persona"]["role"] == "Role written in the second tab."  # until told to


def test_an_uploaded_wav_becomes_the_voice_of_a_call(server, folder, browser, tmp_path):
    wav = a_wav(tmp_path / "Maya Chen.wav", 3.0)

    async def drive(page: Page):
        await sign_in(page, server, ACME, "acme")
        await go(page, server.url + "/console/tenants/acme/voices")
        node = await page.send("Runtime.evaluate", expression="document.getElementById('voice-file')")
        await page.send("DOM.enable")
        await page.send("DOM.setFileInputFiles", files=[str(wav)], objectId=node["result"]["objectId"])
        await page.wait_for("document.getElementById('voice-name').value", 5)
        name = await page.evaluate("document.getElementById('voice-name').value")
        await page.evaluate("document.querySelector('#upload button').click()")
        await page.wait_for("document.getElementById('uploaded').textContent", 15)
        progress = await page.evaluate("document.getElementById('upload-progress').value")
        await page.wait_for(f"document.querySelector('[data-voice=\"{name}\"] button')", 5)
        await page.evaluate(f"document.querySelector('[data-voice=\"{name}\"] button').click()")
        playing = await page.wait_for("(() => { const a = document.querySelector('#voices audio');"
                                      " return a && a.currentTime > 0.3; })()", 10)
        await shoot(page, "voices")
        await go(page, server.url + "/console/tenants/acme/lines/support")
        await page.evaluate(f"document.getElementById('voice').value = {name!r};"
                            "document.getElementById('save').click()")
        await page.wait_for("lineEditor.saves === 1", 10)
        call = await a_test_call(page)
        await go(page, server.url + "/console/tenants/acme/voices")
        used_by = await page.evaluate(f"document.querySelector('[data-voice=\"{name}\"]').textContent")
        return name, progress, playing, call, used_by

    name, progress, playing, call, used_by = browser(drive)

    assert name == "maya-chen.wav" and progress == 1 and playing
    assert (folder / "tenants" / "acme" / "voices" / name).read_bytes() == wav.read_bytes()
    assert call["connected"] and record(server, call["call_id"])["persona"]["voice"] == name
    assert "support" in used_by


def test_a_calls_recording_plays_in_its_page_with_its_timeline(server, browser):
    async def drive(page: Page):
        await sign_in(page, server, ACME, "acme")
        await go(page, server.url + "/console/tenants/acme/lines/support")
        call = await a_test_call(page)
        await go(page, server.url + "/console/tenants/acme/calls")
        rows = await page.evaluate("[...document.querySelectorAll('#calls tbody tr')].map((r) => r.dataset.call)")
        await shoot(page, "calls")
        await page.evaluate("document.getElementById('filter-outcome').value = 'failed';"
                            "document.querySelector('#filters button').click()")
        filtered = await page.wait_for("!document.getElementById('no-calls').hidden && "
                                       "document.querySelectorAll('#calls tbody tr').length === 0", 10)
        await go(page, f"{server.url}/console/tenants/acme/calls/{call['call_id']}")
        await page.evaluate("document.getElementById('recording-audio').play()")
        played = await page.wait_for("document.getElementById('recording-audio').currentTime > 0.5", 10)
        channels = await page.evaluate("""(async () => {
            const audio = document.getElementById('recording-audio');
            const bytes = await (await fetch(audio.src)).arrayBuffer();
            const decoded = await new AudioContext().decodeAudioData(bytes);
            return [decoded.numberOfChannels, decoded.duration];
        })()""")
        shown = await page.evaluate("""({
            outcome: document.getElementById('outcome').textContent,
            turns: [...document.querySelectorAll('#timeline li')].map((li) => li.className) })""")
        await shoot(page, "call")
        return call, rows, filtered, played, channels, shown

    call, rows, filtered, played, (channels, seconds), shown = browser(drive)

    assert call["call_id"] in rows and filtered
    assert played and channels == 2 and seconds > 1
    assert shown["outcome"] == "caller_hung_up"
    assert "agent" in shown["turns"] and "event" in shown["turns"]


RECEIVED: list[dict] = []  # what the webhook receiver below was sent


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        RECEIVED.append({"id": self.headers["webhook-id"], "event": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_dead_letter_is_replayed_from_the_webhooks_page(server, browser):
    placed = httpx.post(f"{server.url}/calls", json={"to": "+15555550100"}, headers=server.operator).json()
    httpx.delete(f"{server.url}/tenants/acme/calls/{placed['call_id']}", headers=server.operator)

    def dead() -> list[dict]:
        return httpx.get(f"{server.url}/tenants/acme/webhooks/dead-letters", headers=server.operator).json()

    for _ in range(100):  # nobody listens on the hook's port: every event dies within its 2 s
        if any(d["call_id"] == placed["call_id"] and d["type"] == "call.ended" for d in dead()):
            break
        time.sleep(0.1)
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        async def drive(page: Page):
            await sign_in(page, server, ACME, "acme")
            await go(page, server.url + "/console/tenants/acme/webhooks")
            await shoot(page, "webhooks")
            letter = await page.evaluate(f"""(() => {{
                const row = [...document.querySelectorAll('#dead-letters tbody tr')]
                  .find((r) => r.textContent.includes({placed['call_id']!r}) && r.textContent.includes('call.ended'));
                const shown = {{ id: row.dataset.event, text: row.textContent }};
                row.querySelector('button').click();
                return shown;
            }})()""")
            await page.wait_for("document.querySelector('#dead-letters .ok')", 10)
            for _ in range(50):  # delivered now that the receiver listens: listed once the page is loaded again
                await go(page, server.url + "/console/tenants/acme/webhooks")
                listed = await page.evaluate(f"""(() => {{
                    const row = [...document.querySelectorAll('#delivered tbody tr')]
                      .find((r) => r.dataset.event === {letter['id']!r});
                    return row ? Array.from(row.cells, (c) => c.textContent) : null;
                }})()""")
                if listed:
                    break
                await asyncio.sleep(0.2)
            return letter, listed

        letter, listed = browser(drive)
        for _ in range(100):
            if any(r["id"] == letter["id"] for r in RECEIVED):
                break
            time.sleep(0.1)
    finally:
        receiver.shutdown()
        receiver.server_close()

    assert "Connection refused" in letter["text"] or "connect" in letter["text"].lower()
    delivered = [r for r in RECEIVED if r["id"] == letter["id"]]
    assert delivered and delivered[0]["event"]["type"] == "call.ended"
    assert delivered[0]["event"]["data"]["call_id"] == placed["call_id"]
    assert letter["id"] not in [d["event_id"] for d in dead()]
    assert listed[0] == f"call.ended {letter['id']}" and listed[1:4] == [placed["call_id"], "1", "204"]


ACME_PAGES = ["/lines", "/lines/support", "/voices", "/calls", "/webhooks"]


def test_tenant_a_admin_never_sees_tenant_b(server, browser):
    async def drive(page: Page):
        landed = await sign_in(page, server, GLOBEX, "globex")
        own = await page.evaluate("document.querySelector('#lines tbody').textContent")
        await go(page, server.url + "/console/tenants/globex/voices")
        voices = await page.evaluate("document.querySelector('#voices tbody').textContent")
        seen = {}
        for path in ACME_PAGES:
            ok = await go(page, f"{server.url}/console/tenants/acme{path}")
            seen[path] = (ok, await page.evaluate("document.getElementById('problem').textContent"),
                          await page.evaluate("document.querySelector('main').innerText"))
        await shoot(page, "other-tenant")
        refused = await page.evaluate("""(async () => [
            (await fetch('/tenants/acme/lines', { headers: { Authorization: 'Bearer ' + JSON.parse(
              sessionStorage.getItem('plexline-console')).token } })).status,
            (await fetch('/tenants', { headers: { Authorization: 'Bearer ' + JSON.parse(
              sessionStorage.getItem('plexline-console')).token } })).status])()""")
        return landed, own, voices, seen, refused

    landed, own, voices, seen, refused = browser(drive)

    assert landed == "/console/tenants/globex/lines" and "desk" in own and "support" not in own
    assert "globex-secret.wav" in voices and "maya" not in voices
    for path, (ok, problem, text) in seen.items():
        assert not ok and problem.startswith("This token does not administer this tenant"), path
        for acme_thing in ("+15555550100", "Acme Home Goods", "maya", "Role written", f"{HOOK_PORT}/hook"):
            assert acme_thing not in text, (path, acme_thing)
    assert refused == [401, 403]


def test_the_operator_sees_every_tenant_and_the_api_docs_render_offline(server, browser):
    async def drive(page: Page):
        landed = await sign_in(page, server, OPERATOR)
        rows = await page.evaluate("[...document.querySelectorAll('#tenants tbody tr')].map((r) => r.cells[0].innerText)")
        await shoot(page, "tenants")
        await page.send("Page.navigate", url=server.url + "/docs")
        operations = await page.wait_for("document.querySelectorAll('.opblock').length", 20)
        await shoot(page, "docs")
        await page.send("Page.navigate", url=server.url + "/redoc")
        menu = await page.wait_for("document.querySelectorAll('[role=menuitem]').length", 20)
        return landed, rows, operations, menu

    landed, rows, operations, menu = browser(drive)

    assert landed == "/console/tenants" and rows == ["acme", "globex"]
    assert operations > 20 and menu > 20


def test_a_test_call_shows_the_callers_words_as_they_are_heard(tmp_path):
    """With the recogniser on (tiny dummy models: its words are noise), the line page shows the data
    channel's "caller" words during the call."""
    async def drive(page: Page, server: Server):
        await sign_in(page, server, ACME, "acme")
        await go(page, server.url + "/console/tenants/acme/lines/support")
        await page.evaluate("document.getElementById('call').click()")
        await page.wait_for("testCall.state === 'connected'", 30)
        await asyncio.sleep(TALK_SECONDS)
        heard = await page.evaluate("testCall.messages.filter((m) => m.type === 'caller').map((m) => m.text)")
        shown = await page.evaluate("document.getElementById('caller-words').textContent")
        await page.evaluate("document.getElementById('hang-up').click()")
        await page.wait_for("testCall.state.startsWith('ended')", 10)
        return heard, shown

    async def call(server: Server):
        async with chromium(tmp_path / "profile", speech_wav(tmp_path), tmp_path / "chromium.log") as page:
            await page.send("Page.enable")
            return await drive(page, server)

    folder = tmp_path / "stt"
    folder.mkdir()
    with serving("dummy", 2, folder, tenants(folder / "tenants"), stt="dummy:tiny",
                 env={"PLEXLINE_DATA_DIR": str(folder / "data")}) as server:
        heard, shown = asyncio.run(call(server))

    assert heard, "random weights still write words: some caller word is expected"
    assert shown.split()[:len(heard)] == heard
