"""A real browser calls a line served with the recogniser on (tiny dummy models): the dialer page shows
the caller's words live, as the data channel's "caller" messages bring them (noise under random weights)."""

import asyncio

from tests.interop.chromium import chromium
from bench.serving import OPERATOR, serving
from tests.interop.test_webrtc_browser import TALK_SECONDS, speech_wav


def test_the_dialer_shows_the_callers_words_as_they_are_heard(tmp_path):
    async def call(server):
        async with chromium(tmp_path / "profile", speech_wav(tmp_path), tmp_path / "chromium.log") as page:
            await page.send("Page.enable")
            await page.send("Page.navigate", url=server.url + "/dialer")
            await page.wait_for("document.readyState === 'complete' && typeof dialer === 'object'", 15)
            await page.evaluate(f"document.getElementById('token').value = {OPERATOR!r}")
            await page.evaluate("loadLines()")
            await page.evaluate("document.getElementById('line').value = 'acme/support'")
            await page.evaluate("document.getElementById('call').click()")
            await page.wait_for("dialer.state === 'connected'", 20)
            await asyncio.sleep(TALK_SECONDS)
            heard = await page.evaluate("dialer.messages.filter((m) => m.type === 'caller')")
            shown = await page.evaluate("document.getElementById('caller').textContent")
            await page.evaluate("hangUp()")
            ended = await page.wait_for("dialer.state.startsWith('ended') && dialer.state", 10)
            return heard, shown, ended

    with serving("dummy", 2, tmp_path, stt="dummy:tiny") as server:
        heard, shown, ended = asyncio.run(call(server))

    assert ended == "ended: the caller hung up"
    assert heard, "random weights still write words: some caller word is expected"
    assert all(0 <= m["start"] <= m["end"] <= TALK_SECONDS + 1 for m in heard)
    assert [m["start"] for m in heard] == sorted(m["start"] for m in heard)
    assert shown.startswith("You: ") and shown.removeprefix("You: ").split()[:len(heard)] == \
        [m["text"] for m in heard]
