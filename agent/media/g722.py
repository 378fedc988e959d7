"""G.722 (ITU-T G.722 at 64 kbit/s): the wideband codec PBXs on a LAN offer before G.711.

It carries 50 Hz to 7 kHz where G.711 stops at 3.4 kHz. Its audio is sampled at 16 kHz but its
RTP clock runs at 8000 Hz, as RFC 3551 §4.5.2 keeps for historical reasons (and rtpmap says
G722/8000): a 20 ms packet holds 320 samples in 160 bytes and advances the RTP timestamp by 160.
PyAV's codec does the work; aiortc has none.
"""

from __future__ import annotations

from typing import Literal

import av
from aiortc.jitterbuffer import JitterFrame

from agent.media.g711 import PacketEncoder

G722_RATE = 16000  # Hz of the audio


def g722_context(mode: Literal["r", "w"]) -> av.CodecContext:
    """PyAV's G.722 decoder ("r") or encoder ("w"), s16 mono at 16 kHz."""
    context = av.CodecContext.create("g722", mode)
    context.format, context.layout, context.sample_rate = "s16", "mono", G722_RATE
    return context


class G722Encoder(PacketEncoder):
    def __init__(self) -> None:
        super().__init__(g722_context("w"))


class G722Decoder:
    """G.722 payloads as 16 kHz frames, with aiortc's decoder interface."""

    def __init__(self) -> None:
        self._context = g722_context("r")

    def decode(self, encoded: JitterFrame) -> list[av.AudioFrame]:
        return list(self._context.decode(av.Packet(encoded.data)))
