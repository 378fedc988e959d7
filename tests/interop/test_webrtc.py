"""The worker's WebRTC leg with an aiortc caller in the same process: media both ways, the data channel,
and every way a call ends (the worker ends it, the caller hangs up, ICE fails, media never connects,
the line's maximum duration), each freeing the slot and saying why."""

import asyncio
import json

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

import agent.media.webrtc
from agent.contracts.calls import CallDetails
from agent.media.webrtc import OfferError
from agent.worker import Worker, echo_model
from bench.webrtc_caller import RATE, Received, SignalTrack
from personas.schema import Persona

pytestmark = pytest.mark.anyio

PERSONA = Persona(role="You work for Acme and your name is Maya.", voice="NATF2")


def details(call_id: str, seconds: float = 60.0) -> CallDetails:
    return CallDetails(call_id=call_id, tenant="acme", line="support", caller="webrtc:test", callee="+15555550100",
                       persona=PERSONA, max_call_seconds=seconds)


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


class Caller:
    """An aiortc caller that plays `signal`, keeps what it hears and the data channel's messages."""

    def __init__(self, signal: np.ndarray):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.source = SignalTrack(signal)
        self.received = Received()
        self.messages: list[dict] = []
        self.ended = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def offer(self, data_channel: bool = True) -> str:
        self.pc.addTrack(self.source)
        if data_channel:
            self.pc.createDataChannel("call").on("message", self._on_message)
        self.pc.on("track", lambda track: self._tasks.append(asyncio.ensure_future(self._record(track))))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def answered(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_message(self, data: str) -> None:
        self.messages.append(json.loads(data))
        if self.messages[-1]["type"] == "ended":
            self.ended.set()

    async def _record(self, track) -> None:
        while True:
            frame = await track.recv()
            self.received.frames.append(frame.to_ndarray().reshape(-1)[::2] / 32768)  # stereo s16: left


async def call(worker: Worker, call_id: str, caller: Caller, seconds: float = 60.0):
    session = await worker.create_session(details(call_id, seconds))
    await caller.answered(await worker.answer_webrtc(call_id, await caller.offer()))
    return session


async def eventually(check, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def worker():
    worker = Worker(echo_model(2), worker_id="w1", address="http://127.0.0.1:9", version="test")
    await worker.start()
    yield worker
    await worker.stop()


async def test_the_caller_hears_itself_and_is_told_when_the_worker_ends_the_call(worker):
    caller = Caller(tone(3.0))
    try:
        session = await call(worker, "c1", caller)
        assert await eventually(lambda: len(caller.received.frames) > 100, 10)
        await worker.end_session("c1", "ended by an admin")
        assert await eventually(caller.ended.is_set, 5)
    finally:
        await caller.close()

    heard = np.concatenate(caller.received.frames)
    spectrum = np.abs(np.fft.rfft(heard[-RATE:]))
    assert abs(np.fft.rfftfreq(RATE, 1 / RATE)[np.argmax(spectrum)] - 440) < 5  # the echo of the tone
    kinds = [m["type"] for m in caller.messages]
    assert kinds[:2] == ["call", "state"] and kinds[-1] == "ended"
    assert caller.messages[0]["call_id"] == "c1" and caller.messages[1]["state"] == "connected"
    ended = caller.messages[-1]
    assert (ended["reason"], ended["outcome"]) == ("ended by an admin", "ended")
    assert ended["media"]["engine_frames"] >= 25 and ended["media"]["caller_gaps"] == 0
    assert worker.free_slots == 2 and session.slot.closed


async def test_the_caller_hanging_up_ends_the_call(worker):
    caller = Caller(tone(1.0))
    session = await call(worker, "c1", caller)
    assert await eventually(lambda: len(caller.received.frames) > 20, 10)
    await caller.close()  # DTLS close, no word on the data channel

    assert await eventually(lambda: worker.free_slots == 2, 5)
    assert (session.end_reason, session.end_outcome) == ("the caller hung up", "ended")


async def test_a_call_whose_ice_fails_ends_as_failed(worker, monkeypatch):
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)  # consent lost after ~4 s instead of ~30 s
    caller = Caller(tone(1.0))
    try:
        session = await call(worker, "c1", caller)
        assert await eventually(lambda: len(caller.received.frames) > 20, 10)
        ice = caller.pc.getTransceivers()[0].receiver.transport.transport
        await ice.stop()  # the caller vanishes: no DTLS close, no more consent answers

        assert await eventually(lambda: worker.free_slots == 2, 10)
    finally:
        await caller.close()
    assert (session.end_reason, session.end_outcome) == ("the connection failed (ICE or DTLS)", "failed")


async def test_a_call_whose_media_never_connects_ends_as_failed(worker, monkeypatch):
    monkeypatch.setattr(agent.media.webrtc, "CONNECT_TIMEOUT", 1.0)
    caller = Caller(tone(1.0))
    try:
        session = await worker.create_session(details("c1"))
        await worker.answer_webrtc("c1", await caller.offer())  # the caller never takes the answer
        assert await eventually(lambda: worker.free_slots == 2, 5)
    finally:
        await caller.close()
    assert (session.end_reason, session.end_outcome) == ("media did not connect within 1 s", "failed")


async def test_the_lines_maximum_duration_ends_the_call_and_the_caller_is_told(worker):
    caller = Caller(tone(3.0))
    try:
        session = await call(worker, "c1", caller, seconds=1.5)
        assert await eventually(caller.ended.is_set, 5)
    finally:
        await caller.close()
    assert caller.messages[-1]["reason"] == session.end_reason == "the call reached its maximum duration"
    assert await eventually(lambda: worker.free_slots == 2, 5)  # once the leg has said goodbye and closed


async def test_an_offer_without_a_data_channel_still_makes_a_call(worker):
    caller = Caller(tone(1.0))
    try:
        await call_without_channel(worker, caller)
        assert await eventually(lambda: len(caller.received.frames) > 20, 10)
    finally:
        await caller.close()


async def call_without_channel(worker: Worker, caller: Caller) -> None:
    await worker.create_session(details("c1"))
    await caller.answered(await worker.answer_webrtc("c1", await caller.offer(data_channel=False)))


@pytest.mark.parametrize("offer, error", [
    ("hello", "the offer is not SDP"),
    ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "the offer has no audio"),
    ("v=0\r\n" + "a=x\r\n" * 20000, "the offer is larger than"),
])
async def test_an_offer_that_cannot_be_answered_is_refused_and_the_call_keeps_its_slot(worker, offer, error):
    session = await worker.create_session(details("c1"))
    with pytest.raises(OfferError, match=error):
        await worker.answer_webrtc("c1", offer)
    assert worker.session("c1") is session and worker.free_slots == 1  # the control plane decides what next


async def test_a_second_offer_for_a_call_with_media_is_refused(worker):
    caller, second = Caller(tone(1.0)), Caller(tone(1.0))
    try:
        await call(worker, "c1", caller)
        with pytest.raises(RuntimeError, match="already has media"):
            await worker.answer_webrtc("c1", await second.offer())
    finally:
        await caller.close()
        await second.close()
