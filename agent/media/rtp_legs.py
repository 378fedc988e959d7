"""The worker's RTP legs: a port pair for each call that the control plane answered over SIP.

`open` binds a leg for a session on the worker and attaches it as the session's media link, so
the session owns it from then on: the leg's sockets close when the call ends, whatever ends it.
Digits the caller presses are logged and kept on the leg; the line's transfer digit ends the call
with the transfer reason, for the control plane to hand the caller to a human.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from agent.contracts.calls import UnknownSession
from agent.contracts.media import MediaAddress, RtpLegSpec, transfer_reason
from agent.media.rtp_session import RtpSession
from agent.session import Session

log = logging.getLogger(__name__)

BIND_ATTEMPTS = 64


class NoMediaPort(RuntimeError):
    pass


@dataclass
class RtpLeg:
    session: Session
    rtp: RtpSession
    digits: list[str] = field(default_factory=list)

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)
        self.session.pressed(digit)  # into the call's transcript
        log.info("caller pressed a key", extra={"call": self.session.id, "digit": digit})
        if digit == self.rtp.spec.transfer_digit:
            self.session.request_end(transfer_reason(digit))


class RtpLegs:
    def __init__(self, host: str, ports: range = range(20000, 30000), advertised_host: str | None = None):
        """Legs bind `host`; SDP answers name `advertised_host` (default `host`): the address callers
        reach, where a NAT or a container's published ports stand in front of it."""
        if len(ports) < 2:
            raise ValueError(f"the RTP port range {ports.start}-{ports.stop - 1} needs at least two ports")
        self.host = host
        self.advertised_host = advertised_host or host
        self.ports = ports
        self._legs: dict[str, RtpLeg] = {}

    def leg(self, call_id: str) -> RtpLeg:
        if call_id not in self._legs:
            raise UnknownSession(f"call {call_id!r} has no RTP leg")
        return self._legs[call_id]

    async def open(self, session: Session, spec: RtpLegSpec) -> MediaAddress:
        if session.id in self._legs:
            return self.update(session.id, spec)
        rtp = RtpSession(spec)
        leg = RtpLeg(session, rtp)
        rtp.on_dtmf = leg.on_dtmf
        await self._bind(rtp)
        self._legs[session.id] = leg
        try:
            session.attach(_Owned(self, session.id, rtp))
        except BaseException:
            del self._legs[session.id]
            rtp.close()
            raise
        log.info("RTP leg opened", extra={"call": session.id, "local": f"{self.host}:{rtp.local[1]}",
                                          "remote": f"{spec.remote_host}:{spec.remote_port}", "codec": spec.codec})
        return MediaAddress(host=self.advertised_host, port=rtp.local[1])

    def forget(self, call_id: str) -> None:
        self._legs.pop(call_id, None)

    def update(self, call_id: str, spec: RtpLegSpec) -> MediaAddress:
        leg = self.leg(call_id)
        leg.rtp.update(spec)
        return MediaAddress(host=self.advertised_host, port=leg.rtp.local[1])

    async def _bind(self, rtp: RtpSession) -> None:
        in_use = {leg.rtp.local[1] for leg in self._legs.values()}
        even = [p for p in range(self.ports.start + self.ports.start % 2, self.ports.stop - 1, 2) if p not in in_use]
        for port in random.sample(even, min(len(even), BIND_ATTEMPTS)):
            try:
                await rtp.bind(self.host, port)
                return
            except OSError:
                continue
        raise NoMediaPort(f"no free RTP port pair in {self.ports.start}-{self.ports.stop - 1}")


class _Owned:
    """The leg as the session's media link; it leaves the table when the link ends."""

    def __init__(self, legs: RtpLegs, call_id: str, rtp: RtpSession):
        self.legs, self.call_id, self.rtp = legs, call_id, rtp

    async def run(self, slot) -> None:
        try:
            await self.rtp.run(slot)
        finally:
            self.legs.forget(self.call_id)
            self.rtp.close()
