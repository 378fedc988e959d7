"""A worker's calls as the tenant hears of them: events in order, transcripts, recordings."""

import asyncio
import wave

import numpy as np
import pytest
import torch

from agent.call_reporter import CallReporter, outcome_of
from agent.contracts import events as ev
from agent.contracts.audio import FRAME_SIZE
from agent.contracts.calls import CallDetails
from agent.engine.backend import CallSetup, StepOutput
from agent.engine.echo import EchoBackend
from agent.transcript import Word
from agent.worker import Worker, WorkerModel
from personas.schema import Persona

pytestmark = pytest.mark.anyio

PERSONA = Persona(role="You work for Acme and your name is Maya.", voice="NATF2")
HELLO = [10, 11, 3, 12] + [3] * 200  # " Hel" "lo" pad " there", then silence


class Pieces:
    PIECES = {3: "", 10: " Hel", 11: "lo", 12: " there"}

    def piece_text(self, token: int) -> str:
        return self.PIECES[token]


class TalkingEcho(EchoBackend):
    """The echo, with a text stream: the agent says HELLO from its first frame out on."""

    def __init__(self, num_slots: int):
        super().__init__(num_slots)
        self.steps = torch.zeros(num_slots, dtype=torch.long)

    def begin_join(self, slot: int, call: CallSetup) -> bool:
        self.steps[slot] = 0
        return super().begin_join(slot, call)

    def step(self, pcm: torch.Tensor, active: torch.Tensor, prefill_seconds: float = 0.0) -> StepOutput:
        out = super().step(pcm, active, prefill_seconds)
        text = torch.tensor([HELLO[min(int(s), len(HELLO) - 1)] for s in self.steps])
        self.steps += out.ready.long()
        return StepOutput(out.pcm, torch.where(out.ready, text, -1), out.ready)


class Sink:
    def __init__(self, fail_first: int = 0):
        self.events: list = []
        self.fail_first = fail_first
        self.batches = 0

    async def publish(self, events) -> None:
        self.batches += 1
        if self.batches <= self.fail_first:
            raise ConnectionError("the call history is unreachable")
        self.events += events


class Recognizer:
    """A caller recogniser double: a word wherever the caller's frame was loud."""

    def open(self, call):
        return self

    def __init__(self):
        self.frames = 0
        self.loud: list[int] = []

    def feed(self, pcm: np.ndarray) -> None:
        if np.abs(pcm).max() > 0.1:
            self.loud.append(self.frames)
        self.frames += 1

    async def finish(self) -> list[Word]:
        return [Word("loud", round(f * 0.08, 3), round((f + 1) * 0.08, 3)) for f in self.loud[:1]]


def details(call_id: str, **kwargs) -> CallDetails:
    return CallDetails(call_id=call_id, tenant="acme", line="support", caller="+15555550999",
                       callee="+15555550100", persona=PERSONA, max_call_seconds=60, **kwargs)


def worker(sink, tmp_path, recognizer=None, slots: int = 2) -> Worker:
    model = WorkerModel("talking-echo", TalkingEcho(slots), lambda call, make_voice: CallSetup(), Pieces())
    return Worker(model, worker_id="w1", address="http://127.0.0.1:9", version="test",
                  reporter=CallReporter(sink, retry_interval=0.05), recordings=tmp_path, recognizer=recognizer)


async def test_a_call_reports_started_then_ended_with_its_timeline(tmp_path):
    sink, recognizer = Sink(), Recognizer()
    w = worker(sink, tmp_path, recognizer)
    await w.start()
    try:
        session = await w.create_session(details("c1"))
        session.slot.push(np.full(FRAME_SIZE, 0.5, np.float32))  # the caller says something at once
        await asyncio.sleep(0.6)
        session.pressed("7")
        await w.end_session("c1", "the caller hung up")
    finally:
        await w.stop()

    started, ended = sink.events
    assert (started.type, ended.type) == ("call.started", "call.ended")
    assert started.id == ev.event_id("acme", "c1", "call.started")
    assert ended.id == ev.event_id("acme", "c1", "call.ended")
    data = ended.data
    assert (data.outcome, data.reason, data.from_, data.to) == ("caller_hung_up", "the caller hung up",
                                                                 "+15555550999", "+15555550100")
    assert data.persona == ev.Persona(voice="NATF2", role=PERSONA.role) and data.recording is None
    assert 0.5 < data.duration_seconds < 2
    kinds = [(i.kind, getattr(i, "event", None) or getattr(i, "text", None) or i.digit) for i in data.transcript.items]
    assert kinds == [("event", "answered"), ("speech", "loud"), ("speech", "Hello there"), ("dtmf", "7"),
                     ("event", "caller_hung_up")]
    speech = data.transcript.items[2]
    assert (speech.speaker, speech.start) == ("agent", 0.08)  # the echo's first frame comes one step late
    assert data.transcript.items[1].speaker == "caller"
    assert ev.CALL_EVENT.validate_json(ev.event_body(ended)) == ended


