"""Trunks that encrypt: real peers call over SIP over TLS and offer SRTP keyed by SDES (RFC 4568),
and hear their echo; trunks that require either refuse what is not."""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from certificates import Certificates, make_certificates
from sip_service import (
    LoopbackCapture,
    Service,
    check_echo,
    free_udp_port,
    run_baresip,
    run_sipp,
    running_service,
    speech,
    write_rtp_pcap,
    write_wav,
)
from test_baresip import read_wav
from test_sipp import capturing, check_stream, mulaw, rtp_to

pytestmark = pytest.mark.anyio

ACME, UMBRELLA = "+15555550100", "+15555550400"  # umbrella's trunk requires SRTP
WAYNE = "+15555550500"  # TLS with the client certificate of pbx.wayne.example, and SRTP


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certificates", client_names=("pbx.wayne.example", "pbx.acme.example"))


@pytest.fixture
async def tls_service(tmp_path: Path, certificates: Certificates) -> AsyncIterator[Service]:
    async with running_service(tmp_path / "service", sip_tls_certificate=certificates.server.certificate,
                               sip_tls_key=certificates.server.key, sip_tls_client_ca=certificates.ca,
                               sip_tls_port=0) as running:
        yield running


async def test_baresip_over_tls_with_srtp_and_its_client_certificate_hears_its_speech_back(
        tls_service, tmp_path, certificates):
    wav = write_wav(tmp_path / "caller.wav", speech(6.0))
    returncode, output = await run_baresip(tmp_path / "baresip", WAYNE, tls_service.plane.sip.transport.tls_port,
                                           wav, seconds=10, mediaenc="srtp-mand", uri_params=";transport=tls",
                                           ca=certificates.ca, certificate=certificates.clients["pbx.wayne.example"].pem)
    assert returncode == 0, output[-3000:]
    assert "transport=tls" in output and "terminated (duration: 6 secs)" in output, output[-3000:]
    assert "SRTP is Enabled" in output, output[-3000:]
    assert await tls_service.wait_idle()  # its BYE came over the TLS connection
    sent = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-enc.wav")))[0]
    heard = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-dec.wav")))[0]
    check_echo(sent, heard)


@pytest.mark.parametrize("dialled", [ACME, UMBRELLA])
async def test_baresip_offering_srtp_gets_srtp_and_hears_its_speech_back(service, tmp_path, dialled):
    wav = write_wav(tmp_path / "caller.wav", speech(6.0))
    returncode, output = await run_baresip(tmp_path / "baresip", dialled, service.sip_port, wav, seconds=10,
                                           mediaenc="srtp-mand")
    assert returncode == 0, output[-2000:]
    assert "terminated (duration: 6 secs)" in output, output[-3000:]
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in output, output[-3000:]
    assert await service.wait_idle()
    sent = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-enc.wav")))[0]
    heard = read_wav(next((tmp_path / "baresip" / "dumps").glob("*-dec.wav")))[0]
    assert heard.size > 5 * 8000
    check_echo(sent, heard)  # decrypted by baresip with the key of our answer, and authenticated


async def test_a_plain_rtp_offer_to_a_trunk_that_requires_srtp_is_refused_with_488(service, tmp_path):
    run = await run_sipp(service.sip_port, "refused.xml", tmp_path, UMBRELLA, substitutions={"STATUS": 488})
    run.check()
    assert not await service.registry.calls()


