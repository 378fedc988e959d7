"""DTMF digits carried in RTP as named telephone events (RFC 4733), and their detection.

A digit is sent as a run of event packets sharing one RTP timestamp (its start), the duration
growing, the last few with the end bit set; any of them may be lost or repeated. `DtmfDetector`
reports each digit once, on the first packet of a new timestamp.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DIGITS = "0123456789*#ABCD"  # events 0..15
FLASH = 16


@dataclass(frozen=True)
class DtmfEvent:
    event: int  # 0..255: 0-9, 10 *, 11 #, 12-15 A-D, 16 flash
    end: bool
    volume: int  # 0..63, in -dBm0
    duration: int  # in RTP timestamp units

    @classmethod
    def parse(cls, payload: bytes) -> DtmfEvent:
        if len(payload) < 4:
            raise ValueError(f"telephone-event payload of {len(payload)} bytes, expected at least 4")
        event, flags, duration = struct.unpack("!BBH", payload[:4])
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialise(self) -> bytes:
        return struct.pack("!BBH", self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration)

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None


class DtmfDetector:
    """Telephone-event packets in, each digit out once (None for repeats and non-digits)."""

    def __init__(self) -> None:
        self._last_timestamp: int | None = None

    def feed(self, timestamp: int, event: DtmfEvent) -> str | None:
        if timestamp == self._last_timestamp:
            return None
        self._last_timestamp = timestamp
        return event.digit