async def test_a_recorded_call_has_its_recording_caller_left_agent_right(tmp_path):
    sink = Sink()
    w = worker(sink, tmp_path)
    await w.start()
    try:
        session = await w.create_session(details("c1", recording=True))
        for value in (0.25, 0.5):
            session.slot.push(np.full(FRAME_SIZE, value, np.float32))
        await asyncio.sleep(0.5)
        await w.end_session("c1", "ended by an admin")
    finally:
        await w.stop()

    ended = sink.events[-1].data
    assert ended.recording == ev.Recording(url="/tenants/acme/call-records/c1/recording")
    assert (ended.outcome, ended.recording_incomplete) == ("agent_hung_up", None)
    with wave.open(str(tmp_path / "acme" / "c1.wav")) as f:
        assert (f.getnchannels(), f.getframerate()) == (2, 24_000)
        frames = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, 2)
    assert frames.shape[0] == session.frames * FRAME_SIZE
    steps = frames[::FRAME_SIZE]
    assert list(steps[:3, 0]) == [8191, 16383, 0]  # the caller, as the engine took it
    assert list(steps[:3, 1]) == [0, 8191, 16383]  # the agent (the echo, one step late)


async def test_a_recording_that_could_not_be_written_is_null_and_its_call_ended_says_why(tmp_path):
    (tmp_path / "acme").write_text("")  # a file where the tenant's recordings folder would be
    sink = Sink()
    w = worker(sink, tmp_path)
    await w.start()
    try:
        session = await w.create_session(details("c1", recording=True))
        session.slot.push(np.full(FRAME_SIZE, 0.25, np.float32))
        await asyncio.sleep(0.3)
        await w.end_session("c1", "the caller hung up")
    finally:
        await w.stop()

    ended = sink.events[-1].data
    assert (ended.recording, ended.recording_incomplete) == (None, "a write failed: File exists")
    assert ev.CALL_EVENT.validate_json(ev.event_body(sink.events[-1])) == sink.events[-1]


async def test_partial_transcripts_send_each_settled_item_once(tmp_path):
    sink = Sink()
    w = worker(sink, tmp_path)
    await w.start()
    try:
        await w.create_session(details("c1", partial_transcript_seconds=0.3))
        await asyncio.sleep(1.8)
        await w.end_session("c1", "the caller hung up")
    finally:
        await w.stop()

    types = [e.type for e in sink.events]
    partials = [e.data for e in sink.events if e.type == "call.transcript.partial"]
    assert types[0] == "call.started" and types[-1] == "call.ended" and len(partials) >= 2
    assert [p.seq for p in partials] == list(range(1, len(partials) + 1))
    assert len({e.id for e in sink.events}) == len(sink.events)
    sent = [item for p in partials for item in p.items]
    assert sent == sink.events[-1].data.transcript.items[:len(sent)]  # a prefix of the final transcript
    assert partials[0].pending in ("Hello", "Hello there")  # said, not settled yet
    assert [i.text for i in sent if i.kind == "speech"] == ["Hello there"]  # settled later


async def test_events_wait_in_order_while_the_sink_is_unreachable(tmp_path):
    sink = Sink(fail_first=3)
    w = worker(sink, tmp_path, slots=3)
    await w.start()
    try:
        for n in range(3):
            await w.create_session(details(f"c{n}"))
        for n in range(3):
            await w.end_session(f"c{n}", "the caller hung up")
        for _ in range(100):
            if len(sink.events) == 6:
                break
            await asyncio.sleep(0.02)
    finally:
        await w.stop()
    assert [(e.type, e.data.call_id) for e in sink.events] == [
        ("call.started", "c0"), ("call.started", "c1"), ("call.started", "c2"),
        ("call.ended", "c0"), ("call.ended", "c1"), ("call.ended", "c2")]
    assert sink.batches > 3


def test_outcomes_from_how_and_why_a_call_ended():
    assert outcome_of("the caller hung up", "ended") == "caller_hung_up"
    assert outcome_of("the caller's media ended", "ended") == "caller_hung_up"
    assert outcome_of("transfer requested: the caller pressed 0", "ended") == "transferred"
    assert outcome_of("the call reached its maximum duration", "ended") == "agent_hung_up"
    assert outcome_of("the worker shut down", "failed") == "failed"
