"""Latency added by the WebRTC path: an aiortc caller sends a click train to a line on the echo engine.

    python -m bench.webrtc_latency [--seconds 10] [--url URL --token TOKEN --line TENANT/LINE]

Without --url it starts `plexline serve --model echo` of its own on a free loopback port (aiortc
needs an address it can offer as a candidate: run it on a machine with a network interface, or in
the tests' loopback namespace, see docs in tests/interop/conftest.py).

The caller stamps each 20 ms frame it sends and each RTP packet that comes back (at arrival, before
its own jitter buffer); laid out on that common clock, the lag of the cross-correlation peak
between the two signals is the round trip, which on loopback is the worker's ingress to egress.
The echo engine accounts for two frames of it: the 80 ms frame that must fill before a step, and
its one frame of delay; the rest is what plexline adds (jitter buffer, decode and resampling, the
wait for the clock's tick, pacing, encoding). The clicks come at irregular times, so the peak is
unique; each click is then found on its own, which shows the echo stays aligned through the call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from agent.contracts.audio import FRAME_SIZE, SAMPLE_RATE
from bench.webrtc_caller import PACKET, RATE, Received, WhipCall

ENGINE_SECONDS = 2 * FRAME_SIZE / SAMPLE_RATE  # the frame that fills, and the echo's frame of delay
CLICK_SAMPLES = 96  # 2 ms
MAX_LAG = 1.0  # seconds searched
SETTLE_SECONDS = 2.0  # silence first: the slot trims its start-up wait after a second (agent.engine.clock)


@dataclass(frozen=True)
class EchoLatency:
    round_trip_ms: float  # ingress to egress, the lag of the cross-correlation peak
    added_ms: float  # beyond the engine's two frames
    peak: float  # normalised height of the peak: near 1 when the echo is clean
    clicks: int
    clicks_found: int  # clicks found again near the lag, on their own
    spread_ms: float  # the largest distance of a found click's lag from the overall lag

    @property
    def aligned(self) -> bool:
        return self.clicks_found >= 0.9 * self.clicks and self.spread_ms <= 5.0


def click() -> np.ndarray:
    t = np.arange(CLICK_SAMPLES) / RATE
    return (0.6 * np.hanning(CLICK_SAMPLES) * np.sin(2 * np.pi * 1500 * t)).astype(np.float32)


def click_train(seconds: float, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Silence while the call settles, then clicks 150 to 450 ms apart at random (never periodic, so
    one lag fits) for `seconds`; the clicks' sample offsets."""
    rng = np.random.default_rng(seed)
    signal = np.zeros(int((SETTLE_SECONDS + seconds) * RATE), np.float32)
    starts, at = [], SETTLE_SECONDS
    while at < SETTLE_SECONDS + seconds - 0.5:
        start = int(at * RATE)
        signal[start:start + CLICK_SAMPLES] = click()
        starts.append(start)
        at += rng.uniform(0.15, 0.45)
    return signal, starts


def timeline(chunks: list[np.ndarray], starts: list[int], anchor: float, origin: float, length: int) -> np.ndarray:
    """Chunks at their sample offsets `starts` of a stream whose sample 0 was at `anchor`, at RATE from `origin`."""
    out = np.zeros(length, np.float32)
    shift = int(round((anchor - origin) * RATE))
    for chunk, start in zip(chunks, starts):
        at = shift + start
        if 0 <= at < length:
            part = chunk[:length - at]
            out[at:at + part.size] = part
    return out


def anchor(stamps: list[float], starts: list[int]) -> float:
    """When sample 0 of a stream was on time: the earliest of the stamps less their offsets.

    Each stamp is late by a little scheduling noise; the least late one tells the stream's time, and
    the samples keep their exact places from it (their timestamps), so the noise does not blur the audio.
    """
    return min(t - start / RATE for t, start in zip(stamps, starts))


