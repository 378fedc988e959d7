"""Latency added by the RTP path: a caller on loopback talks to the echo engine through an RTP leg.

    python -m bench.echo_latency [--seconds 6] [--codec PCMU|PCMA|G722] [--srtp SUITE] [--wav speech.wav]

The caller sends 20 ms packets of speech (espeak-ng, or a WAV given) in G.711 at 8 kHz or G.722
at 16 kHz (over SRTP with `--srtp`) on a real clock and records what comes back; the lag of the cross-correlation peak between the two is the delay from
RTP in to RTP out. The echo backend returns each 80 ms frame one step later, so the engine itself
accounts for a frame to fill plus a frame of model delay; what remains is what the transport adds
(jitter buffer, resampling, the wait for the clock's tick, pacing). Prints the figures, and the
share of the returned audio's energy above 4 kHz, which only a wideband path (G.722) carries.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc.rtp import RtpPacket, is_rtcp

from agent.contracts.audio import FRAME_SECONDS
from agent.contracts.media import CODECS, SRTP_SUITES, RtpLegSpec, SrtpKeys
from agent.engine.backend import CallSetup
from agent.engine.clock import EngineClock
from agent.engine.echo import EchoBackend
from agent.media.g711 import G711_RATE, g711_context
from agent.media.g722 import g722_context
from agent.media.rtp_session import RtpSession
from agent.media.srtp import SrtpContext

RATE = G711_RATE
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8, "G722": 9}
SPEECH = ("Thank you for calling Acme Home Goods. This is a test of the telephone line, "
          "counting one, two, three, four, five, six, seven, eight, nine, ten.")


def speech_8k(seconds: float, wav: Path | None = None) -> np.ndarray:
    return speech(seconds, RATE, wav)


def speech(seconds: float, rate: int, wav: Path | None = None) -> np.ndarray:
    """int16 mono speech at `rate`: the WAV given, else espeak-ng's (22 kHz, so it has the
    high band that G.722 carries); cut or looped to `seconds`."""
    with tempfile.TemporaryDirectory() as tmp:
        if wav is None:
            if shutil.which("espeak-ng") is None:
                raise RuntimeError("espeak-ng is needed to make test speech (Debian package espeak-ng)")
            wav = Path(tmp) / "speech.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), SPEECH], check=True, capture_output=True)
        with av.open(str(wav)) as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                      for f in resampler.resample(frame)]
    pcm = np.concatenate(chunks)
    n = int(seconds * rate)
    return np.resize(pcm, n).astype(np.int16)


def codec_context(codec: str, mode: str):
    return g722_context(mode) if codec == "G722" else g711_context(codec, mode)


def encode(context, pcm: np.ndarray) -> bytes:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = context.sample_rate
    return b"".join(bytes(p) for p in context.encode(frame))


def decode(context, payload: bytes) -> np.ndarray:
    return np.concatenate([f.to_ndarray().reshape(-1) for f in context.decode(av.Packet(payload))])


@dataclass
class Received:
    packets: list[RtpPacket]
    arrival: list[float]  # loop time of each packet
    audio: np.ndarray  # int16, decoded in timestamp order, gaps filled with silence
    start: float  # loop time the caller sent its first packet


class RtpCaller(asyncio.DatagramProtocol):
    """A plain RTP peer: plays int16 audio at the codec's rate as 20 ms packets, records what comes back."""

    def __init__(self, codec: str = "PCMU", srtp: SrtpKeys | None = None):
        """`srtp`: the caller's keys (its own as local), for a leg keyed with the same two the other way round."""
        self.codec = codec
        self.srtp = SrtpContext(srtp) if srtp else None
        self.refused = 0  # packets that failed SRTP authentication
        self.rate = CODECS[codec.lower()].sample_rate
        self.packet = self.rate // 50  # samples in 20 ms
        self.step = CODECS[codec.lower()].clock_rate // 50  # RTP timestamp units in 20 ms
        self.packets: list[RtpPacket] = []
        self.arrival: list[float] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if not is_rtcp(data):
            if self.srtp is not None:
                try:
                    data = self.srtp.unprotect(data)
                except ValueError:
                    self.refused += 1
                    return
            self.packets.append(RtpPacket.parse(data))
            self.arrival.append(asyncio.get_running_loop().time())

    async def play(self, pcm: np.ndarray, destination: tuple[str, int]) -> float:
        """Send `pcm` in real time; returns the loop time of the first packet."""
        loop = asyncio.get_running_loop()
        encoder = codec_context(self.codec, "w")
        seq, ts, ssrc = random.getrandbits(16), random.getrandbits(32), random.getrandbits(32)
        start = loop.time()
        for i in range(len(pcm) // self.packet):
            await asyncio.sleep(max(0.0, start + i * 0.020 - loop.time()))
            payload = encode(encoder, pcm[i * self.packet:(i + 1) * self.packet])
            packet = RtpPacket(payload_type=PAYLOAD_TYPES[self.codec], sequence_number=(seq + i) & 0xFFFF,
                               timestamp=(ts + i * self.step) & 0xFFFFFFFF, ssrc=ssrc, payload=payload)
            data = packet.serialize()
            self.transport.sendto(self.srtp.protect(data) if self.srtp else data, destination)
        return start

    def received_audio(self) -> np.ndarray:
        """The received stream decoded by timestamp (silence where packets are missing), from the
        earliest timestamp (a network that reorders may deliver a later packet first)."""
        if not self.packets:
            return np.zeros(0, np.int16)
        decoder = codec_context(self.codec, "r")
        first = self.packets[0].timestamp
        stamps = [((p.timestamp - first + (1 << 31)) & 0xFFFFFFFF) - (1 << 31) for p in self.packets]
        offsets = [(stamp - min(stamps)) * self.packet // self.step for stamp in stamps]
        audio = np.zeros(max(offsets) + self.packet, np.int16)
        for offset, packet in zip(offsets, self.packets):
            samples = decode(decoder, packet.payload)
            audio[offset:offset + samples.size] = samples
        return audio


def echo_lag(sent: np.ndarray, received: np.ndarray, rate: int = RATE, max_lag: float = 1.0) -> tuple[float, float]:
    """(lag in seconds, normalised peak height) of `received` against `sent`."""
    a = sent.astype(np.float64)
    b = received.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[: int(max_lag * rate)]
    lag = int(np.argmax(corr))
    overlap = min(a.size, b.size - lag)
    if overlap <= 0:
        return lag / rate, 0.0
    x, y = a[:overlap], b[lag:lag + overlap]
    height = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))
    return lag / rate, height


