"""The callers and the server's books that the load and the soak share: `plexline serve` with the
example tenant (acme/support answers SIP from loopback), SIP and WebRTC callers that play a steady
tone, and what the server process holds while idle."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import numpy as np

from bench.serving import OPERATOR, Server
from bench.sip_caller import Refusal, SipCall
from bench.webrtc_caller import RATE as WEBRTC_RATE
from bench.webrtc_caller import WhipCall

LINE = "+15555550100"  # the example tenant's line (acme/support): SIP from loopback, 10 calls at most
SIP_RATE = 8000
SETTLE = 15.0  # seconds for the hang-ups to free everything


@dataclass(frozen=True)
class Resources:
    """What the server process holds while idle (no call up)."""

    open_fds: int
    tasks: int
    threads: int


def tone(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A caller's steady sound (float, -1..1): a tone of its own in a little noise, never silent."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.2 * np.sin(2 * np.pi * (250 + 30 * seed) * t) + 0.01 * noise).astype(np.float32)


def pcm16(signal: np.ndarray) -> np.ndarray:
    return (signal * 32767).astype(np.int16)


def resources(server: Server) -> Resources:
    return Resources(server.open_fds(), int(server.metrics()["plexline_event_loop_tasks"]), server.threads())


def sip_caller(server: Server, number: str) -> SipCall:
    return SipCall(("127.0.0.1", server.sip_port), LINE, number)


def webrtc_caller(server: Server, seconds: float, seed: int, address: str | None = None) -> WhipCall:
    return WhipCall(server.url, OPERATOR, "acme", "support", tone(seconds, WEBRTC_RATE, seed), local_address=address)


async def warm_up(server: Server) -> None:
    """One call of each kind: what the first of each allocates for good (codecs, the executor's
    threads, aiortc's modules) is not a leak of the load."""
    sip, webrtc = sip_caller(server, "+15550009999"), webrtc_caller(server, 1.0, 99, "127.0.9.9")
    assert await sip.start() is None and (await webrtc.start()).status_code == 201, "the warm-up call was refused"
    await asyncio.wait_for(webrtc.connected.wait(), 20)
    await sip.talk(pcm16(tone(1.0, SIP_RATE, 99)))
    await asyncio.gather(sip.hang_up(), webrtc.hang_up())
    await until_idle(server, None)


async def until_idle(server: Server, before: Resources | None) -> tuple[int, list[dict], Resources]:
    """Free slots, sessions and resources once every slot is free and the resources are back (or after SETTLE)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE
    while True:
        free, sessions = await asyncio.to_thread(server.free_slots), await asyncio.to_thread(server.sessions)
        now = await asyncio.to_thread(resources, server)
        back = before is None or (now.open_fds <= before.open_fds and now.tasks <= before.tasks)
        if (not sessions and back) or loop.time() > deadline:
            return free, sessions, now
        await asyncio.sleep(0.2)


def refused_cleanly(sip: list[Refusal], webrtc: list[httpx.Response]) -> bool:
    return (all(r.status in (486, 503) and (r.retry_after or "").isdigit() for r in sip)
            and all(r.status_code == 503 and r.headers.get("Retry-After", "").isdigit() for r in webrtc))


def caller_of(call: SipCall | WhipCall) -> str:
    """Who the line records as the caller: the SIP From's number, or webrtc:ADDRESS."""
    return call.caller if isinstance(call, SipCall) else f"webrtc:{call.local_address}"
