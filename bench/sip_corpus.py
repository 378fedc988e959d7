"""SIP messages as real peers send them, and broken ones: each with what the server must do with it
(the tests' corpus, and the campaign's, which mutates it during live calls).

`INVITE` is sipp's INVITE as captured on loopback. `MALFORMED` maps a name to (bytes, expected):
the status the server answers, 0 when it must drop the message without a word (a response, bytes
that are no request, a header section beyond the size limit). The RFC 4475 torture messages are in
tests/telephony/sip/rfc4475/.
"""

from __future__ import annotations

SDP = (b"v=0\r\no=sipp 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
       b"a=fmtp:101 0-15\r\na=ptime:20\r\n")


def invite(uri: bytes = b"sip:+15555550100@127.0.0.1:5060", body: bytes = SDP, extra: bytes = b"",
           length: bytes | None = None, call_id: bytes = b"1-12345@127.0.0.1", branch: bytes = b"z9hG4bK-1-0") -> bytes:
    return (b"INVITE " + uri + b" SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.2:5099;branch=" + branch + b";rport\r\n"
            b'From: "sipp" <sip:sipp@127.0.0.2:5099>;tag=12345SIPpTag001\r\n'
            b"To: <sip:+15555550100@127.0.0.1:5060>\r\n"
            b"Call-ID: " + call_id + b"\r\n"
            b"CSeq: 1 INVITE\r\n"
            b"Contact: <sip:sipp@127.0.0.2:5099>\r\n"
            b"Max-Forwards: 70\r\n" + extra +
            b"Content-Type: application/sdp\r\n"
            b"Content-Length: " + (length if length is not None else str(len(body)).encode()) + b"\r\n\r\n" + body)


INVITE = invite()


def _without(header: bytes) -> bytes:
    return b"\r\n".join(line for line in INVITE.split(b"\r\n") if not line.startswith(header))


MALFORMED: dict[str, tuple[bytes, int]] = {
    "truncated in the headers": (INVITE[:120], 400),
    "truncated body": (INVITE[:-40], 400),
    "Content-Length beyond the body": (invite(length=b"5000"), 400),
    "Content-Length not a number": (invite(length=b"abc"), 400),
    "negative Content-Length": (invite(length=b"-5"), 400),
    "huge header line": (invite(extra=b"X-Big: " + b"a" * 20_000 + b"\r\n"), 0),
    "oversized message": (invite(extra=b"X-Pad: " + b"b" * 9000 + b"\r\n", body=SDP + b"a=x-pad:" + b"c" * 40_000), 513),
    "too many headers": (invite(extra=b"".join(b"X-H%d: v\r\n" % i for i in range(150))), 513),
    "bad UTF-8 in a header": (invite(extra=b"Subject: caf\xc3\x28\r\n"), 400),
    "NUL in a header value": (invite(extra=b"Subject: a\x00b\r\n"), 400),
    "missing Call-ID": (_without(b"Call-ID"), 400),
    "missing CSeq": (_without(b"CSeq"), 400),
    "missing Via": (_without(b"Via"), 400),
    "missing From": (_without(b"From"), 400),
    "CSeq method differs": (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400),
    "CSeq number too large": (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"), 400),
    "Max-Forwards not a number": (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: lots"), 400),
    "unsupported SIP version": (INVITE.replace(b" SIP/2.0\r\nVia", b" SIP/3.0\r\nVia", 1), 505),
    "bad request line": (INVITE.replace(b"INVITE sip:", b"INVITE  sip:", 1), 400),
    "Request-URI not SIP": (invite(uri=b"http://example.com/"), 416),
    "To with an unclosed <": (INVITE.replace(b"To: <sip:+15555550100@127.0.0.1:5060>", b"To: <sip:x@127.0.0.1"), 400),
    "continuation before any header": (INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/2.0\r\n Via", 1), 400),
    "binary garbage": (bytes(range(256)) * 4, 0),
    "no empty line": (INVITE.replace(b"\r\n\r\n", b"\r\n"), 400),
    "a response nobody asked for": (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.2:5099;branch=z9hG4bK-x\r\n"
                                    b"From: <sip:a@127.0.0.2>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n"
                                    b"Call-ID: nobody\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n", 0),
    "SDP without media": (invite(body=b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"), 488),
    "SDP of video only": (invite(body=SDP.replace(b"m=audio", b"m=video")), 488),
    "SDP with no codec we serve": (invite(body=SDP.replace(b"RTP/AVP 0 101", b"RTP/AVP 18").replace(
        b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:18 G729/8000")), 488),
    "SDP that is not SDP": (invite(body=b"hello, this is not SDP at all"), 488),
    "SDP with a bad connection address": (invite(body=SDP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 999.1.1.1")), 488),
    "SDP encrypted (SAVP)": (invite(body=SDP.replace(b"RTP/AVP", b"RTP/SAVP")), 488),
    "SDP of 20 KB": (invite(body=SDP + b"a=x:" + b"d" * 20_000 + b"\r\n"), 488),
}