def invite(dialled: str, transport: str, port: int, scheme: str = "sip", call_id: str = "") -> bytes:
    sdp = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           b"m=audio 40000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b"A" * 40 + b"\r\n")
    head = (f"INVITE {scheme}:{dialled}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 127.0.0.1:5099;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:pbx@127.0.0.1>;tag=1\r\nTo: <{scheme}:{dialled}@127.0.0.1>\r\n"
            f"Call-ID: {call_id or secrets.token_hex(8)}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <{scheme}:pbx@127.0.0.1:5099>\r\n"
            f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n")
    return head.encode() + sdp


async def read_final(reader: asyncio.StreamReader) -> str:
    """The head of the next final response (provisional ones are skipped)."""
    while True:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        length = int(re.search(r"(?im)^content-length:\s*(\d+)", head).group(1))
        await reader.readexactly(length)
        if not head.startswith("SIP/2.0 1"):
            return head


async def final_response(port: int, request: bytes, tls: ssl.SSLContext | None) -> str:
    """The first final response to `request` sent over a TCP (or TLS) connection of its own."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(request)
    try:
        return await read_final(reader)
    finally:
        writer.close()


def header(head: str, name: str) -> str:
    return re.search(rf"(?im)^{name}:\s*(.+?)\r$", head).group(1)


@pytest.mark.parametrize("scheme, contact", [("sip", "<sip:+15555550100@127.0.0.1:{port};transport=tls>"),
                                             ("sips", "<sips:+15555550100@127.0.0.1:{port}>")])
async def test_over_tls_the_answer_names_tls_and_the_callers_bye_comes_the_same_way(
        tls_service, certificates, scheme, contact):
    port = tls_service.plane.sip.transport.tls_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                   ssl=ssl.create_default_context(cafile=certificates.ca))
    call_id = secrets.token_hex(8)
    try:
        writer.write(invite(ACME, "TLS", port, scheme, call_id))
        ok = await read_final(reader)
        assert ok.startswith("SIP/2.0 200") and header(ok, "Contact") == contact.format(port=port), ok
        to = header(ok, "To")
        for method, number in (("ACK", 1), ("BYE", 2)):
            writer.write((f"{method} {contact.format(port=port)[1:-1]} SIP/2.0\r\n"
                          f"Via: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                          f"From: <sip:pbx@127.0.0.1>;tag=1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
                          f"CSeq: {number} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
        assert (await read_final(reader)).startswith("SIP/2.0 200")  # the BYE's answer
    finally:
        writer.close()
    assert await tls_service.wait_idle()


@pytest.mark.parametrize("how, refusal", [
    ("tcp", "this trunk requires SIP over TLS"),
    ("tls without a client certificate", "a client certificate: none was presented"),
    ("tls with another name", "names none of this trunk's tls_client_names"),
])
async def test_a_trunk_that_requires_tls_and_a_client_certificate_refuses_calls_without_them(
        tls_service, tmp_path, certificates, how, refusal):
    transport = tls_service.plane.sip.transport
    tls = None
    if how != "tcp":
        tls = ssl.create_default_context(cafile=certificates.ca)
        if how == "tls with another name":  # signed by the same CA, so it passes the handshake
            other = certificates.clients["pbx.acme.example"]
            tls.load_cert_chain(other.certificate, other.key)
    port = transport.port if tls is None else transport.tls_port
    response = await final_response(port, invite(WAYNE, "TLS" if tls else "TCP", port), tls)
    assert response.startswith("SIP/2.0 403") and refusal in response, response
    assert not await tls_service.registry.calls()


@asynccontextmanager
async def tls_relay(port: int, tls: ssl.SSLContext) -> AsyncIterator[int]:
    """A local TCP port whose connections are carried over TLS to `port`, as stunnel does: the sipp
    packaged here is built without OpenSSL, so it speaks SIP over TCP to this and the wire is TLS."""
    pipes: set[asyncio.Task] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        for task in (asyncio.ensure_future(pipe(reader, upstream_writer)),
                     asyncio.ensure_future(pipe(upstream_reader, writer))):
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(carry, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()
        if pipes:
            await asyncio.wait(list(pipes))


async def test_sipp_over_tls_places_a_call_whose_speech_echoes_back(tls_service, tmp_path, certificates):
    pcm = speech(3.0)
    pcap = write_rtp_pcap(tmp_path / "speech.pcap", pcm)
    media_port = free_udp_port(pair=True)
    capture = LoopbackCapture()
    tls = ssl.create_default_context(cafile=certificates.ca)
    async with tls_relay(tls_service.plane.sip.transport.tls_port, tls) as relay_port:
        run = await capturing(capture, run_sipp(relay_port, "uac_pcap.xml", tmp_path / "sipp", ACME, transport="t1",
                                                media_port=media_port,
                                                substitutions={"PCAP_FILE": pcap, "TALK_MS": 3600}))
    run.check()
    assert await tls_service.wait_idle()  # its BYE came over TLS
    returned = rtp_to(capture.packets, media_port)
    check_stream(returned)
    sent = [p for p in capture.packets if p.source[1] == media_port]
    offset = round((returned[0][0] - sent[0].at) * 8000)
    audio = mulaw([p.payload for _, p, _ in returned])
    check_echo(pcm, np.concatenate([np.zeros(max(offset, 0), np.int16), audio]), low=0.16, high=0.4)


async def test_over_tls_the_services_bye_goes_over_the_callers_connection_with_a_tls_via(tls_service, certificates):
    port = tls_service.plane.sip.transport.tls_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                   ssl=ssl.create_default_context(cafile=certificates.ca))
    call_id = secrets.token_hex(8)
    try:
        writer.write(invite(ACME, "TLS", port, "sip", call_id))
        ok = await read_final(reader)
        assert ok.startswith("SIP/2.0 200"), ok
        writer.write((f"ACK sip:{ACME}@127.0.0.1:{port};transport=tls SIP/2.0\r\n"
                      f"Via: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                      f"From: <sip:pbx@127.0.0.1>;tag=1\r\nTo: {header(ok, 'To')}\r\nCall-ID: {call_id}\r\n"
                      "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
        [record] = await tls_service.registry.calls()
        await tls_service.plane.router.end(record, "ended by an admin")
        bye = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
        assert bye.startswith("BYE sip:pbx@127.0.0.1:5099 SIP/2.0"), bye
        assert header(bye, "Via").startswith(f"SIP/2.0/TLS 127.0.0.1:{port};"), bye
        assert header(bye, "Contact") == f"<sip:{ACME}@127.0.0.1:{port};transport=tls>", bye
        vias = "".join(f"Via: {v}\r\n" for v in re.findall(r"(?im)^via:\s*(.+?)\r$", bye))
        writer.write((f"SIP/2.0 200 OK\r\n{vias}From: {header(bye, 'From')}\r\nTo: {header(bye, 'To')}\r\n"
                      f"Call-ID: {call_id}\r\nCSeq: {header(bye, 'CSeq')}\r\nContent-Length: 0\r\n\r\n").encode())
    finally:
        writer.close()
    assert await tls_service.wait_idle()
