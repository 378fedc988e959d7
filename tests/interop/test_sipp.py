"""sipp as a real SIP peer of the control plane's SIP server, with the echo worker behind it."""

from __future__ import annotations

import asyncio
from collections import Counter

import av
import numpy as np
import pytest
from aiortc.rtp import RtpPacket
from sip_service import (
    DIGEST_PASSWORD,
    DIGEST_USER,
    Captured,
    LoopbackCapture,
    check_echo,
    free_udp_port,
    run_sipp,
    speech,
    write_rtp_pcap,
)

pytestmark = pytest.mark.anyio
ACME = "+15555550100"
GLOBEX = "+15555550200"


async def capturing(capture: LoopbackCapture, coroutine):
    task = asyncio.ensure_future(coroutine)
    while not task.done():
        capture.drain()
        await asyncio.sleep(0.005)
    capture.drain()
    return task.result()


def rtp_to(packets: list[Captured], port: int) -> list[tuple[float, RtpPacket, tuple[str, int]]]:
    out = []
    for p in packets:
        if p.destination[1] == port and len(p.payload) >= 12 and p.payload[0] >> 6 == 2 and p.payload[1] & 0x7F < 64:
            out.append((p.at, RtpPacket.parse(p.payload), p.source))
    return out


def mulaw(payloads: list[bytes]) -> np.ndarray:
    decoder = av.CodecContext.create("pcm_mulaw", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "mono", 8000
    return np.concatenate([f.to_ndarray().reshape(-1) for p in payloads for f in decoder.decode(av.Packet(p))])


def check_stream(stream: list[tuple[float, RtpPacket, tuple[str, int]]], payload_type: int = 0) -> None:
    """One SSRC, consecutive sequence numbers, 160 timestamp units apart, about 50 packets a second."""
    packets = [p for _, p, _ in stream]
    assert {p.payload_type for p in packets} == {payload_type}
    assert len({p.ssrc for p in packets}) == 1
    assert all((b.sequence_number - a.sequence_number) & 0xFFFF == 1 for a, b in zip(packets, packets[1:]))
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in zip(packets, packets[1:]))
    assert all(len(p.payload) == 160 for p in packets)
    seconds = stream[-1][0] - stream[0][0]
    rate = (len(stream) - 1) / seconds
    assert 47 <= rate <= 53, f"{rate:.1f} packets/s"


async def test_a_call_is_answered_its_speech_echoed_in_paced_rtp_and_hung_up(service, tmp_path):
    pcm = speech(4.0)
    pcap = write_rtp_pcap(tmp_path / "speech.pcap", pcm)
    media_port = free_udp_port(pair=True)
    capture = LoopbackCapture()
    run = await capturing(capture, run_sipp(service.sip_port, "uac_pcap.xml", tmp_path / "sipp", ACME,
                                            media_port=media_port,
                                            substitutions={"PCAP_FILE": pcap, "TALK_MS": 4600}))
    run.check()
    assert await service.wait_idle()  # the caller's BYE freed the slot
    returned = rtp_to(capture.packets, media_port)
    sent = [p for p in capture.packets if p.source[1] == media_port]
    assert len(returned) >= 4 * 50, len(returned)
    assert {source for _, _, source in returned} == {(sent[0].destination[0], sent[0].destination[1])}  # symmetric
    check_stream(returned)
    audio = mulaw([p.payload for _, p, _ in returned])
    offset = int(round((returned[0][0] - sent[0].at) * 8000))
    check_echo(pcm, np.concatenate([np.zeros(max(offset, 0), np.int16), audio]), low=0.16, high=0.4)  # aligned
    assert np.sqrt(np.mean(audio[8000:].astype(np.float64) ** 2)) > 300  # not silence


async def test_cancel_before_the_answer_gets_487_and_frees_the_slot(service, tmp_path, monkeypatch):
    place = service.plane.router.place

    async def slow_place(*args, **kwargs):  # a worker that takes its time: the caller gives up first
        await asyncio.sleep(1.0)
        return await place(*args, **kwargs)

    monkeypatch.setattr(service.plane.router, "place", slow_place)
    run = await run_sipp(service.sip_port, "cancel.xml", tmp_path, ACME)
    run.check()
    await asyncio.sleep(1.2)
    assert await service.wait_idle()


def losing_a_cancellation(place):
    """`place` that holds the slot when the CANCEL comes, and then loses the cancellation, as Python
    3.11's asyncio.wait_for does when what it waits on is done by then (agent.contracts.tasks)."""
    async def placed(*args, **kwargs):
        record = await place(*args, **kwargs)
        try:
            await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            pass
        return record

    return placed


async def test_cancel_whose_cancellation_is_lost_still_ends_the_setup(service, tmp_path, monkeypatch):
    monkeypatch.setattr(service.plane.router, "place", losing_a_cancellation(service.plane.router.place))
    run = await run_sipp(service.sip_port, "cancel.xml", tmp_path, ACME)
    run.check()
    assert await service.wait_idle()  # not answered, its slot freed: no call held for a caller who hung up


