"""Eight WebRTC calls at once for a minute on one CPU worker with the tiny dummy model: no slot leaks,
no gap in the audio that the worker did not count, and memory that stays flat.

On a small CPU machine the engine may not keep up with eight calls (the tiny model's step is mostly
Python, and it shares the interpreter with the calls' media): then caller audio waits and is
dropped, and the caller hears silence, and all of it must be counted. So the test balances each
call's books both ways instead of asking for none: what the caller sent is what the engine took,
dropped or trimmed (give or take what was in flight at the hang-up), and every packet of silence
the caller heard is one the worker counted.
"""

import asyncio

import numpy as np
import pytest

from bench.webrtc_caller import PACKET, RATE, WhipCall
from bench.serving import OPERATOR, serving

CALLS = 8
SECONDS = 60
SETTLE = 10  # seconds before the first memory sample: allocators and caches warm up
SILENT = 1e-4  # a received 20 ms frame this quiet is silence the worker sent (the dummy model hisses)
IN_FLIGHT = 1.0  # seconds of caller audio unaccounted at the end: in transit, or sent after the hang-up
FRAME = 0.08


def voice(seconds: float, seed: int) -> np.ndarray:
    """A caller's sound: a wobbling tone in noise, different for each caller."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * (200 + 40 * seed) * t + 3 * np.sin(2 * np.pi * 0.5 * t))
    return (0.2 * tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.slow
def test_eight_calls_for_a_minute_leak_nothing_and_every_gap_is_counted(tmp_path):
    async def run(server):
        calls = [WhipCall(server.url, OPERATOR, "acme", "support", voice(SECONDS + 5, i)) for i in range(CALLS)]
        answers = await asyncio.gather(*(c.start() for c in calls))
        assert [a.status_code for a in answers] == [201] * CALLS
        await asyncio.gather(*(asyncio.wait_for(c.connected.wait(), 20) for c in calls))
        memory, in_call = [], server.sessions()
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (elapsed := loop.time() - start) < SECONDS:
            await asyncio.sleep(5)
            if elapsed >= SETTLE:
                memory.append(server.rss_bytes())
        during = {s["call_id"]: s for s in server.sessions()}
        await asyncio.gather(*(c.hang_up() for c in calls))
        return calls, memory, in_call, during

    with serving("dummy", CALLS, tmp_path) as server:
        calls, memory, in_call, during = asyncio.run(run(server))
        free, left = server.free_slots(), server.sessions()
        log = server.log.read_text()

    assert len(in_call) == CALLS and (free, left) == (CALLS, [])  # every slot taken, and every one freed
    growth = np.mean(memory[-3:]) - np.mean(memory[:3])
    assert growth < 20e6, f"memory grew by {growth / 1e6:.1f} MB: {[round(m / 1e6) for m in memory]}"

    rates = []
    for call in calls:
        assert call.messages_of("ended"), [m["type"] for m in call.messages[-3:]]  # told why, with the transcript
        ended = call.messages_of("ended")[0]
        media = ended["media"]
        assert ended["reason"] == "the caller hung up"
        # Caller to engine: nothing lost on the way, and every second sent was taken, dropped or trimmed.
        assert media["caller_gaps"] == 0
        sent = len(call.source.sent_at) * PACKET / RATE
        taken = (media["engine_frames"] - media["engine_concealed"] + media["engine_dropped"]) * FRAME
        accounted = taken + media["engine_trimmed"] / 24_000
        assert 0 <= sent - accounted < IN_FLIGHT, (sent, media)
        # Engine to caller: no packet missing, and no silence the worker did not count.
        heard = call.received
        assert heard.gaps() == 0 and abs(len(heard.frames) - media["agent_packets"]) <= 10
        silent = sum(1 for f in heard.frames[50:] if np.abs(f).max() < SILENT)
        assert silent <= media["agent_underruns"], (silent, media)
        rates.append(media["engine_frames"] / SECONDS)
    print(f"engine steps/s per call {np.round(rates, 1)} (12.5 is real time); memory {[round(m / 1e6) for m in memory]} MB;"
          f" overruns logged: {log.count('overran its budget')}")
