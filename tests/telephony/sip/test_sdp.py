import base64

import pytest

from agent.contracts.media import SRTP_SUITES
from bench.sip_corpus import SDP
from telephony.sip.sdp import (
    Crypto,
    NotAcceptable,
    SessionDescription,
    answer_for,
    plan_for_offer,
    rtp_leg,
)

BARESIP = (b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           b"m=audio 26000 RTP/AVP 8 0 96 101\r\nb=AS:64\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 opus/48000/2\r\n"
           b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=rtcp:26001\r\na=sendrecv\r\n")


def test_an_offer_parses_and_serialises_back():
    sdp = SessionDescription.parse(SDP)
    media = sdp.media[0]
    assert (sdp.connection, media.port, media.formats, media.ptime) == ("127.0.0.1", 6000, ["0", "101"], 20)
    assert str(media.rtpmap[101]) == "telephone-event/8000" and media.fmtp[101] == "0-15"
    assert SessionDescription.parse(sdp.serialise()) == sdp


def test_the_answer_takes_the_offerers_first_servable_codec_and_its_events():
    plan = plan_for_offer(SessionDescription.parse(BARESIP))
    assert (plan.codec.name, plan.payload_type, plan.dtmf_payload_type) == ("PCMA", 8, 101)
    assert (plan.remote_host, plan.remote_port, plan.remote_rtcp_port, plan.direction) == (
        "127.0.0.1", 26000, 26001, "sendrecv")
    answer = answer_for(plan, "127.0.0.1", 30000, 77, 1).serialise().decode()
    assert "m=audio 30000 RTP/AVP 8 101\r\n" in answer and "a=rtpmap:8 PCMA/8000\r\n" in answer
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in answer and "a=sendrecv" in answer


def test_opus_is_taken_when_offered_first():
    plan = plan_for_offer(SessionDescription.parse(BARESIP.replace(b"RTP/AVP 8 0 96", b"RTP/AVP 96 8 0")))
    assert (plan.codec.name, plan.codec.clock_rate, plan.dtmf_payload_type) == ("opus", 48000, None)  # 101 is 8 kHz


def test_g722_is_taken_over_g711_wherever_it_is_offered_and_answered_at_its_8000_hz_rtp_clock():
    offer = BARESIP.replace(b"RTP/AVP 8 0 96 101", b"RTP/AVP 0 8 9 101")
    plan = plan_for_offer(SessionDescription.parse(offer))  # 9 is G.722's static type: no rtpmap needed
    assert (plan.codec.name, plan.payload_type, plan.dtmf_payload_type) == ("G722", 9, 101)
    assert (plan.codec.clock_rate, plan.codec.sample_rate) == (8000, 16000)
    answer = answer_for(plan, "127.0.0.1", 30000, 77, 1).serialise().decode()
    assert "m=audio 30000 RTP/AVP 9 101\r\n" in answer and "a=rtpmap:9 G722/8000\r\n" in answer
    assert "a=rtpmap:101 telephone-event/8000\r\n" in answer


def test_g722_announced_at_16000_hz_is_not_taken_for_g722():
    offer = BARESIP.replace(b"RTP/AVP 8 0 96 101", b"RTP/AVP 9 0").replace(b"a=rtpmap:8 PCMA/8000",
                                                                          b"a=rtpmap:9 G722/16000")
    assert plan_for_offer(SessionDescription.parse(offer)).codec.name == "PCMU"  # RFC 3551: G722/8000 or nothing


def test_opus_offered_first_stays_ahead_of_g722():
    offer = BARESIP.replace(b"RTP/AVP 8 0 96 101", b"RTP/AVP 96 0 9 101")
    assert plan_for_offer(SessionDescription.parse(offer)).codec.name == "opus"


@pytest.mark.parametrize("offered, answered", [(b"a=sendonly", "recvonly"), (b"a=recvonly", "sendonly"),
                                               (b"a=inactive", "inactive")])
def test_hold_directions(offered, answered):
    assert plan_for_offer(SessionDescription.parse(BARESIP.replace(b"a=sendrecv", offered))).direction == answered


def test_old_style_hold_with_a_zero_address():
    plan = plan_for_offer(SessionDescription.parse(BARESIP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0")))
    assert plan.direction == "recvonly"  # the caller wants nothing from us


@pytest.mark.parametrize("change, reason", [
    ((b"RTP/AVP 8 0 96 101", b"RTP/AVP 18"), "none of the offered formats 18 is PCMU, PCMA, G722 or opus"),
    ((b"RTP/AVP", b"UDP/TLS/RTP/SAVP"), "transport 'UDP/TLS/RTP/SAVP' is not served"),
    ((b"RTP/AVP", b"RTP/SAVP"), "RTP/SAVP needs an SDES key (a=crypto) of AES_CM_128_HMAC_SHA1_80"),
    ((b"m=audio 26000", b"m=audio 0"), "disabled (port 0)"),
    ((b"m=audio", b"m=video"), "no audio stream"),
])
def test_what_cannot_be_served_is_not_acceptable(change, reason):
    with pytest.raises(NotAcceptable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        plan_for_offer(SessionDescription.parse(BARESIP.replace(*change)))


def test_the_last_port_is_served_only_with_an_rtcp_port_of_its_own():
    """m=audio 65535 leaves no next port for RTCP: refused, not a leg that cannot be made (a
    re-INVITE with it raised past the server and left the call refusing every later re-INVITE)."""
    last = BARESIP.replace(b"m=audio 26000", b"m=audio 65535")
    with pytest.raises(NotAcceptable, match="no port for RTCP"):
        plan_for_offer(SessionDescription.parse(last.replace(b"a=rtcp:26001\r\n", b"")))
    named = plan_for_offer(SessionDescription.parse(last.replace(b"a=rtcp:26001", b"a=rtcp:5000")))
    assert rtp_leg(named, None, 30.0).remote_rtcp_port == 5000


@pytest.mark.parametrize("data, message", [
    (b"hello", "SDP must start with v=0"),
    (b"v=0\r\nc=IN IP4 999.0.0.1\r\n", r"SDP line 2 \('c=IN IP4 999.0.0.1'\): '999.0.0.1' is not an IP address"),
    (b"v=0\r\nm=audio x RTP/AVP 0\r\n", "bad port 'x'"),
    (b"v=0\r\nm=audio 5 RTP/AVP 0\r\na=rtpmap:abc\r\n", "expected 'rtpmap:<type> <name>/<rate>"),
    (b"v=0\r\ns=-\r\n", "SDP has no m= line"),
    (b"v=0\r\n\xff\xfe", "SDP is not UTF-8"),
])
def test_malformed_sdp_says_which_line(data, message):
    with pytest.raises(ValueError, match=message):
        SessionDescription.parse(data)


# -- SRTP keyed by SDES (RFC 4568) ------------------------------------------------------------

KEY_80 = base64.b64encode(bytes(range(30))).decode()  # a master key and salt of 30 bytes
SAVP = BARESIP.replace(b"RTP/AVP", b"RTP/SAVP").replace(
    b"a=sendrecv\r\n", b"a=sendrecv\r\na=crypto:3 AES_CM_256_HMAC_SHA1_80 inline:" + b"A" * 60 + b"\r\n"
    b"a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_80.encode() + b"|2^20|1:4\r\n"  # an MKI: not served
    b"a=crypto:5 AES_CM_128_HMAC_SHA1_32 inline:" + KEY_80.encode() + b"|2^31\r\n"
    b"a=crypto:6 AEAD_AES_128_GCM inline:" + b"B" * 38 + b"==\r\n")


def test_a_crypto_line_parses_and_serialises_back():
    crypto = Crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_80 + "|2^20|1:4 KDR=1")
    assert (crypto.tag, crypto.suite, len(crypto.key), crypto.lifetime, crypto.mki) == (
        1, "AES_CM_128_HMAC_SHA1_80", 30, "2^20", "1:4")
    assert str(crypto) == "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_80 + "|2^20|1:4 KDR=1"
    assert not crypto.served  # an MKI in every packet, and a key derivation rate
    with pytest.raises(ValueError, match="is not base64"):
        Crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64")


def test_an_srtp_offer_gets_the_first_served_suite_with_its_tag_and_a_fresh_key_of_ours():
    plan = plan_for_offer(SessionDescription.parse(SAVP))
    assert (plan.proto, plan.srtp.tag, plan.srtp.suite) == ("RTP/SAVP", 5, "AES_CM_128_HMAC_SHA1_32")
    assert len(plan.srtp.local_key) == 30 and plan.srtp.local_key != plan.srtp.remote_key
    answer = SessionDescription.parse(answer_for(plan, "127.0.0.1", 30000, 77, 1).serialise())
    assert answer.media[0].proto == "RTP/SAVP"
    assert answer.media[0].crypto == [Crypto(5, "AES_CM_128_HMAC_SHA1_32", plan.srtp.local_key)]
    keys = rtp_leg(plan, None, 30.0).srtp  # what the worker's leg is keyed with
    assert (keys.suite, keys.key("local"), keys.key("remote")) == (
        "AES_CM_128_HMAC_SHA1_32", plan.srtp.local_key, plan.srtp.remote_key)
    assert plan_for_offer(SessionDescription.parse(SAVP)).srtp.local_key != plan.srtp.local_key


def test_aes_gcm_is_served_with_its_28_byte_key():
    offer = SAVP.replace(b"a=crypto:5", b"a=crypto-x:5")
    plan = plan_for_offer(SessionDescription.parse(offer))
    assert (plan.srtp.tag, plan.srtp.suite, len(plan.srtp.local_key)) == (6, "AEAD_AES_128_GCM", 28)
    assert SRTP_SUITES["AEAD_AES_128_GCM"] == 28


def test_a_reinvite_keeps_our_key_while_the_suite_stays():
    first = plan_for_offer(SessionDescription.parse(SAVP))
    again = plan_for_offer(SessionDescription.parse(SAVP.replace(b"a=sendrecv", b"a=sendonly")), previous=first)
    assert again.srtp.local_key == first.srtp.local_key and again.direction == "recvonly"
    other = plan_for_offer(SessionDescription.parse(SAVP.replace(b"a=crypto:5", b"a=crypto-x:5")), previous=first)
    assert other.srtp.suite == "AEAD_AES_128_GCM" and len(other.srtp.local_key) == 28


def test_crypto_lines_in_a_plain_rtp_offer_are_ignored():
    plan = plan_for_offer(SessionDescription.parse(SAVP.replace(b"RTP/SAVP", b"RTP/AVP")))
    assert (plan.proto, plan.srtp) == ("RTP/AVP", None)
    assert b"a=crypto" not in answer_for(plan, "127.0.0.1", 30000, 77, 1).serialise()