async def test_cancel_whose_cancellation_is_lost_is_cancelled_again_before_the_media_leg(service, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setattr(service.plane.router, "place", losing_a_cancellation(service.plane.router.place))
    set_rtp, opened = service.plane.sip.workers.set_rtp, []

    async def slow_set_rtp(*args, **kwargs):  # a worker that takes its time to open the leg
        await asyncio.sleep(3.0)
        opened.append(await set_rtp(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(service.plane.sip.workers, "set_rtp", slow_set_rtp)
    run = await run_sipp(service.sip_port, "cancel.xml", tmp_path, ACME)
    run.check()
    assert await service.wait_idle()
    await asyncio.sleep(3.0)  # past the leg's opening, were the setup still going
    assert opened == []


async def test_digest_challenge_then_the_call_with_credentials(service, tmp_path):
    run = await run_sipp(service.sip_port, "digest.xml", tmp_path, GLOBEX,
                         extra=("-au", DIGEST_USER, "-ap", DIGEST_PASSWORD))
    run.check()
    assert await service.wait_idle()


async def test_wrong_digest_password_is_refused(service, tmp_path):
    run = await run_sipp(service.sip_port, "digest_refused.xml", tmp_path, GLOBEX,
                         extra=("-au", DIGEST_USER, "-ap", "wrong-password"))
    run.check()  # challenged again, never answered
    assert not await service.registry.calls()


async def test_options_keepalive_over_udp_and_tcp(service, tmp_path):
    (await run_sipp(service.sip_port, "options.xml", tmp_path / "udp", ACME)).check()
    (await run_sipp(service.sip_port, "options.xml", tmp_path / "tcp", ACME, transport="t1")).check()


async def test_a_call_over_tcp(service, tmp_path):
    pcap = write_rtp_pcap(tmp_path / "speech.pcap", speech(1.0))
    run = await run_sipp(service.sip_port, "uac_pcap.xml", tmp_path, ACME, transport="t1",
                         substitutions={"PCAP_FILE": pcap, "TALK_MS": 1200})
    run.check()
    assert await service.wait_idle()


async def test_twenty_calls_at_once_each_get_their_audio(service, tmp_path):
    pcap = write_rtp_pcap(tmp_path / "speech.pcap", speech(3.0))
    media_port = free_udp_port(pair=True)
    capture = LoopbackCapture()
    peak = 0

    async def count_calls():
        nonlocal peak
        while True:
            peak = max(peak, len(service.worker.sessions))
            await asyncio.sleep(0.05)

    counter = asyncio.ensure_future(count_calls())
    try:
        run = await capturing(capture, run_sipp(service.sip_port, "uac_pcap.xml", tmp_path, ACME, calls=20,
                                                media_port=media_port,
                                                substitutions={"PCAP_FILE": pcap, "TALK_MS": 3500}))
    finally:
        counter.cancel()
    run.check()
    assert peak == 20
    assert await service.wait_idle()
    per_leg = Counter(source for _, _, source in rtp_to(capture.packets, media_port))
    assert len(per_leg) == 20
    assert min(per_leg.values()) >= 3 * 50, per_leg


async def test_hold_and_resume_with_reinvites(service, tmp_path):
    capture = LoopbackCapture()
    run = await capturing(capture, run_sipp(service.sip_port, "hold_resume.xml", tmp_path, ACME))
    run.check()
    answers = [p.payload.decode(errors="replace") for p in capture.packets
               if p.source[1] == service.sip_port and p.payload.startswith(b"SIP/2.0 200") and b"v=0" in p.payload]
    directions = [next(line for line in a.split("\r\n") if line in ("a=sendrecv", "a=recvonly")) for a in answers]
    assert directions == ["a=sendrecv", "a=recvonly", "a=sendrecv"]
    versions = [next(line for line in a.split("\r\n") if line.startswith("o=")).split()[2] for a in answers]
    assert versions == sorted(set(versions), key=int)  # each new answer has a higher version
    assert await service.wait_idle()


async def test_the_service_hangs_up_when_the_callers_rtp_stops(service, tmp_path):
    run = await run_sipp(service.sip_port, "wait_bye.xml", tmp_path, ACME, timeout=20)  # RTP timeout: 5 s
    run.check()
    assert await service.wait_idle()


async def test_an_admin_ends_the_call_and_the_caller_gets_a_bye(service, tmp_path):
    sipp = asyncio.ensure_future(run_sipp(service.sip_port, "wait_bye.xml", tmp_path, ACME, timeout=20))
    while not await service.registry.calls():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    record = (await service.registry.calls())[0]
    await service.plane.router.end(record, "ended by an admin")
    (await asyncio.wait_for(sipp, 5)).check()
    assert await service.wait_idle()


async def test_dtmf_0_transfers_the_caller_with_refer(service, tmp_path):
    capture = LoopbackCapture()
    run = await capturing(capture, run_sipp(service.sip_port, "transfer.xml", tmp_path, ACME, substitutions={
        "PCAP_FILE": "/usr/share/sip-tester/dtmf_2833_0.pcap"}))
    run.check()
    refer = next(p.payload.decode() for p in capture.packets if p.payload.startswith(b"REFER "))
    assert "Refer-To: <sip:+15555550199@127.0.0.1>" in refer
    assert await service.wait_idle()


async def test_unknown_lines_and_untrusted_sources_are_refused(service, tmp_path):
    for dialled, status in (("+15550000000", 404), ("+15555550300", 403)):  # initech admits 127.0.0.2 only
        run = await run_sipp(service.sip_port, "refused.xml", tmp_path / dialled, dialled,
                             substitutions={"STATUS": status})
        run.check()
    assert not await service.registry.calls()


async def test_the_agent_hangs_up_at_the_lines_maximum_duration(service, tmp_path, monkeypatch):
    from personas.store import Route

    monkeypatch.setattr(Route, "max_call_seconds", property(lambda route: 1.5))  # the schema's least is 10 s
    started = asyncio.get_running_loop().time()
    (await run_sipp(service.sip_port, "wait_bye.xml", tmp_path, ACME, timeout=20)).check()
    assert 1.5 <= asyncio.get_running_loop().time() - started < 4.0
    assert await service.wait_idle()
