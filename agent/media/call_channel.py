"""What a WebRTC caller's app is told on the call's data channel: the agent's words as spoken, and call events.

Each message is one JSON object with a "type":

    {"type": "call", "call_id": "...", "tenant": "acme", "line": "support", "max_call_seconds": 600}
    {"type": "state", "state": "connected"}                 media flows both ways
    {"type": "text", "text": " Hel", "word": true, "start": 1.28, "end": 1.36}
    {"type": "caller", "text": "order", "start": 3.04, "end": 3.36}   where the worker runs a recogniser
    {"type": "ended", "reason": "the caller hung up", "outcome": "ended", "transcript": "...", "media": {...}}

A "text" message is one piece of the agent's text stream, sent as the audio of its frame starts to
play; "word" says the piece starts a word; times are seconds since the agent's audio started. A
"caller" message is one word of the caller's, sent as soon as the recogniser has finished it (about
half a second after it was said), timed by the same clock.
"media" in "ended" counts the gaps of the call (see `agent.media.webrtc.MediaCounts`). Messages sent
before the caller's app opened the channel wait for it (the newest `MAX_BACKLOG` of them).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from aiortc import RTCDataChannel

from agent.contracts.audio import FRAME_SECONDS
from agent.contracts.calls import CallDetails
from agent.transcript import PieceText, TranscriptBuilder, Word

MAX_BACKLOG = 256


class CallChannel:
    def __init__(self, call: CallDetails, tokenizer: PieceText | None):
        self.tokenizer = tokenizer
        self.transcript = TranscriptBuilder(tokenizer, FRAME_SECONDS) if tokenizer is not None else None
        self.sent = 0
        self._channel: RTCDataChannel | None = None
        self._backlog: deque[str] = deque(maxlen=MAX_BACKLOG)
        self.send({"type": "call", "call_id": call.call_id, "tenant": call.tenant, "line": call.line,
                   "max_call_seconds": call.max_call_seconds})

    def attach(self, channel: RTCDataChannel) -> None:
        """The channel the caller's app opened (the first one: others are ignored)."""
        if self._channel is not None:
            return
        self._channel = channel
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def send(self, message: dict[str, Any]) -> None:
        self._backlog.append(json.dumps(message, separators=(",", ":")))
        self._flush()

    def connected(self) -> None:
        self.send({"type": "state", "state": "connected"})

    def spoke(self, frame: int, token: int) -> None:
        """`agent.media.bridge.AgentTrack`'s text callback: the token of `frame` starts to play now."""
        if self.transcript is None:
            return
        piece = self.tokenizer.piece_text(token)
        if not piece:
            return
        word = self.transcript.add(frame, token) is not None
        self.send({"type": "text", "text": piece, "word": word, "start": round(frame * FRAME_SECONDS, 3),
                   "end": round((frame + 1) * FRAME_SECONDS, 3)})

    def heard(self, word: Word) -> None:
        """A session's caller-word listener: the caller finished saying `word`."""
        self.send({"type": "caller", "text": word.text, "start": word.start, "end": word.end})

    def ended(self, reason: str, outcome: str, media: dict[str, Any]) -> None:
        transcript = self.transcript.text if self.transcript is not None else ""
        self.send({"type": "ended", "reason": reason, "outcome": outcome, "transcript": transcript, "media": media})

    async def close(self, timeout: float) -> None:
        """Close the channel once the caller has everything sent on it (waiting up to `timeout` s).

        A message that has left the channel's buffer may still wait in SCTP's queue for the
        congestion window, or be lost and need resending: the connection's close (an SCTP ABORT)
        would lose it. The channel's close is the proof that it arrived: its stream reset follows
        the last message, and the caller answers it only once it has every message before it
        (RFC 6525 5.2.2), and the channel is closed when the caller has reset its side too."""
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        closed = asyncio.Event()
        channel.on("close", closed.set)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while channel.readyState == "open" and channel.bufferedAmount > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)  # then the reset covers them (an older aiortc resets at once)
        channel.close()
        try:
            await asyncio.wait_for(closed.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            pass

    def _flush(self) -> None:
        channel = self._channel
        while channel is not None and channel.readyState == "open" and self._backlog:
            channel.send(self._backlog.popleft())
            self.sent += 1
