"""sipp callers for the benchmarks and tests: a pcap of speech as sipp's play_pcap_audio plays it,
free loopback ports for SIP and RTP, and sipp started on a scenario of `sipp_scenarios/`."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from pathlib import Path

import numpy as np

from agent.media.g711 import g711_context
from bench.echo_latency import encode


def write_rtp_pcap(path: Path, pcm: np.ndarray, payload_type: int = 0) -> Path:
    """A pcap of 20 ms G.711 mu-law RTP packets of `pcm` (int16, 8 kHz), as sipp's play_pcap_audio reads."""
    encoder = g711_context("PCMU" if payload_type == 0 else "PCMA", "w")
    seq, ts, ssrc = random.getrandbits(16), random.getrandbits(32), random.getrandbits(32)
    records = []
    for i in range(len(pcm) // 160):
        payload = encode(encoder, pcm[i * 160:(i + 1) * 160])
        rtp = struct.pack("!BBHLL", 0x80, payload_type, (seq + i) & 0xFFFF, (ts + 160 * i) & 0xFFFFFFFF, ssrc) + payload
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        seconds, micros = divmod(i * 20_000, 1_000_000)
        records.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(records))
    return path


def free_udp_port(pair: bool = False) -> int:
    """A loopback port free for UDP and TCP (and, with `pair`, an even one whose next is free too)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if pair and (port % 2 or port > 65000):
            continue
        try:
            for p in (port, port + 1) if pair else (port,):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


SCENARIOS = Path(__file__).parent / "sipp_scenarios"


async def start_sipp(scenario: str, port: int, dialled: str, folder: Path, *, calls: int, timeout: float,
                     substitutions: dict[str, object], transport: str = "u1") -> asyncio.subprocess.Process:
    """sipp running `calls` calls of `scenario` (a file of SCENARIOS, its PLACEHOLDERS replaced) against
    127.0.0.1:`port`, 10 a second; each call fails after `timeout` seconds. Its output is piped."""
    text = (SCENARIOS / scenario).read_text()
    for key, value in substitutions.items():
        text = text.replace(key, str(value))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / scenario
    path.write_text(text)
    command = ["sipp", f"127.0.0.1:{port}", "-sf", str(path), "-s", dialled, "-i", "127.0.0.1",
               "-p", str(free_udp_port()), "-mp", str(free_udp_port(pair=True)), "-t", transport,
               "-m", str(calls), "-l", str(calls), "-r", "10", "-timeout", f"{int(timeout)}s",
               "-timeout_error", "-trace_err", "-nostdin"]
    return await asyncio.create_subprocess_exec(*command, cwd=str(folder), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
