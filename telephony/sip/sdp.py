"""SDP (RFC 4566) for audio calls, and the answerer's side of offer/answer (RFC 3264).

`SessionDescription.parse` reads what an audio call needs (origin, connection, the media lines
with their rtpmap, fmtp, ptime, direction and RTCP attributes) and raises `ValueError` with the
line that is wrong; `serialise` writes it back. `plan_for_offer` picks a codec the worker can
serve (PCMU, PCMA, G.722, Opus) in the offerer's order of preference, except that G.722 is taken
over G.711 wherever it is offered (wideband: the caller sounds like a person, not a phone), and
telephone-event (RFC 4733) at the codec's clock rate when offered; an offer with nothing
servable raises `NotAcceptable` (488). G.722's rtpmap says 8000 Hz, its RTP clock, though its
audio is 16 kHz (RFC 3551 §4.5.2).

SRTP is keyed in the SDP (SDES, RFC 4568): an RTP/SAVP (or RTP/SAVPF) offer lists `a=crypto` lines,
each a suite and the offerer's master key; the answer takes the first served suite, with the
offer's tag and a fresh key of ours. An RTP/SAVP offer without a served crypto line is not
acceptable (no DTLS-SRTP here); crypto lines in an RTP/AVP offer are ignored (RFC 4568 §5.1).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from dataclasses import dataclass, field, replace

from agent.contracts.media import CODECS, SRTP_SUITES, Codec, RtpLegSpec, SrtpKeys

MAX_SDP_BYTES = 16_384
MAX_LINES = 200
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


STATIC_TYPES = {c.static_type: c for c in CODECS.values() if c.static_type is not None}
G711 = ("PCMU", "PCMA")
TELEPHONE_EVENT = "telephone-event"


class NotAcceptable(ValueError):
    """The offer has nothing this side can serve (SIP 488)."""


@dataclass
class RtpMap:
    name: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        channels = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.clock_rate}{channels}"


@dataclass(frozen=True)
class Crypto:
    """An `a=crypto` attribute (RFC 4568 §4): `<tag> <suite> inline:<key||salt>[|lifetime][|MKI:length]`."""

    tag: int
    suite: str
    key: bytes  # master key and salt
    lifetime: str | None = None  # as written, e.g. 2^31
    mki: str | None = None  # as written, e.g. 1:4
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Crypto:
        parts = value.split()
        if len(parts) < 3 or not parts[0].isdigit() or len(parts[0]) > 9:
            raise ValueError("expected 'crypto:<tag> <suite> inline:<key>'")
        params = parts[2].split(";")[0]  # more than one key (one per MKI) is not served: the first is kept
        method, _, inline = params.partition(":")
        if method != "inline" or not inline:
            raise ValueError("expected a key as 'inline:<base64>'")
        key, *rest = inline.split("|")
        try:
            raw = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"the key {key[:20]!r} is not base64") from None
        lifetime = next((r for r in rest if ":" not in r), None)
        mki = next((r for r in rest if ":" in r), None)
        return cls(int(parts[0]), parts[1], raw, lifetime, mki, tuple(parts[3:]))

    def __str__(self) -> str:
        inline = base64.b64encode(self.key).decode()
        inline += "".join(f"|{p}" for p in (self.lifetime, self.mki) if p)
        return " ".join([f"crypto:{self.tag} {self.suite} inline:{inline}", *self.session_params])

    @property
    def served(self) -> bool:
        """A suite served, with a key of its size, no MKI in the packets and no session parameters
        that would change the packets (UNENCRYPTED_SRTP and the like)."""
        return SRTP_SUITES.get(self.suite) == len(self.key) and self.mki is None and not self.session_params


@dataclass
class Media:
    kind: str  # audio, video, ...
    port: int
    proto: str  # RTP/AVP
    formats: list[str]  # payload types as written
    connection: str | None = None  # c= of this media, if any
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    ptime: int | None = None
    rtcp_port: int | None = None
    rtcp_mux: bool = False
    crypto: list[Crypto] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # attributes kept as written

    def codec_of(self, payload_type: int) -> RtpMap | None:
        if payload_type in self.rtpmap:
            return self.rtpmap[payload_type]
        static = STATIC_TYPES.get(payload_type)
        return RtpMap(static.name, static.clock_rate, static.channels) if static else None


@dataclass
class SessionDescription:
    origin: str = "plexline 0 0 IN IP4 127.0.0.1"
    name: str = "plexline"
    connection: str | None = None
    direction: str | None = None  # session-level a=sendrecv etc.
    media: list[Media] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        if isinstance(data, bytes):
            if len(data) > MAX_SDP_BYTES:
                raise ValueError(f"SDP of {len(data)} bytes exceeds the limit of {MAX_SDP_BYTES}")
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"SDP is not UTF-8 (byte {error.start})") from None
        lines = [line for line in data.replace("\r\n", "\n").split("\n") if line.strip()]
        if len(lines) > MAX_LINES:
            raise ValueError(f"SDP has more than {MAX_LINES} lines")
        if not lines or lines[0].strip() != "v=0":
            raise ValueError("SDP must start with v=0")
        sdp = cls(origin="", name="")
        for number, line in enumerate(lines[1:], start=2):
            kind, eq, value = line.partition("=")
            if not eq or len(kind) != 1:
                raise ValueError(f"SDP line {number}: {line[:80]!r} is not of the form x=value")
            try:
                sdp._line(kind, value.strip())
            except ValueError as error:
                raise ValueError(f"SDP line {number} ({line[:80]!r}): {error}") from None
        if not sdp.media:
            raise ValueError("SDP has no m= line")
        return sdp

    def _line(self, kind: str, value: str) -> None:
        media = self.media[-1] if self.media else None
        if kind == "o":
            self.origin = value
        elif kind == "s":
            self.name = value
        elif kind == "c":
            address = parse_connection(value)
            if media is None:
                self.connection = address
            else:
                media.connection = address
        elif kind == "m":
            self.media.append(parse_media_line(value))
        elif kind == "a":
            if media is None:
                if value in DIRECTIONS:
                    self.direction = value
            elif media.kind != "audio":  # a section we decline: its attributes are kept, not read
                media.other.append(value)
            else:
                _media_attribute(media, value)

    def serialise(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.name or '-'}"]
        if self.connection:
            lines.append(f"c={connection_line(self.connection)}")
        lines.append("t=0 0")
        if self.direction:
            lines.append(f"a={self.direction}")
        for m in self.media:
            lines.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection:
                lines.append(f"c={connection_line(m.connection)}")
            lines += [f"a=rtpmap:{pt} {rtpmap}" for pt, rtpmap in m.rtpmap.items()]
            lines += [f"a=fmtp:{pt} {params}" for pt, params in m.fmtp.items()]
            if m.ptime:
                lines.append(f"a=ptime:{m.ptime}")
            if m.rtcp_port:
                lines.append(f"a=rtcp:{m.rtcp_port}")
            lines += [f"a={c}" for c in m.crypto]
            lines += [f"a={a}" for a in m.other]
            if m.direction:
                lines.append(f"a={m.direction}")
        return ("\r\n".join(lines) + "\r\n").encode()


def parse_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise ValueError("expected 'IN IP4 <address>' or 'IN IP6 <address>'")
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{address[:60]!r} is not an IP address") from None
    return address


def connection_line(address: str) -> str:
    return f"IN IP{ipaddress.ip_address(address).version} {address}"


def parse_media_line(value: str) -> Media:
    parts = value.split()
    if len(parts) < 4:
        raise ValueError("expected '<media> <port> <proto> <format>...'")
    port = parts[1].split("/")[0]
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad port {parts[1][:20]!r}")
    return Media(parts[0], int(port), parts[2], parts[3:])


def _media_attribute(media: Media, value: str) -> None:
    name, _, rest = value.partition(":")
    if name == "rtpmap":
        pt, _, encoding = rest.partition(" ")
        fields = encoding.strip().split("/")
        if not pt.isdigit() or int(pt) > 127 or len(fields) < 2 or not fields[1].isdigit():
            raise ValueError("expected 'rtpmap:<type> <name>/<rate>[/<channels>]'")
        channels = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 1
        media.rtpmap[int(pt)] = RtpMap(fields[0], int(fields[1]), channels)
    elif name == "fmtp":
        pt, _, params = rest.partition(" ")
        if not pt.isdigit() or int(pt) > 127:
            raise ValueError("expected 'fmtp:<type> <parameters>'")
        media.fmtp[int(pt)] = params.strip()
    elif name == "ptime":
        if not rest.strip().isdigit():
            raise ValueError("expected 'ptime:<milliseconds>'")
        media.ptime = int(rest)
    elif name == "rtcp":
        port = rest.split()[0] if rest.split() else ""
        if not port.isdigit() or int(port) > 65535:
            raise ValueError("expected 'rtcp:<port>'")
        media.rtcp_port = int(port)
    elif name == "rtcp-mux":
        media.rtcp_mux = True
    elif name == "crypto":
        media.crypto.append(Crypto.parse(rest))
    elif value in DIRECTIONS:
        media.direction = value
    else:
        media.other.append(value)


# -- offer/answer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SrtpPlan:
    """The SRTP agreed: the offer's crypto line taken, and our own key for the answer."""

    tag: int
    suite: str
    remote_key: bytes = field(repr=False)
    local_key: bytes = field(repr=False)


