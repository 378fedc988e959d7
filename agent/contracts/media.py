"""What the control plane and a worker say to each other about a call's media leg.

The control plane negotiates SDP with the caller; the worker that holds the call terminates the
media. `RtpLegSpec` is the agreed plan sent to the worker (`POST /worker/sessions/{id}/rtp`, and
`PUT` on a re-INVITE); `MediaAddress` is where the worker receives RTP, for the SDP answer. A leg
the caller keys for SRTP (SDES, RFC 4568) carries both directions' master keys in `SrtpKeys`. A call
the worker ends because the caller asked for a human has a reason starting with
`TRANSFER_REASON_PREFIX`; the control plane transfers it (REFER) instead of hanging up. A
media-stream WebSocket attaches to its call with `stream_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class Codec:
    name: str  # as in rtpmap, e.g. PCMU
    clock_rate: int  # of the RTP timestamps, as in rtpmap
    channels: int
    static_type: int | None  # RFC 3551's payload type, if it has one
    sample_rate: int  # of the audio: G.722 is sampled at 16 kHz on an 8000 Hz RTP clock (RFC 3551 §4.5.2)


# What the worker can encode and decode, by name (lower case).
CODECS = {c.name.lower(): c for c in (Codec("PCMU", 8000, 1, 0, 8000), Codec("PCMA", 8000, 1, 8, 8000),
                                     Codec("G722", 8000, 1, 9, 16000), Codec("opus", 48000, 2, None, 48000))}

# The SRTP crypto suites served (RFC 4568 and RFC 7714 names) and the length in bytes of their
# master key and salt together, as the SDP's inline: key carries them.
SRTP_SUITES = {"AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30, "AEAD_AES_128_GCM": 28}
SrtpSuite = Literal["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"]

TRANSFER_REASON_PREFIX = "transfer requested"
Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]


def transfer_reason(digit: str) -> str:
    return f"{TRANSFER_REASON_PREFIX}: the caller pressed {digit}"


def transfer_phrase_reason(phrase: str) -> str:
    return f'{TRANSFER_REASON_PREFIX}: the caller said "{phrase}"'


def stream_token(secret: str, call_id: str) -> str:
    """What a carrier's media stream must show to attach to a call (see agent.media.media_stream)."""
    return hmac.new(secret.encode(), f"stream:{call_id}".encode(), hashlib.sha256).hexdigest()


class SrtpKeys(BaseModel):
    """A leg's SRTP: the suite agreed and each side's master key and salt (base64, as in a=crypto)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: SrtpSuite
    local_key: str = Field(repr=False)  # ours: what the worker protects its packets with
    remote_key: str = Field(repr=False)  # the caller's: what its packets are checked and decrypted with

    @model_validator(mode="after")
    def _key_lengths(self) -> SrtpKeys:
        for name in ("local_key", "remote_key"):
            try:
                size = len(base64.b64decode(getattr(self, name), validate=True))
            except (binascii.Error, ValueError):
                raise ValueError(f"{name} is not base64") from None
            if size != SRTP_SUITES[self.suite]:
                raise ValueError(f"{name} holds {size} bytes; {self.suite} needs {SRTP_SUITES[self.suite]}")
        return self

    def key(self, name: Literal["local", "remote"]) -> bytes:
        return base64.b64decode(self.local_key if name == "local" else self.remote_key)


class RtpLegSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    remote_host: str  # where the caller said to send RTP (replaced by where its RTP comes from)
    remote_port: int = Field(ge=0, le=65535)
    remote_rtcp_port: int = Field(ge=0, le=65535)
    codec: Literal["PCMU", "PCMA", "G722", "opus"]
    payload_type: int = Field(ge=0, le=127)
    dtmf_payload_type: int | None = Field(None, ge=0, le=127)
    direction: Direction = "sendrecv"  # ours
    transfer_digit: str | None = Field(None, pattern=r"^[0-9*#A-D]$")
    rtp_timeout: float = Field(30.0, gt=0)  # seconds without caller RTP (while it should send) that end the call
    # Caller packets held before playout starts. One is enough on a quiet network (the engine slot
    # keeps a packet of slack too); each more absorbs 20 ms more arrival jitter, at 20 ms of delay.
    jitter_packets: int = Field(1, ge=1, le=8)
    # The playout depth then follows the network's jitter (agent.media.jitter.PlayoutDepth), up to this.
    jitter_max_packets: int = Field(6, ge=1, le=16)
    srtp: SrtpKeys | None = None  # plain RTP when None

    @property
    def clock_rate(self) -> int:
        return CODECS[self.codec.lower()].clock_rate

    @property
    def sample_rate(self) -> int:
        return CODECS[self.codec.lower()].sample_rate

    @property
    def channels(self) -> int:
        return CODECS[self.codec.lower()].channels

    @property
    def receives(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")


class MediaAddress(BaseModel):
    host: str
    port: int  # RTP; RTCP is on port + 1
