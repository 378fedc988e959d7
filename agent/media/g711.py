"""G.711 (PCMU and PCMA) at 8 kHz in 20 ms packets: the codec of phone trunks and of carriers' media streams."""

from __future__ import annotations

from typing import Literal

import av
import numpy as np

G711_RATE, G711_PACKET = 8000, 160  # Hz, samples in 20 ms

G711 = Literal["PCMU", "PCMA"]


def g711_context(codec: G711, mode: Literal["r", "w"]) -> av.CodecContext:
    """PyAV's G.711 decoder ("r") or encoder ("w"), s16 mono at 8 kHz."""
    context = av.CodecContext.create("pcm_mulaw" if codec == "PCMU" else "pcm_alaw", mode)
    context.format, context.layout, context.sample_rate = "s16", "mono", G711_RATE
    return context


class PacketEncoder:
    """The agent's 24 kHz frames as 20 ms payloads of a sample codec, with nothing held back.

    aiortc's G.711 encoder resamples into fixed 160-sample frames, so the resampler's first
    output, a few samples short, waits for the next frame: every packet then leaves nearly 20 ms
    late. Here the first output is padded at its start instead, and each 20 ms in is 20 ms out.
    """

    def __init__(self, context: av.CodecContext):
        """`context` is an s16 mono encoder; its sample rate is the packets'."""
        self._rate = context.sample_rate
        self._packet = self._rate // 50
        self._context = context
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self._rate)
        self._pending = np.zeros(0, np.int16)
        self._primed = False

    def encode(self, frame: av.AudioFrame) -> tuple[list[bytes], None]:
        """Any frame in; the whole 20 ms payloads it completes out (aiortc's encoder interface)."""
        samples = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if samples:
            self._pending = np.concatenate([self._pending, *samples])
        if not self._primed and self._pending.size:
            self._pending = np.concatenate([np.zeros(-self._pending.size % self._packet, np.int16), self._pending])
            self._primed = True
        payloads = []
        while self._pending.size >= self._packet:
            chunk, self._pending = self._pending[:self._packet], self._pending[self._packet:]
            out = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
            out.sample_rate = self._rate
            payloads.append(b"".join(bytes(p) for p in self._context.encode(out)))
        return payloads, None


class G711Encoder(PacketEncoder):
    def __init__(self, codec: G711):
        super().__init__(g711_context(codec, "w"))
