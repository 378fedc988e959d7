"""Media-stream WebSockets in the style of Twilio Media Streams: a call's audio as JSON over a WebSocket.

A carrier answers a call with the TwiML of `telephony.control.twiml` (`<Connect><Stream url=...>`) and
opens a WebSocket to the worker holding the call (`WS /worker/streams/{call_id}`). It sends
`connected`, `start` (the stream's id, its format and our token among its custom parameters),
then `media` (base64 mu-law at 8 kHz, 20 ms a message), `dtmf`, `mark` and finally `stop`. We
send `media` with the agent's voice, paced every 20 ms, and `mark`s as the carrier asks (a mark
it sends back when our audio before it has played). The caller's audio is exposed as an aiortc
track (`StreamCallerTrack`), so `agent.media.bridge.TrackBridge` connects it to the engine slot like
any other leg. The token is an HMAC of the call id under the worker secret: only the carrier
told the TwiML can attach to the call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fractions
import hmac
import json
import logging
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from agent.contracts.calls import UnknownSession
from agent.contracts.media import stream_token
from agent.engine.clock import CallSlot
from agent.media.bridge import AgentTrack, TrackBridge
from agent.media.g711 import G711_RATE, G711Encoder, g711_context
from agent.session import Session

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
MAX_TIMESTAMP_MS = 7 * 86_400_000  # a week: anything later is not a call's clock
MAX_QUEUED = 50  # caller media messages (1 s) waiting for the engine; older ones are dropped
TIME_BASE = fractions.Fraction(1, G711_RATE)
DTMF_DIGITS = "0123456789*#ABCD"
EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop")


@dataclass(frozen=True)
class StreamMessage:
    event: str
    data: dict

    @classmethod
    def parse(cls, text: str | bytes) -> StreamMessage:
        if len(text) > MAX_MESSAGE_BYTES:
            raise ValueError(f"message of {len(text)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"not JSON: {error}") from None
        if not isinstance(data, dict) or data.get("event") not in EVENTS:
            raise ValueError(f"unknown event {str(data.get('event') if isinstance(data, dict) else data)[:40]!r}")
        return cls(data["event"], data)

    def part(self, name: str) -> dict:
        """The message's `name` object (`media`, `start`, `dtmf`...); {} when it is absent or not an object."""
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    def media_payload(self) -> bytes:
        payload = self.part("media").get("payload")
        if not isinstance(payload, str):
            raise ValueError("media message without media.payload")
        try:
            audio = base64.b64decode(payload, validate=True)
        except binascii.Error as error:
            raise ValueError(f"media.payload is not base64: {error}") from None
        if not audio:
            raise ValueError("media.payload is empty")
        return audio

    def media_timestamp(self) -> int | None:
        """Milliseconds since the stream started, as the carrier counts them (None if absent or absurd)."""
        value = self.part("media").get("timestamp")
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP_MS:
            return value
        return None

    def serialise(self) -> str:
        return json.dumps(self.data, separators=(",", ":"))


