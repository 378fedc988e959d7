"""A real SIP phone (baresip) calls a line served on the tiny dummy models with the recogniser on:
the call's events carry the caller's turns with times (their words are noise under random weights)."""

from __future__ import annotations

import pytest
from sip_service import run_baresip, running_service, speech, write_wav

from agent.call_reporter import CallReporter
from agent.contracts import events as ev
from agent.worker import load_worker_model

pytestmark = pytest.mark.anyio


class Events:
    """The call events the worker published."""

    def __init__(self):
        self.events: list[ev.CallStarted | ev.TranscriptPartial | ev.CallEnded] = []

    async def publish(self, events) -> None:
        self.events.extend(events)


async def test_baresip_on_a_line_with_the_recogniser_gets_timed_caller_turns(tmp_path):
    model = load_worker_model("dummy:tiny", 2, "cpu", tmp_path / "voices", tmp_path / "cache", stt="dummy:tiny")
    published = Events()
    async with running_service(tmp_path, slots=2, model=model, reporter=CallReporter(published)) as service:
        wav = write_wav(tmp_path / "caller.wav", speech(6.0))
        returncode, output = await run_baresip(tmp_path / "baresip", "+15555550100", service.sip_port, wav,
                                               seconds=10)
        assert returncode == 0, output[-2000:]
        assert await service.wait_idle()

    (ended,) = [e for e in published.events if e.type == "call.ended"]
    items = ended.data.transcript.items
    caller = [i for i in items if isinstance(i, ev.Speech) and i.speaker == "caller"]
    assert caller, [type(i).__name__ for i in items]
    words = [w for turn in caller for w in turn.words]
    assert all(0 <= w.start <= w.end <= ended.data.duration_seconds for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(turn.end_of_turn is None or 0 <= turn.end_of_turn <= 1 for turn in caller)
    starts = [i.start if isinstance(i, ev.Speech) else i.at for i in items]
    assert starts == sorted(starts)  # both speakers and the call's events in time order
