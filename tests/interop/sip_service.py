"""The service the interop tests call (`bench.campaign.service`: the control plane with its SIP server and an echo
worker, in this process) on tenants of their own, and the peers that call it.

Five tenants: `acme` admits trunks from 127.0.0.0/8 (its line `support` answers +15555550100 and
transfers to +15555550199 on DTMF 0); `globex` admits the digest user `trunk` from anywhere
(its line `desk` answers +15555550200); `initech` admits 127.0.0.2 only (+15555550300); `umbrella`
admits 127.0.0.0/8 and requires SRTP (+15555550400); `wayne` requires SIP over TLS from the PBX whose
client certificate names pbx.wayne.example, and SRTP (+15555550500).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.campaign.service import Service, serving
from bench.echo_latency import echo_lags_by_window
from bench.echo_latency import speech as speech_at
from bench.sipp import free_udp_port, write_rtp_pcap  # noqa: F401  (the SIP tests import them from here)

DIGEST_USER, DIGEST_PASSWORD = "trunk", "s3cret-pass"
PERSONA = """persona:
  role: You answer the phone for a test company.
  voice: NATF2
"""


def write_tenants(root: Path) -> Path:
    (root / "acme").mkdir(parents=True)
    (root / "acme" / "tenant.yaml").write_text(
        'name: Acme\naddresses: ["+15555550100", "+15555550101"]\n'
        "limits: {max_concurrent_calls: 50}\nsip:\n  allow: [127.0.0.0/8]\n")
    (root / "acme" / "support.yaml").write_text(
        'answers: ["+15555550100"]\n' + PERSONA + 'transfer: {digit: "0", to: "+15555550199"}\n')
    (root / "globex").mkdir()
    (root / "globex" / "tenant.yaml").write_text(
        f'name: Globex\naddresses: ["+15555550200"]\nsip:\n  digest: [{{username: {DIGEST_USER}, '
        f'password: {DIGEST_PASSWORD}}}]\n  digest_algorithms: [MD5, SHA-256]  # sipp knows only MD5, and reads the first\n')
    (root / "globex" / "desk.yaml").write_text('answers: ["+15555550200"]\n' + PERSONA)
    (root / "initech").mkdir()
    (root / "initech" / "tenant.yaml").write_text('name: Initech\naddresses: ["+15555550300"]\n'
                                                  "sip:\n  allow: [127.0.0.2/32]\n")
    (root / "initech" / "main.yaml").write_text('answers: ["+15555550300"]\n' + PERSONA)
    (root / "umbrella").mkdir()
    (root / "umbrella" / "tenant.yaml").write_text('name: Umbrella\naddresses: ["+15555550400"]\n'
                                                   "sip:\n  allow: [127.0.0.0/8]\n  require_srtp: true\n")
    (root / "umbrella" / "main.yaml").write_text('answers: ["+15555550400"]\n' + PERSONA)
    (root / "wayne").mkdir()
    (root / "wayne" / "tenant.yaml").write_text(
        'name: Wayne\naddresses: ["+15555550500"]\nsip:\n  allow: [127.0.0.0/8]\n  require_tls: true\n'
        "  require_srtp: true\n  tls_client_names: [pbx.wayne.example]\n")
    (root / "wayne" / "main.yaml").write_text('answers: ["+15555550500"]\n' + PERSONA)
    return root


RTP_TIMEOUT = 5.0  # seconds without the caller's RTP that end a call (the tests wait for it)


def running_service(folder: Path, slots: int = 24, **options: object) -> AbstractAsyncContextManager[Service]:
    """`bench.campaign.service`'s service (control plane, SIP server and worker in this process) on
    these tenants; `options` as `serving` takes them (a worker model, a reporter, settings)."""
    return serving(folder, slots, personas=write_tenants(folder / "tenants"), rtp_timeout=RTP_TIMEOUT, **options)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    async with running_service(tmp_path) as running:
        yield running


# -- media on the wire --------------------------------------------------------------------------


@dataclass
class Captured:
    """A UDP datagram seen on loopback."""

    at: float
    source: tuple[str, int]
    destination: tuple[str, int]
    payload: bytes


class LoopbackCapture:
    """Every UDP datagram on `lo`, as tcpdump would see it: a packet socket (root in the namespace)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 25)  # as much as the kernel allows
        self.sock.bind(("lo", 0))
        self.sock.setblocking(False)
        self.packets: list[Captured] = []

    def drain(self) -> list[Captured]:
        while True:
            try:
                frame, address = self.sock.recvfrom(65535)
            except BlockingIOError:
                return self.packets
            if address[2] != socket.PACKET_HOST or frame[12:14] != b"\x08\x00" or frame[23] != 17:
                continue  # keep each datagram once (as received), IPv4 UDP only
            header = (frame[14] & 0x0F) * 4
            ip, udp = frame[14:], frame[14 + header:]
            source_port, destination_port, length = struct.unpack("!HHH", udp[:6])
            self.packets.append(Captured(time.monotonic(), (socket.inet_ntoa(ip[12:16]), source_port),
                                         (socket.inet_ntoa(ip[16:20]), destination_port), udp[8:length]))

    async def collect(self, seconds: float) -> list[Captured]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.drain()
            await asyncio.sleep(0.01)
        return self.drain()

    def close(self) -> None:
        self.sock.close()


