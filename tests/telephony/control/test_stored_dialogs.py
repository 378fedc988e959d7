"""The SIP dialogs the registry keeps for another control plane, the same for Redis and in memory:
what a BYE needs goes in and comes back whole, one taker gets it, and the ended calls' ones are found."""

import asyncio

import pytest

from agent.contracts.workers import WorkerInfo
from telephony.control.registry import NewCall, StoredDialog
from telephony.sip.dialog import Dialog
from telephony.sip.message import parse_message
from telephony.sip.transport import Peer

pytestmark = pytest.mark.anyio

INVITE = (
    b"INVITE sip:+15555550100@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK-1;rport\r\n"
    b"From: \"Ann\" <sip:ann@10.0.0.7>;tag=caller-tag\r\n"
    b"To: <sip:+15555550100@127.0.0.1>\r\n"
    b"Call-ID: a-call@10.0.0.7\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:ann@10.0.0.7:5070>\r\n"
    b"Record-Route: <sip:10.0.0.1;lr>\r\n"
    b"Record-Route: <sip:10.0.0.2;lr>\r\n"
    b"Content-Length: 0\r\n\r\n")
REINVITE = INVITE.replace(b"CSeq: 7", b"CSeq: 8").replace(b"10.0.0.7:5070>", b"10.0.0.9:5080>")


def answered() -> Dialog:
    return Dialog.answering(parse_message(INVITE), "our-tag", Peer("UDP", "10.0.0.7", 5070),
                            "<sip:+15555550100@127.0.0.1:5060;transport=udp>")


async def in_progress(registry, call_id: str) -> None:
    await registry.heartbeat(WorkerInfo("w1", "http://127.0.0.1:9/w1", 2, "echo", "0.1.0"), 5.0, [])
    await registry.reserve(NewCall(call_id, "acme", "support", "+15555550999", "+15555550100", 10))


async def test_a_stored_dialog_comes_back_whole_and_sends_the_same_bye(registry):
    dialog = answered()
    dialog.local_cseq = 41
    await registry.put_dialog(StoredDialog("a-call@10.0.0.7:our-tag", "call-1", dialog.dumps()), 60)

    stored = await registry.take_dialog("a-call@10.0.0.7:our-tag")

    assert (stored.dialog, stored.call_id) == ("a-call@10.0.0.7:our-tag", "call-1")
    restored = Dialog.loads(stored.state)
    assert restored == dialog
    bye = restored.request("BYE", "127.0.0.1", 5060)
    assert bye.uri == "sip:ann@10.0.0.7:5070"
    assert bye.headers.get("CSeq") == "42 BYE"
    assert bye.headers.get_all("Route") == ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"]
    assert (bye.headers.get("From"), bye.headers.get("To")) == ("<sip:+15555550100@127.0.0.1>;tag=our-tag",
                                                                "\"Ann\" <sip:ann@10.0.0.7>;tag=caller-tag")
    assert restored.destination() == Peer("UDP", "10.0.0.1", 5060)  # the first route


async def test_a_target_refresh_is_stored_and_a_taken_dialog_is_gone(registry):
    dialog = answered()
    await registry.put_dialog(StoredDialog("d", "call-1", dialog.dumps()), 60)

    assert dialog.refresh_target(parse_message(REINVITE))
    assert await registry.update_dialog("d", dialog.dumps())

    assert Dialog.loads((await registry.take_dialog("d")).state).remote_target == "sip:ann@10.0.0.9:5080"
    assert await registry.take_dialog("d") is None
    assert not await registry.update_dialog("d", dialog.dumps())  # not brought back


async def test_of_control_planes_taking_one_dialog_at_once_one_gets_it(registry):
    await registry.put_dialog(StoredDialog("d", "call-1", answered().dumps()), 60)

    taken = await asyncio.gather(*(registry.take_dialog("d") for _ in range(8)))

    assert sum(t is not None for t in taken) == 1


async def test_the_dialogs_of_ended_calls_are_found_and_expired_ones_forgotten(registry):
    await in_progress(registry, "up")
    await in_progress(registry, "down")
    for name in ("up", "down", "brief"):
        await registry.put_dialog(StoredDialog(f"dialog-{name}", name, answered().dumps()), 0.2 if name == "brief" else 60)

    await registry.release("down", "ended", "ended by an admin")

    assert sorted(await registry.ended_dialogs()) == ["dialog-brief", "dialog-down"]  # no call "brief" at all
    await asyncio.sleep(0.3)
    assert await registry.ended_dialogs() == ["dialog-down"]
    assert await registry.take_dialog("dialog-brief") is None
