"""The worker's RTP leg against a plain RTP peer on loopback, with the echo engine behind it."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiortc.rtp import RtcpPacket, RtcpSrPacket, RtpPacket

from agent.contracts.media import RtpLegSpec
from agent.engine.backend import CallSetup
from agent.engine.clock import EngineClock
from agent.engine.echo import EchoBackend
from agent.media.dtmf import DtmfEvent
from agent.media.g711 import g711_context
from agent.media.rtp_session import RtpSession
from bench.echo_latency import RtpCaller, echo_lag, encode, measure, speech_8k, srtp_key_pair

pytestmark = pytest.mark.anyio


async def bind(leg: RtpSession) -> None:
    for _ in range(50):
        try:
            return await leg.bind("127.0.0.1", random.randrange(40000, 50000, 2))
        except OSError:
            continue


class Peer(asyncio.DatagramProtocol):
    def __init__(self):
        self.received: list[bytes] = []

    def datagram_received(self, data, addr):
        self.received.append(data)


async def peer_endpoint():
    transport, peer = await asyncio.get_running_loop().create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    return transport, peer, transport.get_extra_info("sockname")[1]


async def test_the_echo_comes_back_aligned_through_the_leg():
    result = await measure(seconds=4.0)  # the benchmark prints the number; here it is only found and aligned
    found = [lag for lag, peak in result.windows if peak > 0.5]
    assert len(found) >= len(result.windows) - 1 and all(0.16 <= lag <= 0.4 for lag in found), result
    assert result.packets_received >= result.packets_sent


async def test_g722_comes_back_aligned_with_the_band_above_4_khz_that_g711_cannot_carry():
    wideband = await measure(seconds=4.0, codec="G722")
    found = [lag for lag, peak in wideband.windows if peak > 0.5]
    assert len(found) >= len(wideband.windows) - 1 and all(0.16 <= lag <= 0.4 for lag in found), wideband
    assert wideband.packets_received >= wideband.packets_sent
    assert wideband.high_band_returned > 0.5 * wideband.high_band_sent > 0.001  # a path through 8 kHz has none


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"])
async def test_the_echo_comes_back_over_srtp(suite):
    result = await measure(seconds=4.0, srtp=suite)  # the caller decrypts what comes back with the leg's key
    found = [lag for lag, peak in result.windows if peak > 0.5]
    assert len(found) >= len(result.windows) - 1 and all(0.16 <= lag <= 0.4 for lag in found), result
    assert result.packets_received >= result.packets_sent


async def test_an_srtp_leg_sends_nothing_in_the_clear_and_takes_nothing_unauthentic():
    leg_keys, caller_keys = srtp_key_pair("AES_CM_128_HMAC_SHA1_80")
    _, stranger_keys = srtp_key_pair("AES_CM_128_HMAC_SHA1_80")
    clock = EngineClock(EchoBackend(1))
    clock.start()
    loop = asyncio.get_running_loop()
    transport, peer, port = await peer_endpoint()
    rtcp_transport, rtcp_peer, rtcp_port = await peer_endpoint()
    leg = RtpSession(RtpLegSpec(remote_host="127.0.0.1", remote_port=port, remote_rtcp_port=rtcp_port, codec="PCMU",
                                payload_type=0, srtp=leg_keys))
    await bind(leg)
    slot = await clock.join(CallSetup())
    media = loop.create_task(leg.run(slot))
    encoder = g711_context("PCMU", "w")
    pcm = speech_8k(1.0)
    stranger, caller = RtpCaller("PCMU", stranger_keys).srtp, RtpCaller("PCMU", caller_keys).srtp
    for i in range(pcm.size // 160):
        plain = RtpPacket(payload_type=0, sequence_number=i, timestamp=i * 160, ssrc=7,
                          payload=encode(encoder, pcm[i * 160:(i + 1) * 160])).serialize()
        context = caller if i % 2 else stranger  # every other packet keyed by someone else
        transport.sendto(plain if i % 5 == 0 else context.protect(plain), leg.local)  # and some in the clear
        await asyncio.sleep(0.02)
    leg.send_report()
    await asyncio.sleep(0.1)
    media.cancel()
    await asyncio.wait([media])
    await clock.leave(slot)
    await clock.stop()
    transport.close()
    rtcp_transport.close()
    authentic = sum(1 for i in range(pcm.size // 160) if i % 2 and i % 5)
    assert leg.stats.packets_received == authentic and leg.stats.rejected == pcm.size // 160 - authentic
    rtp, rtcp = peer.received, rtcp_peer.received
    assert rtp and all(len(RtpPacket.parse(d).payload) == 160 + 10 for d in rtp)  # 80-bit tags on each
    assert [RtpPacket.parse(caller.unprotect(d)).payload_type for d in rtp[:3]] == [0, 0, 0]
    assert rtcp and isinstance(RtcpPacket.parse(caller.unprotect_rtcp(rtcp[-1]))[0], RtcpSrPacket)


async def test_lost_packets_are_concealed_and_the_speech_still_comes_back():
    clock = EngineClock(EchoBackend(1))
    clock.start()
    loop = asyncio.get_running_loop()
    transport, caller = await loop.create_datagram_endpoint(lambda: RtpCaller("PCMA"), local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    leg = RtpSession(RtpLegSpec(remote_host="127.0.0.1", remote_port=port, remote_rtcp_port=port + 1, codec="PCMA",
                                payload_type=8))
    await bind(leg)
    slot = await clock.join(CallSetup())
    media = loop.create_task(leg.run(slot))
    pcm = speech_8k(3.0)
    encoder = g711_context("PCMA", "w")
    start = loop.time()
    for i in range(pcm.size // 160):
        await asyncio.sleep(max(0.0, start + i * 0.02 - loop.time()))
        if i % 10 == 5:
            continue  # one packet in ten lost
        packet = RtpPacket(payload_type=8, sequence_number=i, timestamp=i * 160, ssrc=7,
                           payload=encode(encoder, pcm[i * 160:(i + 1) * 160]))
        transport.sendto(packet.serialize(), leg.local)
    await asyncio.sleep(0.5)
    media.cancel()
    await asyncio.wait([media])
    await clock.leave(slot)
    await clock.stop()
    transport.close()
    assert leg.jitter.stats.missing >= 14 and leg.stats.lost >= 14 and leg.bridge.gaps >= 14
    lag, peak = echo_lag(pcm, caller.received_audio())
    assert peak > 0.4, (lag, peak)


async def test_digits_are_reported_once_each_and_rtp_goes_where_the_caller_sends_from():
    clock = EngineClock(EchoBackend(1))
    clock.start()
    loop = asyncio.get_running_loop()
    decoy, decoy_peer, decoy_port = await peer_endpoint()  # the address in the SDP: nobody is there
    caller, caller_peer, _ = await peer_endpoint()  # where the caller really sends from (a NAT)
    digits = []
    leg = RtpSession(RtpLegSpec(remote_host="127.0.0.1", remote_port=decoy_port, remote_rtcp_port=decoy_port + 1,
                                codec="PCMU", payload_type=0, dtmf_payload_type=101), on_dtmf=digits.append)
    await bind(leg)
    slot = await clock.join(CallSetup())
    media = loop.create_task(leg.run(slot))
    silence = bytes([0xFF]) * 160
    seq = 0
    for digit_event, timestamp in ((5, 1600), (11, 4800)):
        for _ in range(10):
            caller.sendto(RtpPacket(payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=9,
                                    payload=silence).serialize(), leg.local)
            seq += 1
            await asyncio.sleep(0.02)
        for duration, end in ((160, False), (320, False), (480, True), (480, True), (480, True)):
            event = DtmfEvent(digit_event, end, 10, duration).serialise()
            caller.sendto(RtpPacket(payload_type=101, sequence_number=seq, timestamp=timestamp, ssrc=9,
                                    payload=event).serialize(), leg.local)
            seq += 1
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    media.cancel()
    await asyncio.wait([media])
    await clock.leave(slot)
    await clock.stop()
    assert digits == ["5", "#"]
    assert len(caller_peer.received) >= 20 and not decoy_peer.received  # symmetric RTP
    caller.close()
    decoy.close()


async def test_a_sender_report_describes_what_was_sent():
    clock = EngineClock(EchoBackend(1))
    clock.start()
    loop = asyncio.get_running_loop()
    rtp, rtp_peer, port = await peer_endpoint()
    rtcp, rtcp_peer, rtcp_port = await peer_endpoint()
    leg = RtpSession(RtpLegSpec(remote_host="127.0.0.1", remote_port=port, remote_rtcp_port=rtcp_port, codec="PCMU",
                                payload_type=0))
    await bind(leg)
    slot = await clock.join(CallSetup())
    media = loop.create_task(leg.run(slot))
    rtp.sendto(RtpPacket(payload_type=0, sequence_number=1, timestamp=0, ssrc=5, payload=bytes(160)).serialize(),
               leg.local)
    await asyncio.sleep(0.5)
    leg.send_report()
    sent = leg.stats.packets_sent
    await asyncio.sleep(0.05)
    media.cancel()
    await asyncio.wait([media])
    await clock.leave(slot)
    await clock.stop()
    report = RtcpPacket.parse(rtcp_peer.received[-1])[0]
    assert isinstance(report, RtcpSrPacket)
    assert report.sender_info.packet_count == sent >= 20
    assert report.reports[0].ssrc == 5
    rtp.close()
    rtcp.close()


async def test_the_callers_track_ends_when_its_rtp_stops():
    loop = asyncio.get_running_loop()
    transport, peer, port = await peer_endpoint()
    leg = RtpSession(RtpLegSpec(remote_host="127.0.0.1", remote_port=port, remote_rtcp_port=port + 1, codec="PCMU",
                                payload_type=0, rtp_timeout=0.5))
    await bind(leg)
    clock = EngineClock(EchoBackend(1))
    clock.start()
    slot = await clock.join(CallSetup())
    started = loop.time()
    await asyncio.wait_for(leg.run(slot), 3)  # returns on its own: the caller never sent anything
    assert 0.4 < loop.time() - started < 1.5
    await clock.leave(slot)
    await clock.stop()
    transport.close()