def echo_lags_by_window(sent: np.ndarray, received: np.ndarray, window: float = 2.0, rate: int = RATE,
                        max_lag: float = 1.0) -> list[tuple[float, float]]:
    """`echo_lag` of each `window` seconds of `sent`: the delay can change during a call (the engine
    trims a caller's steady excess of audio), so one lag over the whole call understates the match."""
    size, reach = int(window * rate), int(max_lag * rate)
    return [echo_lag(sent[start:start + size], received[start:start + size + reach], rate, max_lag)
            for start in range(0, sent.size - size + 1, size)]


def high_band_share(pcm: np.ndarray, rate: int, above: float = 4000.0) -> float:
    """The share of `pcm`'s energy above `above` Hz: G.711 (8 kHz) carries none, G.722 up to 7 kHz."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    frequencies = np.fft.rfftfreq(pcm.size, 1 / rate)
    return float(spectrum[frequencies > above].sum() / max(spectrum.sum(), 1e-9))


@dataclass
class LatencyResult:
    lag: float  # seconds from the caller's first packet sent to its echo in the returned stream
    peak: float  # normalised cross-correlation at the lag (near 1: clean)
    windows: list[tuple[float, float]]  # (lag, peak) of each 2 s: the steady state is the last
    first_packet_delay: float  # seconds from the caller's first packet to the first returned one
    packets_sent: int
    packets_received: int
    high_band_sent: float  # share of the energy above 4 kHz in what the caller sent
    high_band_returned: float  # and in what came back

    @property
    def steady_lag(self) -> float:
        return self.windows[-1][0] if self.windows else self.lag

    @property
    def beyond_engine(self) -> float:
        """The steady lag less the engine's own two frames: one to fill, one of (echo) model delay."""
        return self.steady_lag - 2 * FRAME_SECONDS