@dataclass(frozen=True)
class MediaPlan:
    """What was agreed for the call's audio: the worker's leg is set up from this."""

    remote_host: str  # where the caller wants RTP (0.0.0.0 when it holds the call)
    remote_port: int
    remote_rtcp_port: int
    codec: Codec
    payload_type: int
    dtmf_payload_type: int | None
    direction: str  # ours: sendrecv, sendonly (the caller holds), recvonly or inactive
    proto: str = "RTP/AVP"  # of our answer
    srtp: SrtpPlan | None = None


SECURE_PROTOS = ("RTP/SAVP", "RTP/SAVPF")


def plan_for_offer(offer: SessionDescription, previous: MediaPlan | None = None) -> MediaPlan:
    """The first audio stream of `offer` that can be served; raises NotAcceptable.

    A re-INVITE passes the call's `previous` plan: our SRTP key stays the same while the suite does."""
    audio = [m for m in offer.media if m.kind == "audio"]
    if not audio:
        raise NotAcceptable("the offer has no audio stream")
    reasons = []
    for media in audio:
        try:
            plan = _plan(offer, media)
        except NotAcceptable as error:
            reasons.append(str(error))
            continue
        if plan.srtp and previous and previous.srtp and previous.srtp.suite == plan.srtp.suite:
            plan = replace(plan, srtp=replace(plan.srtp, local_key=previous.srtp.local_key))
        return plan
    raise NotAcceptable("; ".join(reasons))