class StreamCallerTrack(MediaStreamTrack):
    """The caller's audio from `media` messages: 8 kHz frames with the carrier's timestamps."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue()
        self._decoder = g711_context("PCMU", "r")
        self._next_pts = 0
        self.dropped = 0

    def feed(self, payload: bytes, timestamp_ms: int | None) -> None:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in self._decoder.decode(av.Packet(payload))])
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.time_base = G711_RATE, TIME_BASE
        frame.pts = timestamp_ms * 8 if timestamp_ms is not None else self._next_pts
        self._next_pts = frame.pts + samples.size
        if self._queue.qsize() >= MAX_QUEUED:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(frame)

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class MediaStreamLeg:
    """One call's WebSocket as its media link: caller media in, the agent's media out, until `stop`."""

    def __init__(self, websocket: WebSocket, session: Session, stream_sid: str):
        self.websocket = websocket
        self.session = session
        self.stream_sid = stream_sid
        self.caller = StreamCallerTrack()
        self.done = asyncio.Event()
        self.sent = 0

    async def run(self, slot: CallSlot) -> None:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._receive(), name=f"stream-in-{self.session.id}"),
                 loop.create_task(self._send(AgentTrack(slot, sample_format="s16")),
                                  name=f"stream-out-{self.session.id}")]
        try:
            await TrackBridge(self.caller).run(slot)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            self.done.set()

    async def _receive(self) -> None:
        try:
            while True:
                received = await self.websocket.receive()
                if received["type"] == "websocket.disconnect":
                    return
                try:
                    if received.get("text") is None:
                        raise ValueError("a binary frame (media streams send text)")
                    message = StreamMessage.parse(received["text"])
                    self._on_message(message)
                except ValueError as error:
                    log.info("bad media-stream message", extra={"call": self.session.id, "error": str(error)[:200]})
                    continue
                if message.event == "stop":
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            self.caller.end()

    def _on_message(self, message: StreamMessage) -> None:
        if message.event == "media":
            if message.part("media").get("track", "inbound") == "inbound":
                self.caller.feed(message.media_payload(), message.media_timestamp())
        elif message.event == "dtmf":
            digit = message.part("dtmf").get("digit")
            if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_DIGITS:
                raise ValueError("dtmf message without a digit")
            self.session.pressed(digit)
        elif message.event == "mark":
            log.debug("mark played", extra={"call": self.session.id, "mark": message.data.get("mark")})

    async def _send(self, agent: AgentTrack) -> None:
        encoder = G711Encoder("PCMU")
        try:
            while True:
                payloads, _ = encoder.encode(await agent.recv())
                for payload in payloads:
                    await self.websocket.send_text(StreamMessage("media", {
                        "event": "media", "streamSid": self.stream_sid,
                        "media": {"payload": base64.b64encode(payload).decode()}}).serialise())
                    self.sent += 1
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            agent.stop()


router = APIRouter(tags=["media streams"])


@router.websocket("/worker/streams/{call_id}")
async def media_stream(websocket: WebSocket, call_id: str) -> None:
    """A carrier's media stream for a call this worker holds (the token is in `start`'s parameters)."""
    await websocket.accept()
    start = await _start_message(websocket)
    secret = websocket.app.state.worker_secret
    parameters = start.part("start").get("customParameters") if start else None
    token = parameters.get("token") if isinstance(parameters, dict) else None
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), stream_token(secret, call_id).encode()):
        await websocket.close(code=1008, reason="no valid start message for this call")
        return
    media_format = start.part("start").get("mediaFormat", {})
    if not isinstance(media_format, dict) or (media_format and (
            media_format.get("encoding"), str(media_format.get("sampleRate", G711_RATE))) != ("audio/x-mulaw",
                                                                                                str(G711_RATE))):
        await websocket.close(code=1003, reason="only audio/x-mulaw at 8000 Hz is served")
        return
    try:
        session = websocket.app.state.worker.session(call_id)
        leg = MediaStreamLeg(websocket, session, str(start.data.get("streamSid", "")))
        session.attach(leg)
    except (UnknownSession, RuntimeError) as error:
        await websocket.close(code=1008, reason=str(error)[:120])
        return
    log.info("media stream attached", extra={"call": call_id, "stream": leg.stream_sid})
    await leg.done.wait()
    try:
        await websocket.close()
    except RuntimeError:
        pass  # the carrier closed it first


async def _start_message(websocket: WebSocket) -> StreamMessage | None:
    """The `start` message, after an optional `connected`; None if the stream does not begin so."""
    for _ in range(2):
        try:
            received = await asyncio.wait_for(websocket.receive(), 10)
            if received.get("text") is None:
                return None  # a binary frame, or the carrier left
            message = StreamMessage.parse(received["text"])
        except (ValueError, TimeoutError, WebSocketDisconnect, RuntimeError):
            return None
        if message.event == "start" and isinstance(message.data.get("start"), dict):
            return message
        if message.event != "connected":
            return None
    return None
