import json

from agent.contracts.calls import CallDetails
from agent.media.call_channel import MAX_BACKLOG, CallChannel
from personas.schema import Persona

CALL = CallDetails(call_id="c1", tenant="acme", line="support", persona=Persona(role="Maya.", voice="NATF2"),
                   max_call_seconds=600)


class Pieces:
    """A tokenizer of three pieces: 4 starts a word, 5 continues it, 6 starts another; others are padding."""

    def piece_text(self, token: int) -> str:
        return {4: " Hel", 5: "lo", 6: " there"}.get(token, "")


class DataChannel:
    """The part of aiortc's RTCDataChannel the call channel uses."""

    def __init__(self, state: str = "open"):
        self.readyState = state
        self.bufferedAmount = 0
        self.sent: list[dict] = []
        self.handlers = {}

    def on(self, event, handler):
        self.handlers[event] = handler

    def send(self, data: str) -> None:
        self.sent.append(json.loads(data))

    def open(self) -> None:
        self.readyState = "open"
        self.handlers["open"]()


def test_the_agents_words_go_out_as_they_are_spoken_and_the_end_carries_the_transcript():
    channel = CallChannel(CALL, Pieces())
    data = DataChannel()
    channel.attach(data)
    channel.connected()
    for frame, token in enumerate([3, 4, 5, 0, 6, 3]):
        channel.spoke(frame, token)
    channel.ended("the caller hung up", "ended", {"caller_gaps": 0})

    assert data.sent == [
        {"type": "call", "call_id": "c1", "tenant": "acme", "line": "support", "max_call_seconds": 600},
        {"type": "state", "state": "connected"},
        {"type": "text", "text": " Hel", "word": True, "start": 0.08, "end": 0.16},
        {"type": "text", "text": "lo", "word": False, "start": 0.16, "end": 0.24},
        {"type": "text", "text": " there", "word": True, "start": 0.32, "end": 0.4},
        {"type": "ended", "reason": "the caller hung up", "outcome": "ended", "transcript": "Hello there",
         "media": {"caller_gaps": 0}},
    ]


def test_messages_wait_for_the_channel_to_open_and_only_the_newest_are_kept():
    channel = CallChannel(CALL, Pieces())
    for frame in range(MAX_BACKLOG + 10):
        channel.spoke(frame, 4)
    data = DataChannel(state="connecting")
    channel.attach(data)
    assert data.sent == []

    data.open()

    assert len(data.sent) == MAX_BACKLOG and data.sent[-1]["start"] == round((MAX_BACKLOG + 9) * 0.08, 3)
    assert channel.sent == MAX_BACKLOG


def test_without_a_tokenizer_there_is_no_text_and_an_empty_transcript():
    channel = CallChannel(CALL, None)
    data = DataChannel()
    channel.attach(data)
    channel.spoke(0, 4)
    channel.ended("the call reached its maximum duration", "ended", {})
    assert [m["type"] for m in data.sent] == ["call", "ended"] and data.sent[-1]["transcript"] == ""
