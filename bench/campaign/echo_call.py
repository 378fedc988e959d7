"""A campaign call: SIP from `bench.sip_caller`, speech as RTP, the echo measured; optionally through a
relay that stands between the caller's RTP and the worker's.

What a row reads of it: how it ended (hung up by the caller with BYE answered 200, or by the
server), the echo's match with what was sent (half-second windows of normalised cross-correlation) and
the RTP leg's counters (lost, late, concealed) read just before the hang-up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from agent.contracts.calls import UnknownSession
from bench.campaign.service import LINE, Service
from bench.echo_latency import echo_lags_by_window
from bench.sip_caller import SipCall


ECHOED = 0.5  # a median window peak above this: the caller's speech came back (other speech: 0.15)
ECHO_WINDOW = 0.5  # seconds: the echo's delay wanders on a loaded machine (0.2 to 0.45 s in one call), which
# 2 s windows score as distortion (a clean call's median 0.64 against 1.00 in half-second windows)


@dataclass
class LegCounters:
    received: int = 0
    rejected: int = 0  # datagrams that were not RTP of the call's codec
    lost: int = 0
    late: int = 0  # dropped by the jitter buffer: after their turn, or twice
    gaps: int = 0  # breaks the bridge concealed
    concealed: float = 0.0  # seconds of them
    deeper: int = 0  # ticks the playout held to absorb more jitter
    shallower: int = 0  # quiet frames it dropped when calm again
    deepest: int = 0  # packets of playout depth, at most


@dataclass
class CallResult:
    status: int  # the INVITE's
    bye: int | None = None  # the BYE's final status (200 too when the line had hung up)
    hung_up_by_line: bool = False
    sent: int = 0  # RTP packets the caller sent
    returned: int = 0  # and got back
    windows: list[tuple[float, float]] = field(default_factory=list)  # (lag s, peak) of each ECHO_WINDOW
    leg: LegCounters = field(default_factory=LegCounters)

    @property
    def completed(self) -> bool:
        """Answered, kept to its end, and hung up by the caller."""
        return self.status == 200 and self.bye == 200 and not self.hung_up_by_line

    @property
    def echo(self) -> float:
        """The median peak of the windows: how much of the caller's speech came back intact."""
        return float(np.median([peak for _, peak in self.windows])) if self.windows else 0.0


class Relay(asyncio.DatagramProtocol):
    """Where the caller's RTP goes instead of the worker's port, and what the worker answers to:
    `forward(data, toward_worker)` decides each datagram's fate (the base relays at once)."""

    def __init__(self) -> None:
        self.worker: tuple[str, int] | None = None
        self.caller: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        toward_worker = addr != self.worker
        if toward_worker:
            self.caller = addr
        destination = self.worker if toward_worker else self.caller
        if destination is not None:
            self.forward(data, destination, toward_worker)

    def forward(self, data: bytes, destination: tuple[str, int], toward_worker: bool) -> None:
        self.transport.sendto(data, destination)


def counters(service: Service, call_id: str) -> LegCounters:
    try:
        rtp = service.legs.leg(call_id).rtp
    except UnknownSession:
        return LegCounters()
    return LegCounters(rtp.stats.packets_received, rtp.stats.rejected, rtp.stats.lost, rtp.jitter.stats.late,
                       rtp.bridge.gaps, float(rtp.bridge.concealed), rtp.jitter.stats.raised,
                       rtp.jitter.stats.lowered, rtp.jitter.stats.deepest)


async def call(sip_address: tuple[str, int], pcm: np.ndarray, relay: Relay | None = None, during=None,
               service: Service | None = None, number: str = "+15555550999") -> CallResult:
    """One call from `number` to the SIP server at `sip_address` that speaks `pcm` (8 kHz int16) and
    hangs up; its RTP through `relay` if given; `during(sip_call, worker_rtp_address)` runs while it
    speaks (an attack); the leg's counters are read from `service` when the server runs in this process."""
    caller = SipCall(sip_address, LINE, number)
    port = None
    if relay is not None:
        relay_transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: relay, local_addr=("127.0.0.1", 0))
        port = relay_transport.get_extra_info("sockname")[1]
    refusal = await caller.start(media_port=port)
    if refusal is not None:
        return CallResult(refusal.status)
    result, worker = CallResult(200), caller.remote_media
    destination = worker
    if relay is not None:
        relay.worker, destination = worker, ("127.0.0.1", port)
    call_id = _call_of(service, worker) if service is not None else ""
    attack = asyncio.ensure_future(during(caller, worker)) if during is not None else None
    start = await caller.media.play(pcm, destination)
    await asyncio.sleep(0.6)
    if service is not None:
        result.leg = counters(service, call_id)
    if attack is not None:
        await attack
    result.hung_up_by_line = caller.hung_up_by_line.is_set()
    result.bye = await caller.hang_up()
    rtp = caller.media
    result.sent, result.returned = len(pcm) // rtp.packet, len(rtp.packets)
    offset = round((rtp.arrival[0] - start) * rtp.rate) if rtp.arrival else 0
    aligned = np.concatenate([np.zeros(max(offset, 0), np.int16), rtp.received_audio()])
    result.windows = echo_lags_by_window(pcm, aligned, window=ECHO_WINDOW)
    if relay is not None:
        relay_transport.close()
    return result


def _call_of(service: Service, worker: tuple[str, int]) -> str:
    """The call whose leg has the worker's port `worker`."""
    for session in service.worker.sessions:
        try:
            if service.legs.leg(session.id).rtp.local[1] == worker[1]:
                return session.id
        except UnknownSession:
            continue
    return ""
