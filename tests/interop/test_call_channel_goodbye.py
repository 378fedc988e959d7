"""The call channel's last message reaches the caller before the connection closes, however long it is.

A call's "ended" message carries its whole transcript: tens of kilobytes after some minutes, many
SCTP chunks, more than the congestion window lets out at once. Closing the connection aborts the
SCTP association and drops what has not been acknowledged, so the leg first closes the channel and
waits for the caller to confirm the close (which it does only once it has every message before it).
Two aiortc peers in one process, on loopback.
"""

import asyncio
import json

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from agent.contracts.calls import CallDetails
from agent.media.call_channel import CallChannel
from personas.schema import Persona

pytestmark = pytest.mark.anyio

CALL = CallDetails(call_id="c1", tenant="acme", line="support", persona=Persona(role="Maya.", voice="NATF2"),
                   max_call_seconds=600)
FRAMES = 3000  # four minutes of speech at 12.5 frames a second: a transcript of about 60 kB


class Words:
    """A tokenizer whose every token starts a word of its own."""

    def piece_text(self, token: int) -> str:
        return f" word{token:05d}-of-the-agent"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def connected_pair() -> tuple[RTCPeerConnection, RTCPeerConnection, asyncio.Future, list[dict]]:
    """A caller that opens a data channel and keeps its messages, and the leg's side, connected."""
    caller, leg = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received: list[dict] = []
    caller.createDataChannel("call").on("message", lambda data: received.append(json.loads(data)))
    opened: asyncio.Future = asyncio.get_running_loop().create_future()
    leg.on("datachannel", opened.set_result)
    await caller.setLocalDescription(await caller.createOffer())
    await leg.setRemoteDescription(caller.localDescription)
    await leg.setLocalDescription(await leg.createAnswer())
    await caller.setRemoteDescription(leg.localDescription)
    return caller, leg, opened, received


async def test_the_last_message_of_a_long_call_arrives_before_the_connection_closes():
    caller, leg, opened, received = await connected_pair()
    try:
        data = await asyncio.wait_for(opened, 10)
        await asyncio.wait_for(_until(lambda: data.readyState == "open"), 10)
        channel = CallChannel(CALL, Words())
        channel.attach(data)
        for frame in range(FRAMES):
            channel.spoke(frame, frame)
        channel.ended("the caller hung up", "ended", {"caller_gaps": 0})

        await channel.close(timeout=5.0)
        await leg.close()  # what the leg does next: the SCTP association is aborted
        await asyncio.sleep(0.5)
    finally:
        await caller.close()
        await leg.close()

    kinds = [m["type"] for m in received]
    assert kinds.count("text") == FRAMES and kinds[-1] == "ended", kinds[-3:]
    assert len(received[-1]["transcript"]) > 50_000
    assert received[-1]["transcript"].split()[-1] == f"word{FRAMES - 1:05d}-of-the-agent"


async def test_closing_a_channel_the_caller_never_opened_returns_at_once():
    channel = CallChannel(CALL, Words())
    await asyncio.wait_for(channel.close(timeout=5.0), 0.1)


async def _until(check) -> None:
    while not check():
        await asyncio.sleep(0.01)
