"""The worker's WebRTC peer uses the STUN servers of its settings: a STUN server on loopback tells it
a public address (as one behind a NAT would be told), and that address is a candidate of its answer."""

from __future__ import annotations

import asyncio

import pytest
from aioice import stun
from test_webrtc import Caller, details, tone

from agent.contracts.settings import IceServer, MediaSettings
from agent.worker import Worker, echo_model

pytestmark = pytest.mark.anyio

PUBLIC = ("198.51.100.7", 40404)  # what the NAT in front of the worker would map it to


class StunServer(asyncio.DatagramProtocol):
    """Answers every Binding request with the same public address, and counts them."""

    def __init__(self) -> None:
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        request = stun.parse_message(data)
        if (request.message_method, request.message_class) != (stun.Method.BINDING, stun.Class.REQUEST):
            return
        self.requests += 1
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = PUBLIC
        self.transport.sendto(bytes(response), addr)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_worker_offers_the_address_its_stun_server_saw(tmp_path):
    transport, server = await asyncio.get_running_loop().create_datagram_endpoint(StunServer,
                                                                                 local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    settings = MediaSettings(webrtc_stun_urls=[f"stun:127.0.0.1:{port}"])
    assert settings.ice_servers() == [IceServer((f"stun:127.0.0.1:{port}",))]
    worker = Worker(echo_model(1), worker_id="w1", address="http://127.0.0.1:9", version="test",
                    ice_servers=settings.ice_servers())
    await worker.start()
    caller = Caller(tone(1.0))
    try:
        await worker.create_session(details("c1"))
        answer = await worker.answer_webrtc("c1", await caller.offer())
    finally:
        await caller.close()
        await worker.stop()
        transport.close()
    assert server.requests >= 1
    assert f"{PUBLIC[0]} {PUBLIC[1]} typ srflx" in answer, answer


def test_turn_servers_need_credentials_and_stun_urls_their_scheme():
    with pytest.raises(ValueError, match="need webrtc_turn_username and webrtc_turn_credential"):
        MediaSettings(webrtc_turn_urls=["turn:turn.example.com:3478"])
    with pytest.raises(ValueError, match="does not start with stun: or stuns:"):
        MediaSettings(webrtc_stun_urls=["turn:turn.example.com:3478"])
    turn = MediaSettings(webrtc_turn_urls=["turns:turn.example.com:5349"], webrtc_turn_username="plexline",
                         webrtc_turn_credential="s3cret")
    assert turn.ice_servers() == [IceServer(("turns:turn.example.com:5349",), "plexline", "s3cret")]