def _srtp(media: Media) -> SrtpPlan:
    """The first served crypto line of a secure offer, with a fresh key of ours."""
    crypto = next((c for c in media.crypto if c.served), None)
    if crypto is None:
        offered = " ".join(c.suite for c in media.crypto) or "none"
        raise NotAcceptable(f"{media.proto} needs an SDES key (a=crypto) of {', '.join(SRTP_SUITES)} "
                            f"without MKI or session parameters (offered: {offered[:80]})")
    return SrtpPlan(crypto.tag, crypto.suite, crypto.key, secrets.token_bytes(SRTP_SUITES[crypto.suite]))


def _plan(offer: SessionDescription, media: Media) -> MediaPlan:
    if media.port == 0:
        raise NotAcceptable("the audio stream is disabled (port 0)")
    proto = media.proto.upper()
    if proto not in ("RTP/AVP", "RTP/AVPF", *SECURE_PROTOS):
        raise NotAcceptable(f"transport {media.proto!r} is not served (RTP/AVP, or RTP/SAVP keyed by SDES)")
    srtp = _srtp(media) if proto in SECURE_PROTOS else None
    host = media.connection or offer.connection
    if host is None:
        raise NotAcceptable("the offer has no connection address (c=)")
    servable = []
    for fmt in media.formats:
        if not fmt.isdigit():
            continue
        rtpmap = media.codec_of(int(fmt))
        codec = CODECS.get(rtpmap.name.lower()) if rtpmap else None
        if codec and rtpmap.clock_rate == codec.clock_rate:
            servable.append((int(fmt), codec))
    if not servable:
        raise NotAcceptable(f"none of the offered formats {' '.join(media.formats)[:80]} is PCMU, PCMA, G722 "
                            "or opus")
    payload_type, codec = servable[0]
    if codec.name in G711:
        payload_type, codec = next(((pt, c) for pt, c in servable if c.name == "G722"), servable[0])
    dtmf = next((pt for pt, r in media.rtpmap.items() if r.name.lower() == TELEPHONE_EVENT
                 and r.clock_rate == codec.clock_rate and str(pt) in media.formats), None)
    offered = media.direction or offer.direction or "sendrecv"
    if host in ("0.0.0.0", "::"):  # RFC 2543 hold
        offered = "sendonly" if offered == "sendrecv" else "inactive" if offered == "recvonly" else offered
    rtcp_port = media.rtcp_port or media.port + 1
    if rtcp_port > 65535:
        raise NotAcceptable("RTP on port 65535 leaves no port for RTCP (name one with a=rtcp)")
    return MediaPlan(host, media.port, rtcp_port, codec, payload_type, dtmf,
                     _ANSWER_DIRECTION[offered], proto if srtp else "RTP/AVP", srtp)


