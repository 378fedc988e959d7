"""WHIP signalling (RFC 9725) on `plexline serve` with the echo engine and one slot: an aiortc caller's
offer is answered with SDP and a session URL, DELETE hangs up, and every refusal has its status."""

import asyncio

import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from bench.webrtc_caller import RATE, WhipCall
from bench.serving import OPERATOR, serving

WHIP = "/tenants/acme/lines/support/whip"
SDP = {"Content-Type": "application/sdp"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving("echo", 1, tmp_path_factory.mktemp("serve")) as server:
        yield server


async def an_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    await pc.close()
    return offer


def test_an_offer_is_answered_with_sdp_and_a_session_url_and_delete_hangs_up(server):
    async def call():
        whip = WhipCall(server.url, OPERATOR, "acme", "support", np.zeros(RATE, np.float32))
        response = await whip.start()
        await asyncio.wait_for(whip.connected.wait(), 10)
        record = server.call("acme", response.headers["Location"].rsplit("/", 1)[1])
        busy = server.free_slots()
        hung_up = await whip.hang_up()
        return whip, response, record, busy, hung_up

    whip, response, record, busy, hung_up = asyncio.run(call())
    again = httpx.delete(whip.session_url, headers=server.operator)
    ended = server.call("acme", record["call_id"])

    assert response.status_code == 201 and response.headers["content-type"] == "application/sdp"
    assert response.headers["Location"] == f"{WHIP}/{record['call_id']}"
    assert response.text.startswith("v=0") and "a=candidate:" in response.text  # no trickle: all candidates
    assert (record["state"], record["caller"], record["callee"]) == ("active", "webrtc:127.0.0.1", "+15555550100")
    assert busy == 0 and hung_up.status_code == 200 and again.status_code == 200
    assert (ended["state"], ended["reason"]) == ("ended", "the caller hung up")
    assert whip.messages_of("ended")[0]["reason"] == "the caller hung up"
    assert server.free_slots() == 1


def test_refusals(server):
    offer = asyncio.run(an_offer())
    post = lambda path=WHIP, headers=SDP, body=offer, token=OPERATOR: httpx.post(  # noqa: E731
        server.url + path, content=body, headers=headers | ({"Authorization": f"Bearer {token}"} if token else {}))

    assert post(token=None).status_code == 401
    assert post(token="not-a-token").status_code == 401
    assert post(path="/tenants/acme/lines/nope/whip").status_code == 404
    assert post(headers={"Content-Type": "application/json"}).status_code == 415
    assert post(body="v=0\r\n" + "a=x\r\n" * 20_000).status_code == 413

    bad = post(body="not sdp")
    assert bad.status_code == 400 and "not SDP" in bad.json()["detail"]
    assert server.free_slots() == 1 and httpx.get(server.url + "/calls", headers=server.operator).json() == []

    patch = httpx.patch(server.url + WHIP + "/x", content="a=end-of-candidates", headers=server.operator | SDP)
    assert patch.status_code == 405  # no trickle ICE, no ICE restart
    assert httpx.delete(server.url + WHIP + "/no-such-call", headers=server.operator).status_code == 404


def test_a_line_with_no_free_slot_refuses_with_retry_after(server):
    async def two_calls():
        first = WhipCall(server.url, OPERATOR, "acme", "support", np.zeros(RATE, np.float32))
        second = WhipCall(server.url, OPERATOR, "acme", "support", np.zeros(RATE, np.float32))
        answered = await first.start()
        refused = await second.start()
        await first.hang_up()
        return answered, refused

    answered, refused = asyncio.run(two_calls())
    assert answered.status_code == 201
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert server.free_slots() == 1
