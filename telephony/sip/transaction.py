"""SIP transactions (RFC 3261 §17): retransmissions and timers, so the layers above see each request once.

Server side: a retransmitted request is answered with the last response sent, or absorbed; over
UDP a final non-2xx response to an INVITE is resent (timer G) until its ACK or timer H. (A 2xx to
an INVITE is the dialog's to resend, §13.3.1.4; see `sip_server`.) Client side: a request we send
(BYE, REFER) is resent over UDP (timer E) until a final response or timer F, which fails it with
a 408. Timers are loop callbacks held by their transaction and cancelled when it ends.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from telephony.sip.message import MAGIC_COOKIE, NameAddr, SipMessage, SipRequest, SipResponse, Via
from telephony.sip.transport import Peer

T1, T2, T4 = 0.5, 4.0, 5.0

Send = Callable[[SipMessage, Peer], None]


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def server_key(request: SipRequest) -> tuple[str, str, str]:
    """RFC 3261 §17.2.3: the top Via's branch and sent-by, and the method (ACK and CANCEL match their
    INVITE through it). A branch without the magic cookie (an RFC 2543 peer) is not unique: the
    Call-ID, the From tag and the CSeq number stand in for it."""
    via = Via.parse(request.headers.get_all("Via")[0])
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if not branch.startswith(MAGIC_COOKIE):
        from_tag = NameAddr.parse(request.headers.get("From") or "", "From").tag
        branch = f"rfc2543 {request.call_id} {from_tag} {request.cseq[0]} {branch}"
    return branch, f"{via.host}:{via.port or 5060}", method


@dataclass
class ServerTransaction:
    key: tuple[str, str, str]
    request: SipRequest
    peer: Peer
    send: Send
    last: SipResponse | None = None
    confirmed: bool = False  # an INVITE's non-2xx final response was acknowledged
    resend_final: bool = True  # timer G; False: the final response is resent only for a resent request
    _timers: list[asyncio.TimerHandle] = field(default_factory=list)
    on_end: Callable[[ServerTransaction], None] | None = None

    @property
    def reliable(self) -> bool:
        return self.peer.transport != "UDP"

    def respond(self, response: SipResponse) -> None:
        if self.last is not None and self.last.status >= 200:
            return  # a final response was sent: the transaction answers nothing more
        self.last = response
        self.send(response, self.peer)
        if response.status < 200:
            return
        loop = asyncio.get_running_loop()
        if self.request.method == "INVITE" and response.status >= 300:
            if not self.reliable and self.resend_final:
                self._retransmit(T1)
            self._timers.append(loop.call_later(64 * T1, self.end))  # timer H
        else:  # 2xx to INVITE (the dialog resends it) or any final response to other requests: timer J
            self._timers.append(loop.call_later(0 if self.reliable else 64 * T1, self.end))

    def _retransmit(self, interval: float) -> None:
        def fire() -> None:
            if self.confirmed or self.last is None:
                return
            self.send(self.last, self.peer)
            self._retransmit(min(2 * interval, T2))

        self._timers.append(asyncio.get_running_loop().call_later(interval, fire))

    def retransmitted(self) -> None:
        """The same request came again: repeat what we said, if we said anything."""
        if self.last is not None:
            self.send(self.last, self.peer)

    def acknowledged(self) -> None:
        self.confirmed = True
        for timer in self._timers:
            timer.cancel()
        self._timers = [asyncio.get_running_loop().call_later(0 if self.reliable else T4, self.end)]  # timer I

    def end(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        if self.on_end is not None:
            self.on_end(self)


@dataclass
class ClientTransaction:
    request: SipRequest
    peer: Peer
    send: Send
    result: asyncio.Future[SipResponse]
    _timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.send(self.request, self.peer)
        if self.peer.transport == "UDP":
            self._retransmit(T1)
        self._timers.append(loop.call_later(64 * T1, self._timeout))  # timer F

    def _retransmit(self, interval: float) -> None:
        def fire() -> None:
            if not self.result.done():
                self.send(self.request, self.peer)
                self._retransmit(min(2 * interval, T2))

        self._timers.append(asyncio.get_running_loop().call_later(interval, fire))

    def _timeout(self) -> None:
        if not self.result.done():
            self.result.set_result(SipResponse(408, "Request Timeout"))
        self.stop()

    def response(self, response: SipResponse) -> None:
        if response.status >= 200 and not self.result.done():
            self.result.set_result(response)
            self.stop()

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []


class Transactions:
    """The transaction layer: matches requests and responses to their transactions."""

    def __init__(self, send: Send):
        self.send = send
        self._server: dict[tuple[str, str, str], ServerTransaction] = {}
        self._client: dict[tuple[str, str], ClientTransaction] = {}

    def absorb_ack(self, ack: SipRequest) -> bool:
        """True if `ack` acknowledges a non-2xx final response (an ACK for a 2xx is the dialog's)."""
        existing = self._server.get(server_key(ack))
        if existing is not None and existing.last is not None and existing.last.status >= 300:
            existing.acknowledged()
            return True
        return False

    def server(self, request: SipRequest, peer: Peer) -> ServerTransaction | None:
        """The new transaction of `request` (not an ACK), or None for a retransmission (answered here)."""
        key = server_key(request)
        existing = self._server.get(key)
        if existing is not None:
            existing.retransmitted()
            return None
        transaction = ServerTransaction(key, request, peer, self.send, on_end=self._server_ended)
        self._server[key] = transaction
        return transaction

    def invite_for_cancel(self, cancel: SipRequest) -> ServerTransaction | None:
        key = server_key(cancel)
        return self._server.get((key[0], key[1], "INVITE"))

    def _server_ended(self, transaction: ServerTransaction) -> None:
        if self._server.get(transaction.key) is transaction:
            del self._server[transaction.key]

    async def request(self, request: SipRequest, peer: Peer) -> SipResponse:
        """Send `request` (its top Via's branch is the key) and wait for its final response."""
        branch = Via.parse(request.headers.get_all("Via")[0]).branch
        key = (branch, request.method)
        transaction = ClientTransaction(request, peer, self.send, asyncio.get_running_loop().create_future())
        self._client[key] = transaction
        try:
            transaction.start()
            return await transaction.result
        finally:
            transaction.stop()
            self._client.pop(key, None)

    def response(self, response: SipResponse) -> bool:
        """Give a response to its client transaction; False if none is waiting for it."""
        vias = response.headers.get_all("Via")
        if not vias:
            return False
        try:
            key = (Via.parse(vias[0]).branch, response.cseq[1])
        except ValueError:
            return False
        transaction = self._client.get(key)
        if transaction is None:
            return False
        transaction.response(response)
        return True

    def close(self) -> None:
        for transaction in list(self._server.values()):
            transaction.end()
        for client in list(self._client.values()):
            client.stop()
            if not client.result.done():
                client.result.cancel()
