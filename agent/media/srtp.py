"""SRTP and SRTCP (RFC 3711, RFC 7714 for AES-GCM) on a worker's RTP leg, keyed by SDES (RFC 4568).

The control plane agrees the suite and both master keys in the SDP; `SrtpContext` holds libsrtp's
sessions (through pylibsrtp, which aiortc uses for DTLS-SRTP): one that protects what the worker
sends with its own key, one that authenticates and decrypts what the caller sends with the
caller's. A packet that fails authentication or replay checks raises `SrtpError`.
"""

from __future__ import annotations

import pylibsrtp

from agent.contracts.media import SrtpKeys

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,  # SRTCP keeps its 80-bit tag
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}


class SrtpError(ValueError):
    """A packet that is not authentic (wrong key, tampered, replayed) or not SRTP at all."""


class SrtpContext:
    def __init__(self, keys: SrtpKeys):
        self.keys = keys
        profile = PROFILES[keys.suite]
        self._outbound = pylibsrtp.Session(pylibsrtp.Policy(key=keys.key("local"), srtp_profile=profile,
                                                            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self._inbound = pylibsrtp.Session(pylibsrtp.Policy(key=keys.key("remote"), srtp_profile=profile,
                                                           ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))

    def protect(self, packet: bytes) -> bytes:
        return self._outbound.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._outbound.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes:
        try:
            return self._inbound.unprotect(packet)
        except pylibsrtp.Error as error:
            raise SrtpError(f"SRTP packet refused: {error}") from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._inbound.unprotect_rtcp(packet)
        except pylibsrtp.Error as error:
            raise SrtpError(f"SRTCP packet refused: {error}") from None
