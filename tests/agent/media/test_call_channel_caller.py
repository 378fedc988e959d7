"""The caller's words on a WebRTC call's data channel, live from the recogniser."""

import json

import numpy as np

from agent.contracts.audio import FRAME_SECONDS
from agent.contracts.calls import CallDetails
from agent.engine.clock import CallSlot
from agent.media.call_channel import CallChannel
from agent.model.loading import DummyTokenizer
from agent.model.stt import SttConfig
from agent.model.stt_words import WordTimer
from agent.session import Session
from agent.timeline import CallTimeline
from personas.schema import Persona

CALL = CallDetails(call_id="c1", tenant="acme", line="support", persona=Persona(role="Maya.", voice="NATF2"),
                   max_call_seconds=600)
PAD, EPAD = 3, 0


class DataChannel:
    readyState = "open"
    bufferedAmount = 0

    def __init__(self):
        self.sent: list[dict] = []

    def send(self, data: str) -> None:
        self.sent.append(json.loads(data))


def test_each_word_the_caller_finishes_goes_out_as_a_caller_message():
    slot = CallSlot(index=0)
    session = Session(CALL, slot, CallTimeline(None, FRAME_SECONDS),
                      caller_words=WordTimer(DummyTokenizer(96), SttConfig.tiny()))
    channel = CallChannel(CALL, None)
    data = DataChannel()
    channel.attach(data)
    session.caller_word_listeners.append(channel.heard)
    for token in [PAD] * 12 + [EPAD, 40, 41, PAD]:
        slot.caller_listener(token, np.zeros((4, 6), dtype=np.float32))

    assert [m for m in data.sent if m["type"] == "caller"] == [
        {"type": "caller", "text": "w40", "start": 0.54, "end": 0.62},
        {"type": "caller", "text": "w41", "start": 0.62, "end": 0.7}]
