"""What one SIP source can make the server do: no amplification, no monopoly of TCP connections."""

import asyncio
import socket

import pytest

from tests.interop.test_malformed import answers, udp_from

pytestmark = pytest.mark.anyio

INVITE = (b"INVITE sip:+15555550199@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5099;branch=z9hG4bK-r1\r\n"
          b"Max-Forwards: 70\r\nFrom: <sip:x@127.0.0.2>;tag=r1\r\nTo: <sip:+15555550199@127.0.0.1>\r\n"
          b"Call-ID: reflect-1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.2:5099>\r\n"
          b"Content-Length: 0\r\n\r\n")


async def test_a_refused_invite_is_answered_once_unless_it_is_sent_again(service):
    """An INVITE for no line, never acknowledged: one 404, no 100 and no timer-G copies (a forged
    source would make them an amplifier); a copy of the INVITE gets one copy of the answer."""
    caller = udp_from("127.0.0.2")
    caller.sendto(INVITE, ("127.0.0.1", service.sip_port))
    assert await answers(caller, 4.0, b"reflect-1@test") == [404]
    caller.sendto(INVITE, ("127.0.0.1", service.sip_port))
    assert await answers(caller, 2.0, b"reflect-1@test") == [404]


async def test_one_source_holds_at_most_its_share_of_sip_tcp_connections(service):
    loop = asyncio.get_running_loop()
    held = []
    for _ in range(service.plane.sip.transport.max_per_source):
        held.append(await asyncio.open_connection("127.0.0.1", service.sip_port, local_addr=("127.0.0.2", 0)))
    reader, writer = await asyncio.open_connection("127.0.0.1", service.sip_port, local_addr=("127.0.0.2", 0))
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed at once
    other = socket.create_connection(("127.0.0.1", service.sip_port), source_address=("127.0.0.3", 0))
    other.sendall(b"OPTIONS sip:+15555550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.3:5099;branch=z9hG4bK-t1"
                  b"\r\nMax-Forwards: 70\r\nFrom: <sip:x@127.0.0.3>;tag=t1\r\nTo: <sip:+15555550100@127.0.0.1>\r\n"
                  b"Call-ID: tcp-1@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    other.setblocking(False)
    assert (await asyncio.wait_for(loop.sock_recv(other, 65535), 2)).startswith(b"SIP/2.0 200")
    other.close()
    for _, w in held:
        w.close()
    writer.close()
