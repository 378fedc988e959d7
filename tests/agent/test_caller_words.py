"""The caller's words from the recogniser beside the agent, into each call's timeline."""

import asyncio

import numpy as np
import pytest

from agent.contracts import events as ev
from agent.contracts.audio import FRAME_SECONDS, FRAME_SIZE
from agent.contracts.calls import CallDetails
from agent.engine.clock import CallSlot
from agent.model.loading import DummyTokenizer
from agent.model.stt import SttConfig
from agent.model.stt_words import WordTimer
from agent.session import Session
from agent.timeline import CallTimeline
from agent.worker import Worker, load_worker_model
from personas.schema import Persona

pytestmark = pytest.mark.anyio

PERSONA = Persona(role="You work for Acme and your name is Maya.", voice="NATF2")
PAD, EPAD = 3, 0
HEADS = np.full((4, 6), 1 / 6, dtype=np.float32)


def details(call_id: str, caller_transcript: bool = True) -> CallDetails:
    return CallDetails(call_id=call_id, tenant="acme", line="support", caller="+15555550999",
                       callee="+15555550100", persona=PERSONA, max_call_seconds=60,
                       caller_transcript=caller_transcript)


def caller_turns(session: Session) -> list[ev.Speech]:
    return [i for i in session.timeline.items() if isinstance(i, ev.Speech) and i.speaker == "caller"]


async def test_each_finished_word_joins_the_timeline_at_the_time_it_was_heard():
    config = SttConfig.tiny()  # text 0.5 s behind the audio
    slot = CallSlot(index=0)
    session = Session(details("c1"), slot, CallTimeline(None, FRAME_SECONDS),
                      caller_words=WordTimer(DummyTokenizer(96), config))
    for token in [PAD] * 12 + [EPAD, 40, 41, PAD, PAD, EPAD, 42]:
        slot.caller_listener(token, HEADS)

    (turn,) = caller_turns(session)
    assert [(w.text, w.start, w.end) for w in turn.words] == [("w40", 0.54, 0.62), ("w41", 0.62, 0.7)]

    session.finish_caller_words()  # the call is over: w42 ends now
    (turn,) = caller_turns(session)
    assert [w.text for w in turn.words] == ["w40", "w41", "w42"]
    assert (turn.words[-1].start, turn.words[-1].end) == (0.94, 1.02)  # frames 18 and 19, less 0.5 s


def vad(finished: float) -> np.ndarray:
    heads = np.full((4, 6), 0.1, dtype=np.float32)
    heads[2, 0] = finished  # Unmute's pause head and class
    return heads


async def test_a_caller_turn_carries_the_vads_certainty_that_the_caller_finished():
    slot = CallSlot(index=0)
    session = Session(details("c1"), slot, CallTimeline(None, FRAME_SECONDS),
                      caller_words=WordTimer(DummyTokenizer(96), SttConfig.tiny()))
    tokens = [PAD] * 12 + [EPAD, 40, 41] + [PAD] * 30 + [EPAD, 42, PAD]
    finished = [0.0] * 15 + [0.2, 0.7, 0.95, 0.4] + [0.1] * 29  # high just after "w41" is heard
    for token, p in zip(tokens, finished, strict=True):
        slot.caller_listener(token, vad(p))

    first, second = caller_turns(session)
    assert first.text == "w40 w41" and first.end_of_turn == pytest.approx(0.95)
    assert second.text == "w42" and second.end_of_turn == pytest.approx(0.1)  # only one frame heard after it


class Caller:
    """Speaks noise for `frames` frames and hears the agent as long, then its media ends."""

    def __init__(self, frames: int, seed: int):
        self.frames = frames
        self.audio = np.random.default_rng(seed).uniform(-0.3, 0.3, FRAME_SIZE * (frames + 4)).astype(np.float32)

    async def run(self, slot: CallSlot) -> None:
        slot.push(self.audio)
        for _ in range(self.frames):
            await slot.output.get()


async def test_a_worker_with_the_recogniser_gives_calls_caller_turns_unless_the_line_turns_it_off(tmp_path):
    model = load_worker_model("dummy:tiny", 2, "cpu", tmp_path / "voices", tmp_path / "cache", stt="dummy:tiny")
    worker = Worker(model, worker_id="w1", address="http://127.0.0.1:9", version="test")
    await worker.start()
    try:
        heard = await worker.create_session(details("c1"))
        unheard = await worker.create_session(details("c2", caller_transcript=False))
        for i, session in enumerate((heard, unheard)):
            session.attach(Caller(frames=30, seed=i))
        await asyncio.wait_for(asyncio.gather(*(s.end_requested.wait() for s in (heard, unheard))), 60)
    finally:
        await worker.stop()

    turns = caller_turns(heard)
    assert turns, "random weights still write words: some caller turn is expected"
    words = [w for turn in turns for w in turn.words]
    assert all(0 <= w.start <= w.end <= heard.frames * FRAME_SECONDS for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(0 <= turn.end_of_turn <= 1 for turn in turns if turn.end_of_turn is not None)
    assert caller_turns(unheard) == []


async def test_a_failing_listener_stops_the_calls_words_not_the_engine():
    slot = CallSlot(index=0)
    session = Session(details("c1"), slot, CallTimeline(None, FRAME_SECONDS),
                      caller_words=WordTimer(DummyTokenizer(96), SttConfig.tiny()))

    def broken(word):
        raise RuntimeError("the data channel went away")

    session.caller_word_listeners.append(broken)
    for token in [EPAD, 40, PAD, EPAD, 41, PAD]:
        slot.caller_listener(token, HEADS)  # raises nothing
    assert session.caller_words is None and [w.text for t in caller_turns(session) for w in t.words] == ["w40"]
