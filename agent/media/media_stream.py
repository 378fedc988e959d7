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
MAX_QUEUED = 50  # caller media messages (1 s) waiting for the engine; older ones are dropped
TIME_BASE = fractions.Fraction(1, G711_RATE)
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

    def media_payload(self) -> bytes:
        media = self.data.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise ValueError("media message without media.payload")
        try:
            return base64.b64decode(media["payload"], validate=True)
        except binascii.Error as error:
            raise ValueError(f"media.payload is not base64: {error}") from None

    def media_timestamp(self) -> int | None:
        """Milliseconds since the stream started, as the carrier counts them."""
        value = self.data.get("media", {}).get("timestamp")
        try:
            return int(value)
        except (TypeError, ValueError):
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
                text = await self.websocket.receive_text()
                try:
                    message = StreamMessage.parse(text)
                    self._on_message(message)
                except ValueError as error:
                    log.info("bad media-stream message", extra={"call": self.session.id, "error": str(error)})
                    continue
                if message.event == "stop":
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            self.caller.end()

    def _on_message(self, message: StreamMessage) -> None:
        if message.event == "media":
            track = message.data.get("media", {}).get("track", "inbound")
            if track == "inbound":
                self.caller.feed(message.media_payload(), message.media_timestamp())
        elif message.event == "dtmf":
            digit = str(message.data.get("dtmf", {}).get("digit", ""))[:1]
            if digit:
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
    token = str(start.data.get("start", {}).get("customParameters", {}).get("token", "")) if start else ""
    if start is None or not hmac.compare_digest(token.encode(), stream_token(secret, call_id).encode()):
        await websocket.close(code=1008, reason="no valid start message for this call")
        return
    media_format = start.data["start"].get("mediaFormat", {})
    if media_format and (media_format.get("encoding"), int(media_format.get("sampleRate", G711_RATE))) != (
            "audio/x-mulaw", G711_RATE):
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
            message = StreamMessage.parse(await asyncio.wait_for(websocket.receive_text(), 10))
        except (ValueError, TimeoutError, WebSocketDisconnect, RuntimeError):
            return None
        if message.event == "start" and isinstance(message.data.get("start"), dict):
            return message
        if message.event != "connected":
            return None
    return None