def measure(signal: np.ndarray, click_starts: list[int], sent_at: list[float], received: Received) -> EchoLatency:
    sent_starts = [n * PACKET for n in range(len(sent_at))]
    sent_zero, heard_zero = anchor(sent_at, sent_starts), anchor(received.arrived_at, received.pts)
    length = int((heard_zero - sent_zero + received.pts[-1] / RATE + 0.1) * RATE)
    sent = timeline([signal[s:s + PACKET] for s in sent_starts], sent_starts, sent_zero, sent_zero, length)
    heard = timeline(received.frames, received.pts, heard_zero, sent_zero, length)
    size = 1 << int(np.ceil(np.log2(2 * length)))
    correlation = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(sent, size)), size)[:int(MAX_LAG * RATE)]
    lag = int(np.argmax(correlation))
    overlap = heard[lag:]
    peak = float(correlation[lag] / np.sqrt(np.dot(sent[:overlap.size], sent[:overlap.size]) * np.dot(overlap, overlap)))
    template, window = click(), int(0.01 * RATE)
    lags = []
    click_starts = [c for c in click_starts if c + CLICK_SAMPLES <= len(sent_at) * PACKET]
    for start in click_starts:
        at = start + lag
        segment = heard[max(0, at - window):at + window + CLICK_SAMPLES]
        if segment.size < 2 * window:
            continue
        local = np.correlate(segment, template, mode="valid")
        best = int(np.argmax(local))
        energy = np.dot(segment[best:best + CLICK_SAMPLES], segment[best:best + CLICK_SAMPLES])
        if local[best] / np.sqrt(energy * np.dot(template, template) + 1e-12) > 0.5:
            lags.append(best - (at - max(0, at - window)))
    spread = max((abs(x) for x in lags), default=float("inf")) / RATE * 1000
    round_trip = lag / RATE * 1000
    return EchoLatency(round(round_trip, 1), round(round_trip - ENGINE_SECONDS * 1000, 1), round(peak, 3),
                       len(click_starts), len(lags), round(spread, 2))


async def measure_call(url: str, token: str, tenant: str, line: str, seconds: float) -> EchoLatency:
    signal, starts = click_train(seconds)
    call = WhipCall(url, token, tenant, line, signal)
    response = await call.start()
    if response.status_code != 201:
        raise RuntimeError(f"the line refused the call: {response.status_code} {response.text}")
    try:
        await asyncio.wait_for(call.connected.wait(), 20)
        await asyncio.sleep(SETTLE_SECONDS + seconds + 1.0)
    finally:
        await call.hang_up()
    return measure(signal, starts, call.source.sent_at, call.received)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the click train")
    parser.add_argument("--url", default=None, help="a running control plane (default: start plexline serve --model echo)")
    parser.add_argument("--token", default=None, help="its operator token, or the line's tenant's")
    parser.add_argument("--line", default="acme/support", help="TENANT/LINE on the echo engine")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    tenant, line = args.line.split("/", 1)
    with tempfile.TemporaryDirectory() as folder:
        server = None
        url, token = args.url, args.token
        if url is None:
            port, token = _free_port(), "bench-operator-token"
            env = os.environ | {"PLEXLINE_OPERATOR_TOKEN": token, "PLEXLINE_SHUTDOWN_GRACE": "0", "PLEXLINE_REDIS_URL": ""}
            log = Path(folder) / "serve.log"
            server = subprocess.Popen([sys.executable, "-m", "plexline", "serve", "--model", "echo", "--slots", "1",
                                       "--http-port", str(port), "--sip-port", str(_free_port())],
                                      env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(url, server, log)
        try:
            result = asyncio.run(measure_call(url, token, tenant, line, args.seconds))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=15)
    print(f"round trip (ingress to egress) {result.round_trip_ms:.1f} ms; the echo engine's two frames "
          f"{ENGINE_SECONDS * 1000:.0f} ms; added by plexline {result.added_ms:.1f} ms (target < 60)")
    print(f"echo peak {result.peak:.3f}; clicks found {result.clicks_found}/{result.clicks}, "
          f"within {result.spread_ms:.2f} ms of the lag")
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"plexline serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"plexline serve did not come up:\n{log.read_text()}")


if __name__ == "__main__":
    main()