def srtp_key_pair(suite: str) -> tuple[SrtpKeys, SrtpKeys]:
    """Fresh keys for a leg and the same keys the other way round for its caller."""
    ours, theirs = (base64.b64encode(secrets.token_bytes(SRTP_SUITES[suite])).decode() for _ in range(2))
    return (SrtpKeys(suite=suite, local_key=ours, remote_key=theirs),
            SrtpKeys(suite=suite, local_key=theirs, remote_key=ours))


async def measure(seconds: float = 6.0, codec: str = "PCMU", wav: Path | None = None,
                  srtp: str | None = None) -> LatencyResult:
    rate = CODECS[codec.lower()].sample_rate
    pcm = await asyncio.to_thread(speech, seconds, rate, wav)
    loop = asyncio.get_running_loop()
    clock = EngineClock(EchoBackend(1))
    clock.start()
    leg_keys, caller_keys = srtp_key_pair(srtp) if srtp else (None, None)
    caller_transport, caller = await loop.create_datagram_endpoint(lambda: RtpCaller(codec, caller_keys),
                                                                   local_addr=("127.0.0.1", 0))
    port = caller_transport.get_extra_info("sockname")[1]
    spec = RtpLegSpec(remote_host="127.0.0.1", remote_port=port, remote_rtcp_port=port + 1, codec=codec,
                      payload_type=PAYLOAD_TYPES[codec], srtp=leg_keys)
    leg = RtpSession(spec)
    await _bind_free(leg)
    slot = await clock.join(CallSetup())
    media = loop.create_task(leg.run(slot))
    try:
        start = await caller.play(pcm, ("127.0.0.1", leg.local[1]))
        await asyncio.sleep(0.6)
    finally:
        media.cancel()
        await asyncio.wait([media])
        await clock.leave(slot)
        await clock.stop()
        caller_transport.close()
    received = caller.received_audio()
    # The returned stream starts when the leg's first packet left: place it on the caller's clock.
    offset = round((caller.arrival[0] - start) * rate) if caller.arrival else 0
    aligned = np.concatenate([np.zeros(max(offset, 0), np.int16), received])
    lag, peak = echo_lag(pcm, aligned, rate)
    windows = echo_lags_by_window(pcm, aligned, rate=rate)
    return LatencyResult(lag, peak, windows, caller.arrival[0] - start if caller.arrival else float("nan"),
                         len(pcm) // caller.packet, len(caller.packets), high_band_share(pcm, rate),
                         high_band_share(received, rate))


async def _bind_free(leg: RtpSession) -> None:
    for _ in range(50):
        port = random.randrange(20000, 30000, 2)
        try:
            return await leg.bind("127.0.0.1", port)
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--codec", choices=sorted(PAYLOAD_TYPES), default="PCMU")
    parser.add_argument("--srtp", choices=sorted(SRTP_SUITES), default=None, help="SRTP suite (default: plain RTP)")
    parser.add_argument("--wav", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(measure(args.seconds, args.codec, args.wav, args.srtp))
    print("echo lag by 2 s window: " + ", ".join(f"{lag * 1000:.0f} ms ({peak:.2f})" for lag, peak in result.windows))
    print(f"steady echo lag {result.steady_lag * 1000:.1f} ms; the engine's frames account for "
          f"{2 * FRAME_SECONDS * 1000:.0f} ms; added by the RTP path: {result.beyond_engine * 1000:.1f} ms")
    print(f"first packet back after {result.first_packet_delay * 1000:.1f} ms; "
          f"packets sent {result.packets_sent}, received {result.packets_received}")
    print(f"energy above 4 kHz: {result.high_band_sent:.1%} of what was sent, "
          f"{result.high_band_returned:.1%} of what came back ({args.codec})")


if __name__ == "__main__":
    main()
