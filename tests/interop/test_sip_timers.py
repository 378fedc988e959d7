"""UDP's retransmission rules, seen from a bare UDP peer: a resent INVITE is one call, the 200 OK is
resent until its ACK (at T1, 2xT1, 4xT1...), a BYE is answered once however often it comes."""

from __future__ import annotations

import asyncio

import pytest
from test_malformed import udp_from

from bench.sip_corpus import invite

pytestmark = pytest.mark.anyio


class Inbox:
    """Every datagram that reaches `sock`, with the time it came, read as it comes."""

    def __init__(self, sock):
        self.sock, self.messages = sock, []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65535)
            self.messages.append((loop.time(), data))

    def since(self, start: float, prefix: bytes) -> list[tuple[float, bytes]]:
        return [(at, m) for at, m in self.messages if at >= start and m.startswith(prefix)]


def in_dialog(method: str, cseq: int, to_tag: bytes, branch: bytes) -> bytes:
    return (b"%s sip:+15555550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5099;branch=%s;rport\r\n"
            b'From: "sipp" <sip:sipp@127.0.0.2:5099>;tag=12345SIPpTag001\r\n'
            b"To: <sip:+15555550100@127.0.0.1:5060>;tag=%s\r\nCall-ID: t1@test\r\nCSeq: %d %s\r\n"
            b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n" % (method, branch, to_tag, cseq, method))


async def test_a_resent_invite_is_one_call_and_the_200_is_resent_until_the_ack(service):
    sock = udp_from("127.0.0.2")
    destination = ("127.0.0.1", service.sip_port)
    message = invite(call_id=b"t1@test", branch=b"z9hG4bK-t1")
    loop = asyncio.get_running_loop()
    inbox = Inbox(sock)
    start = loop.time()
    sock.sendto(message, destination)
    await asyncio.sleep(0.2)
    sock.sendto(message, destination)  # the caller did not hear back in time and sends it again
    await asyncio.sleep(2.0)
    oks = inbox.since(start, b"SIP/2.0 200")
    assert len(service.worker.sessions) == 1 and len(await service.registry.calls()) == 1
    after = [at - oks[0][0] for at, _ in oks]
    assert after == pytest.approx([0.0, 0.2, 0.5, 1.5], abs=0.1), after  # the answer, its replay for the resent INVITE, then T1, 2 x T1
    to_tag = oks[0][1].split(b"\r\nTo: ")[1].split(b"tag=")[1].split(b"\r\n")[0]
    sock.sendto(in_dialog(b"ACK", 1, to_tag, b"z9hG4bK-t1ack"), destination)
    acked = loop.time()
    await asyncio.sleep(2.5)
    assert not inbox.since(acked + 0.05, b"SIP/2.0 200")  # acknowledged: no more resending
    bye = in_dialog(b"BYE", 2, to_tag, b"z9hG4bK-t1bye")
    byes = loop.time()
    for _ in range(3):
        sock.sendto(bye, destination)
    await asyncio.sleep(0.5)
    assert len(inbox.since(byes, b"SIP/2.0 200")) == 3  # the same answer each time, one hang-up
    assert await service.wait_idle()
    inbox.task.cancel()
