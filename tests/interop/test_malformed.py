"""Broken and hostile SIP on the endpoint while a real call is in progress on it.

Each message of the corpus gets the answer it deserves or none; RFC 4475's torture messages
follow, then hypothesis throws a few hundred mutated datagrams; a flood of bad requests from one
source is cut off without touching other sources. Through all of it sipp's call keeps its audio:
the returned RTP stays paced and in order, and holds the echo of the caller's speech from start to
end.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sip_service import (
    LoopbackCapture,
    check_echo,
    free_udp_port,
    run_sipp,
    speech,
    write_rtp_pcap,
)
from test_sipp import ACME, capturing, check_stream, mulaw, rtp_to

from bench.sip_corpus import INVITE, MALFORMED
from telephony.sip.rate_limit import SourceLimiter

pytestmark = pytest.mark.anyio
RFC4475 = Path(__file__).parents[1] / "telephony" / "sip" / "rfc4475"  # the torture messages
OPTIONS = (b"OPTIONS sip:+15555550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5099;branch=z9hG4bK-%s\r\n"
           b"From: <sip:probe@127.0.0.3>;tag=1\r\nTo: <sip:+15555550100@127.0.0.1>\r\nCall-ID: %s\r\n"
           b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def udp_from(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def answers(sock: socket.socket, seconds: float, call_id: bytes | None = None) -> list[int]:
    """Statuses of the responses (to `call_id`, if given; b"": those with no Call-ID, answers to requests
    that had none) that reach `sock` within `seconds`."""
    loop = asyncio.get_running_loop()
    statuses, deadline = [], loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
        except TimeoutError:
            break
        ours = b"\r\nCall-ID: %s\r\n" % call_id in data if call_id else b"\r\nCall-ID:" not in data
        if data.startswith(b"SIP/2.0 ") and (call_id is None or ours):
            statuses.append(int(data[8:11]))
    return statuses


def unique(data: bytes, i: int) -> bytes:
    """A message of the corpus made a new transaction (its own branch and Call-ID)."""
    return data.replace(b"z9hG4bK-1-0", b"z9hG4bK-m%d" % i).replace(b"1-12345@127.0.0.1", b"m%d@test" % i)


async def call_with_audio(service, tmp_path, seconds: float):
    """sipp's call (speech for `seconds`) as a task, its media port, the speech and the capture."""
    pcm = speech(seconds)
    pcap = write_rtp_pcap(tmp_path / "speech.pcap", pcm)
    media_port = free_udp_port(pair=True)
    capture = LoopbackCapture()
    call = asyncio.ensure_future(capturing(capture, run_sipp(
        service.sip_port, "uac_pcap.xml", tmp_path / "sipp", ACME, media_port=media_port,
        substitutions={"PCAP_FILE": pcap, "TALK_MS": int(seconds * 1000) + 600})))
    while not service.worker.sessions:
        await asyncio.sleep(0.02)
    return call, media_port, pcm, capture


def check_call_kept_its_audio(capture: LoopbackCapture, media_port: int, pcm: np.ndarray, seconds: float) -> None:
    returned = rtp_to(capture.packets, media_port)
    check_stream(returned)
    assert len(returned) >= seconds * 50
    sent = [p for p in capture.packets if p.source[1] == media_port]
    audio = mulaw([p.payload for _, p, _ in returned])
    offset = int(round((returned[0][0] - sent[0].at) * 8000))
    aligned = np.concatenate([np.zeros(max(offset, 0), np.int16), audio])
    check_echo(pcm, aligned, low=0.16, high=0.4)  # from start to end, through the barrage


def mutated_invites():
    position = st.integers(0, len(INVITE))
    return st.one_of(
        st.binary(max_size=1500),
        st.tuples(position, st.binary(min_size=1, max_size=16)).map(lambda t: INVITE[:t[0]] + t[1] + INVITE[t[0] + len(t[1]):]),
        st.tuples(position, st.binary(max_size=200)).map(lambda t: INVITE[:t[0]] + t[1] + INVITE[t[0]:]),
        position.map(lambda n: INVITE[:n]),
    )


async def test_broken_messages_get_their_answer_or_none_and_the_call_keeps_its_audio(service, tmp_path):
    service.plane.sip.limiter = SourceLimiter(rate=5, burst=10_000)  # this test counts every answer
    fuzzed: list[bytes] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mutated_invites())
    def generate(data: bytes) -> None:
        fuzzed.append(data[:65000])

    generate()  # before the call: the fuzzer's own work must not starve the call's event loop
    call, media_port, pcm, capture = await call_with_audio(service, tmp_path, 6.0)
    sock = udp_from("127.0.0.2")
    destination = ("127.0.0.1", service.sip_port)
    wrong = {}
    for i, (name, (data, expected)) in enumerate(MALFORMED.items()):
        message, call_id = unique(data, i), b"m%d@test" % i
        sock.sendto(message, destination)
        call_id = call_id if call_id in message else b""
        finals = [s for s in await answers(sock, 0.1, call_id) if s >= 200]  # (a 4xx to an INVITE is
        finals = finals[:1]  # resent until its ACK: the first is the answer)
        if finals != ([expected] if expected else []):
            wrong[name] = finals
    assert not wrong, wrong
    for path in sorted(RFC4475.glob("*.dat")):  # their answers are checked in tests/telephony/sip/test_rfc4475.py
        sock.sendto(path.read_bytes(), destination)
    for i, data in enumerate(fuzzed):
        sock.sendto(data, destination)
        if i % 20 == 0:
            await asyncio.sleep(0.005)
    await answers(sock, 0.5)
    reader, writer = await asyncio.open_connection(*destination)  # a stream that cannot be framed is closed
    writer.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nCall-ID: y\r\n\r\n")
    assert await asyncio.wait_for(reader.read(100), 2) == b""
    writer.close()
    run = await call
    run.check()
    check_call_kept_its_audio(capture, media_port, pcm, 6.0)
    probe = udp_from("127.0.0.3")
    probe.sendto(OPTIONS % (b"after", b"after"), destination)
    assert await answers(probe, 1.0) == [200]
    assert await service.wait_idle()


async def test_a_flood_of_bad_requests_is_cut_off_per_source_and_calls_go_on(service, tmp_path):
    limiter = service.plane.sip.limiter
    call, media_port, pcm, capture = await call_with_audio(service, tmp_path, 4.0)
    flood = udp_from("127.0.0.2")
    bad = MALFORMED["Max-Forwards not a number"][0]
    for i in range(300):
        flood.sendto(unique(bad, i), ("127.0.0.1", service.sip_port))
        if i % 30 == 0:
            await asyncio.sleep(0.01)
    flood.sendto(OPTIONS % (b"f1", b"f1"), ("127.0.0.1", service.sip_port))
    statuses = await answers(flood, 1.0)
    assert 200 in statuses  # its source address may be forged: a good request from it is still served
    refused = [s for s in statuses if s == 400]  # but its bad ones go unanswered beyond the allowance
    assert limiter.burst <= len(refused) <= limiter.burst + limiter.rate, len(refused)
    probe = udp_from("127.0.0.3")
    probe.sendto(OPTIONS % (b"p1", b"p1"), ("127.0.0.1", service.sip_port))
    assert await answers(probe, 1.0) == [200]  # the others are not
    (await call).check()
    check_call_kept_its_audio(capture, media_port, pcm, 4.0)