def answer_for(plan: MediaPlan, host: str, port: int, session_id: int, version: int) -> SessionDescription:
    """Our answer: the worker's media address `host`:`port` and the plan's codec and events."""
    rtpmap = {plan.payload_type: RtpMap(plan.codec.name, plan.codec.clock_rate, plan.codec.channels)}
    formats = [str(plan.payload_type)]
    fmtp = {}
    if plan.dtmf_payload_type is not None:
        formats.append(str(plan.dtmf_payload_type))
        rtpmap[plan.dtmf_payload_type] = RtpMap(TELEPHONE_EVENT, plan.codec.clock_rate)
        fmtp[plan.dtmf_payload_type] = "0-16"
    crypto = [Crypto(plan.srtp.tag, plan.srtp.suite, plan.srtp.local_key)] if plan.srtp else []
    media = Media("audio", port, plan.proto, formats, rtpmap=rtpmap, fmtp=fmtp, direction=plan.direction,
                  ptime=20, crypto=crypto)
    origin = f"plexline {session_id} {version} {connection_line(host)}"
    return SessionDescription(origin=origin, name="plexline", connection=host, media=[media])


def rtp_leg(plan: MediaPlan, transfer_digit: str | None, rtp_timeout: float, jitter_packets: int = 1,
            jitter_max_packets: int = 6) -> RtpLegSpec:
    """The worker's half of an agreed plan: where to send, in which codec, and the leg's own settings."""
    return RtpLegSpec(remote_host=plan.remote_host, remote_port=plan.remote_port,
                      remote_rtcp_port=plan.remote_rtcp_port, codec=plan.codec.name, payload_type=plan.payload_type,
                      dtmf_payload_type=plan.dtmf_payload_type, direction=plan.direction,
                      transfer_digit=transfer_digit, rtp_timeout=rtp_timeout, jitter_packets=jitter_packets,
                      jitter_max_packets=jitter_max_packets,
                      srtp=_srtp_keys(plan.srtp) if plan.srtp else None)


def _srtp_keys(srtp: SrtpPlan) -> SrtpKeys:
    return SrtpKeys(suite=srtp.suite, local_key=base64.b64encode(srtp.local_key).decode(),
                    remote_key=base64.b64encode(srtp.remote_key).decode())