def speech(seconds: float, rate: int = 8000) -> np.ndarray:
    return speech_at(seconds, rate)


def check_echo(sent: np.ndarray, heard: np.ndarray, low: float = 0.1, high: float = 0.5,
               rate: int = 8000) -> list[tuple[float, float]]:
    """The echo engine's return of `sent` is in `heard`, 2 s at a time, with a delay in [low, high] s.

    One window may match poorly: the engine may trim a steady excess of caller audio there, and a
    window that straddles the trim holds two delays."""
    windows = echo_lags_by_window(sent, heard, rate=rate)
    assert all(low <= lag <= high for lag, peak in windows if peak > 0.5), windows
    assert sum(peak > 0.5 for _, peak in windows) >= len(windows) - 1, windows
    return windows


# -- sipp -----------------------------------------------------------------------------------------

SCENARIOS = Path(__file__).parent / "scenarios"


@dataclass
class SippRun:
    returncode: int
    output: str
    errors: str  # sipp's log of unexpected messages

    def check(self) -> None:
        assert self.returncode == 0, f"sipp failed ({self.returncode}):\n{self.output[-3000:]}\n{self.errors[-3000:]}"


async def run_sipp(port: int, scenario: str, folder: Path, dialled: str, *, calls: int = 1, substitutions=None,
                   extra: tuple[str, ...] = (), media_port: int | None = None, transport: str = "u1",
                   timeout: float = 60.0) -> SippRun:
    """Run sipp's `scenario` (a file of scenarios/, with PLACEHOLDERS replaced) against the service."""
    text = (SCENARIOS / scenario).read_text()
    for key, value in (substitutions or {}).items():
        text = text.replace(key, str(value))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / scenario
    path.write_text(text)
    command = ["sipp", f"127.0.0.1:{port}", "-sf", str(path), "-s", dialled, "-i", "127.0.0.1",
               "-p", str(free_udp_port()), "-mp", str(media_port or free_udp_port(pair=True)), "-t", transport,
               "-m", str(calls), "-l", str(calls), "-r", str(max(calls, 1)), "-timeout", f"{int(timeout)}s",
               "-timeout_error", "-trace_err", "-nostdin", *extra]
    process = await asyncio.create_subprocess_exec(*command, cwd=str(folder), stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout + 10)
    errors = "\n".join(p.read_text(errors="replace") for p in folder.glob(f"{path.stem}_*_errors.log"))
    return SippRun(process.returncode, output.decode(errors="replace"), errors)


# -- baresip --------------------------------------------------------------------------------------

BARESIP_CONFIG = """\
sip_listen      127.0.0.1:{sip_port}
net_interface   127.0.0.1
audio_source    aufile,{wav}
audio_player    aufile,{folder}/unused.wav
audio_alert     aufile,{folder}/unused-alert.wav
rtp_ports       {rtp_low}-{rtp_high}
module_path     /usr/lib/baresip/modules
module          stdio.so
module          g711.so
module          g722.so
module          srtp.so
module          aufile.so
module          sndfile.so
module_app      account.so
module_app      menu.so
snd_path        {folder}/dumps
"""


def write_wav(path: Path, pcm: np.ndarray, rate: int = 8000) -> Path:
    """A mono 16-bit WAV of `pcm` (at 8 kHz unless `rate` says otherwise)."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


async def run_baresip(folder: Path, dialled: str, port: int, wav: Path, seconds: float,
                      codecs: str = "PCMU,PCMA", mediaenc: str | None = None, uri_params: str = "",
                      ca: Path | None = None, certificate: Path | None = None) -> tuple[int, str]:
    """baresip calls `dialled` with `wav` as its microphone, offering `codecs` in that order (and
    SRTP with `mediaenc`, e.g. srtp-mand: RTP/SAVP keyed by SDES), and records both directions
    under folder/dumps. Over TLS: `uri_params` ";transport=tls", the server's `ca`, and the
    client `certificate` (with its key) it shows, if any."""
    (folder / "dumps").mkdir(parents=True, exist_ok=True)
    sip_port, rtp_low = free_udp_port(), free_udp_port(pair=True)
    config = BARESIP_CONFIG.format(sip_port=sip_port, wav=wav, folder=folder, rtp_low=rtp_low, rtp_high=rtp_low + 1)
    config += f"sip_cafile      {ca}\n" if ca else ""
    config += f"sip_certificate {certificate}\n" if certificate else ""
    (folder / "config").write_text(config)
    transport = "tls" if "transport=tls" in uri_params else "udp"
    (folder / "accounts").write_text(f"<sip:probe@127.0.0.1:{sip_port};transport={transport}>;regint=0;"
                                     f"audio_codecs={codecs}" + (f";mediaenc={mediaenc}" if mediaenc else "") + "\n")
    process = await asyncio.create_subprocess_exec(
        "baresip", "-4", "-f", str(folder), "-e", f"/dial sip:{dialled}@127.0.0.1:{port}{uri_params}",
        "-t", str(int(seconds)),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), seconds + 15)
    return process.returncode, output.decode(errors="replace")
