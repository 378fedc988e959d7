"""The control plane's SIP user agent server: trunks and PBXs call the tenants' lines here.

An INVITE is checked, then answered 100 Trying: the line from the Request-URI (or To)
user in the tenant store (404), the tenant's trust (source networks: 403; digest: 401 challenge),
the SDP offer (488, also where the trunk requires SRTP and the offer is plain RTP). A worker
slot is reserved through the call router (no slot, or the tenant over its fair share of a nearly
full cluster: 503 with Retry-After; the tenant's limit: 486 with Retry-After; each is refused
without ringing, and the router records the refusal; a trunk is not limited per source); then
180 Ringing goes out while the worker opens the RTP leg; the
200 OK carries the worker's media address, and is resent over UDP until the ACK (64 x T1 without
one ends the call). CANCEL before the answer ends the attempt with 487. BYE from the caller ends
the call on its worker at once. re-INVITEs change the leg (hold, resume, codec). OPTIONS is
answered for keep-alives. A call that ends anywhere else (the worker's maximum duration, its RTP
timeout, an admin, a lost worker) is seen in the registry and hung up with a BYE, or, when the
caller pressed the line's transfer digit, transferred with a REFER first.

Every request is inspected as RFC 3261 §8.2 orders it before it reaches a handler: its method
(405 or 501, with Allow), its Request-URI's scheme (416), its Require (420, with Unsupported); an
INVITE's body must be SDP (415, with Accept) and its Accept must allow SDP (406).

A control plane told to stop drains first: new INVITEs get 503 with Retry-After (the trunk fails
over to another one) while the calls in progress go on, until they end or `drain_timeout`. Each
answered dialog is remembered in the registry (what a BYE needs: `Dialog.dumps`; its target refreshed
by re-INVITEs), so the caller's BYE ends the call through any control plane, and a call that ends
elsewhere is hung up by another control plane when the one that answered is gone (`_hang_up_orphans`).

Every task the server starts is kept in `_tasks` and cancelled and awaited on `stop`. Sources
that send bad requests are rate-limited (`SourceLimiter`): once a source has spent its allowance,
its bad requests go unanswered, but its good ones are still served, since a UDP source address
can be forged (a flood "from" a trunk must not silence the trunk). A request that cannot be read
gets a 400 (505, 513) whose reason phrase says what is wrong; a response that cannot be read, or
bytes that are no SIP, are dropped. A bug in a handler is logged and the request answered 500.
A refused INVITE (404, 403, 401, 488, ...) gets its final response once, without 100 Trying and
without timer G's copies, and again only when the INVITE itself comes again: a forged source can
make the server send no more than it was sent.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import secrets
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field

from agent.contracts.errors import describe
from agent.contracts.media import TRANSFER_REASON_PREFIX, MediaAddress
from agent.contracts.tasks import cancel_and_wait
from agent.contracts.workers import WorkerInfo
from personas.store import Route, TenantStore
from personas.tenant import SipTrunk
from telephony.control.registry import (
    IN_PROGRESS,
    CallRecord,
    Registry,
    RegistryUnavailable,
    StoredDialog,
    TenantLimitReached,
)
from telephony.control.routing import REFUSED, Caller, CallRouter
from telephony.control.worker_client import WorkerClient, WorkerRefused
from telephony.sip.dialog import Dialog, new_tag
from telephony.sip.digest import DigestAuthenticator
from telephony.sip.message import (
    REASONS,
    NameAddr,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    parse_message,
    response_to,
)
from telephony.sip.rate_limit import SourceLimiter
from telephony.sip.sdp import (
    MediaPlan,
    NotAcceptable,
    SessionDescription,
    answer_for,
    plan_for_offer,
    rtp_leg,
)
from telephony.sip.transaction import T1, T2, ServerTransaction, Transactions
from telephony.sip.transport import Peer, SipTransport, certificate_names

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, REFER"
KNOWN_METHODS = ("REGISTER", "SUBSCRIBE", "MESSAGE", "UPDATE", "PRACK", "PUBLISH")  # known, not served: 405
SUPPORTED = ("replaces",)  # option tags a caller may Require
URI_SCHEMES = ("sip", "sips", "tel")
WATCH_INTERVAL = 0.5  # seconds between looks at the registry for calls ended elsewhere
NOTIFY_WAIT = 10.0  # seconds to wait for the outcome of a transfer before hanging up anyway
DRAIN_POLL = 0.2  # seconds between looks for the last call while draining
DIALOG_TTL_MARGIN = 300  # seconds a dialog is remembered beyond its line's longest call
ORPHAN_GRACE = 2.0  # seconds an ended call's dialog is left to the control plane that answered it
SRTP_REQUIRED = "this trunk requires SRTP: offer RTP/SAVP with an SDES key (a=crypto)"


class Phase(enum.Enum):
    OFFERED = "offered"  # INVITE received, not answered yet
    ANSWERED = "answered"  # 200 OK sent, waiting for the ACK
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(frozen=True)
class SipConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    advertised_host: str | None = None  # put in Via and Contact when `host` is a wildcard
    rtp_timeout: float = 30.0
    jitter_packets: int = 1
    jitter_max_packets: int = 6
    realm: str = "plexline"
    retry_after_seconds: int = 5  # in a 503 when no worker can take a call
    tls: ssl.SSLContext | None = None  # SIP over TLS too, on `tls_port` (see transport.server_tls_context)
    tls_port: int = 5061
    drain_timeout: float = 0.0  # seconds `stop` waits for calls in progress to end before hanging up

    @property
    def public_host(self) -> str:
        return self.advertised_host or self.host


@dataclass(eq=False)
class SipCall:
    dialog: Dialog
    invite: ServerTransaction
    route: Route
    phase: Phase = Phase.OFFERED
    record: CallRecord | None = None
    worker: WorkerInfo | None = None
    plan: MediaPlan | None = None
    media: MediaAddress | None = None
    answer: bytes = b""
    sdp_session: int = field(default_factory=lambda: secrets.randbelow(2**31))
    sdp_version: int = 0
    setup: asyncio.Task[None] | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    notified: asyncio.Queue[int] = field(default_factory=asyncio.Queue)  # sipfrag statuses of a transfer
    reinvite: ServerTransaction | None = None
    stored: bool = False  # its dialog is in the registry (`_remember`)


class SipServer:
    def __init__(self, config: SipConfig, store: TenantStore, router: CallRouter, workers: WorkerClient,
                 registry: Registry):
        self.config = config
        self.store = store
        self.router = router
        self.workers = workers
        self.registry = registry
        self.transport = SipTransport(config.host, config.port, self._on_bytes, tls=config.tls,
                                      tls_port=config.tls_port)
        self.transactions = Transactions(self._send)
        self.digest = DigestAuthenticator()
        self.limiter = SourceLimiter()
        self.calls: dict[tuple[str, str], SipCall] = {}  # (Call-ID, our tag) -> call
        self._tasks: set[asyncio.Task] = set()
        self._ending: set[asyncio.Task] = set()  # ending calls their callers hung up (`_spawn_ending`)
        self._watcher: asyncio.Task[None] | None = None
        self._orphans: dict[str, float] = {}  # ended calls' dialogs in the registry -> first seen (loop time)
        self.draining = False  # new INVITEs are refused with 503

    @property
    def port(self) -> int:
        return self.transport.port

    async def start(self) -> None:
        await self.transport.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_forever(), name="sip-watch")
        log.info("SIP listening", extra={"host": self.config.host, "port": self.port,
                                         "tls_port": self.transport.tls_port if self.config.tls else None})

    async def drain(self, timeout: float) -> None:
        """Take no new INVITEs (503 with Retry-After, so the trunk fails over to another control
        plane) and wait up to `timeout` seconds for the calls in progress to end."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.calls:
            log.info("SIP draining", extra={"calls": len(self.calls), "timeout": timeout})
        while (self.calls or self._ending) and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL)

    async def stop(self) -> None:
        """Drain for the configured time, hang up the calls still in progress, then stop every task
        and the sockets."""
        await self.drain(self.config.drain_timeout)
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
        hangups = [self._spawn(self._hang_up(c, "the service is shutting down"))
                   for c in list(self.calls.values()) if c.phase in (Phase.ANSWERED, Phase.CONFIRMED)]
        if hangups:
            await asyncio.wait(hangups, timeout=2.0)
        await cancel_and_wait(*self._tasks)
        self.transactions.close()
        await self.transport.stop()

    def _spawn(self, coroutine: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _spawn_ending(self, coroutine: Coroutine) -> None:
        """A task that ends a call its caller hung up: a draining control plane waits for it."""
        task = self._spawn(coroutine)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP task failed", exc_info=task.exception())

    # -- messages in ----------------------------------------------------------------------------

    def _send(self, message: SipMessage, peer: Peer) -> None:
        self.transport.send(message.serialise(), peer)

    def _on_bytes(self, data: bytes, peer: Peer) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            message = parse_message(data)
        except SipParseError as error:
            limited = not self.limiter.allowed(peer.host)
            self.limiter.penalise(peer.host)
            if limited:
                return
            log.info("bad SIP message", extra={"peer": str(peer), "error": describe(error)})
            if error.request is not None and error.request.method != "ACK":
                self._send(response_to(error.request, error.status, to_tag=new_tag(),
                                       reason=_reason(error.status, str(error))), peer)
            return
        if isinstance(message, SipResponse):
            self.transactions.response(message)
        else:
            self._on_request(message, peer)

    def _on_request(self, request: SipRequest, peer: Peer) -> None:
        if request.method == "ACK":
            if not self.transactions.absorb_ack(request):
                self._on_ack(request)
            return
        transaction = self.transactions.server(request, peer)
        if transaction is None:
            return  # a retransmission, answered by its transaction
        try:
            self._dispatch(transaction)
        except Exception as error:  # a bug: logged, and the request answered; the server goes on
            log.exception("SIP request handling failed", extra={"peer": str(peer), "method": request.method})
            transaction.resend_final = False
            transaction.respond(response_to(request, 500, to_tag=new_tag(), reason=_reason(500, repr(error))))

    def _dispatch(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        to_tag = NameAddr.parse(request.headers.get("To") or "", "To").tag
        if request.method == "CANCEL":  # Require does not apply to CANCEL (§8.2.2.3)
            self._on_cancel(transaction)
        elif (refusal := _inspect(request)) is not None:
            transaction.respond(refusal)
        elif to_tag:
            self._in_dialog(transaction, to_tag)
        elif request.method == "INVITE":
            self._on_invite(transaction)
        elif request.method == "OPTIONS":
            transaction.respond(self._options_response(request))
        else:  # BYE, NOTIFY, INFO, REFER outside a dialog
            transaction.respond(response_to(request, 481, to_tag=new_tag()))

    def _options_response(self, request: SipRequest) -> SipResponse:
        response = response_to(request, 200, to_tag=new_tag())
        response.headers.add("Allow", ALLOW)
        response.headers.add("Accept", "application/sdp")
        response.headers.add("Supported", "replaces")
        return response

    # -- a new call -----------------------------------------------------------------------------

    def _on_invite(self, transaction: ServerTransaction) -> None:
        request, peer = transaction.request, transaction.peer
        limited = not self.limiter.allowed(peer.host)
        if self.draining:
            response = response_to(request, 503, to_tag=new_tag(), warning="this control plane is shutting down")
            response.headers.add("Retry-After", str(self.config.retry_after_seconds))
            transaction.resend_final = False  # resent only when the INVITE comes again
            transaction.respond(response)
            return
        refusal = self._check_invite(transaction)
        if refusal is not None:
            if limited and refusal.status != 401:  # a challenge still goes out: the source may be a trunk
                transaction.end()  # over its allowance: its bad requests go unanswered
                return
            transaction.resend_final = False  # resent only when the INVITE comes again
            transaction.respond(refusal)
            return
        transaction.respond(response_to(request, 100))
        dialog = Dialog.answering(request, new_tag(), peer, self._contact(request, peer.transport))
        route = self._route(request)
        call = SipCall(dialog, transaction, route)
        self.calls[(dialog.call_id, dialog.local_tag)] = call
        call.setup = self._spawn(self._set_up(call))

    def _check_invite(self, transaction: ServerTransaction) -> SipResponse | None:
        """The refusal of an INVITE (404, 403, 401, 488), or None if it may go on."""
        request, peer = transaction.request, transaction.peer
        tag = new_tag()
        route = self._route(request)
        if route is None:
            self.limiter.penalise(peer.host)
            return response_to(request, 404, to_tag=tag)
        trunk = route.tenant.tenant.sip
        if trunk is None or not (trunk.allow or trunk.digest or trunk.tls_client_names):
            self.limiter.penalise(peer.host)
            return response_to(request, 403, to_tag=tag, warning="this line takes no SIP calls")
        if trunk.allow and not _allowed(peer.host, trunk.allow):
            self.limiter.penalise(peer.host)
            return response_to(request, 403, to_tag=tag)
        refusal = self._check_tls(trunk, peer)
        if refusal is not None:
            self.limiter.penalise(peer.host)
            return response_to(request, 403, to_tag=tag, warning=refusal)
        if trunk.digest:
            challenge = self._authenticate(request, route, peer)
            if challenge is not None:
                return challenge
        content_type = (request.headers.get("Content-Type") or "application/sdp").partition(";")[0].strip()
        if content_type.lower() != "application/sdp":
            response = response_to(request, 415, to_tag=tag, warning=f"{content_type[:40]} is not SDP")
            response.headers.add("Accept", "application/sdp")
            return response
        if not _accepts_sdp(request.headers.get_all("Accept")):
            return response_to(request, 406, to_tag=tag, warning="the answer is SDP, which Accept does not allow")
        if not request.body:
            return response_to(request, 488, to_tag=tag, warning="an SDP offer in the INVITE is required")
        try:
            plan = plan_for_offer(SessionDescription.parse(request.body))
        except NotAcceptable as error:
            return response_to(request, 488, to_tag=tag, warning=str(error))
        except ValueError as error:
            self.limiter.penalise(peer.host)
            return response_to(request, 488, to_tag=tag, warning=f"malformed SDP: {error}")
        if trunk.require_srtp and plan.srtp is None:
            return response_to(request, 488, to_tag=tag, warning=SRTP_REQUIRED)
        return None

    def _check_tls(self, trunk: SipTrunk, peer: Peer) -> str | None:
        """Why the trunk's TLS policy refuses `peer` (require_tls, client certificate names), or None."""
        if not (trunk.require_tls or trunk.tls_client_names):
            return None
        if peer.transport != "TLS":
            return f"this trunk requires SIP over TLS (port {self.transport.tls_port})"
        if not trunk.tls_client_names:
            return None
        certificate = self.transport.peer_certificate(peer)
        if not certificate:
            return "this trunk authenticates with a client certificate: none was presented"
        if not certificate_names(certificate) & {n.lower() for n in trunk.tls_client_names}:
            return "the client certificate names none of this trunk's tls_client_names"
        return None

    def _authenticate(self, request: SipRequest, route: Route, peer: Peer) -> SipResponse | None:
        realm = self.config.realm
        passwords = {u.username: u.password for u in route.tenant.tenant.sip.digest}
        header = request.headers.get("Authorization")
        stale = False
        if header is not None:
            good, stale = self.digest.check(header, request.method, realm, passwords)
            if good:
                return None
            if not stale:
                self.limiter.penalise(peer.host)
        response = response_to(request, 401, to_tag=new_tag())
        for challenge in self.digest.challenges(realm, route.tenant.tenant.sip.digest_algorithms, stale):
            response.headers.add("WWW-Authenticate", challenge)
        return response

    def _route(self, request: SipRequest) -> Route | None:
        catalog = self.store.catalog
        for user in _dialled(request):
            route = catalog.route(user)
            if route is not None:
                return route
        return None

    async def _set_up(self, call: SipCall) -> None:
        request, transaction = call.invite.request, call.invite
        local_tag = call.dialog.local_tag
        try:
            call.plan = plan_for_offer(SessionDescription.parse(request.body))
            caller = Caller(_user(request.headers.get("From")), _user(request.headers.get("To")))
            try:
                call.record = await self.router.place(call.route, caller)
            except TenantLimitReached as error:
                return self._refuse(call, 486, str(error), retry_after=True)
            except REFUSED as error:  # no slot, the tenant's fair share, the registry unreachable
                return self._refuse(call, 503, str(error), retry_after=True)
            ringing = response_to(request, 180, to_tag=local_tag)  # only once a slot is held
            self._dialog_headers(ringing, request, call)
            transaction.respond(ringing)
            call.worker = await self._worker_of(call.record)
            line = call.route.line
            spec = rtp_leg(call.plan, line.transfer.digit if line.transfer else None, self.config.rtp_timeout,
                               self.config.jitter_packets, self.config.jitter_max_packets)
            try:
                call.media = await self.workers.set_rtp(call.worker, call.record.call_id, spec)
            except WorkerRefused as error:
                await self.router.end(call.record, f"the media leg could not be opened: {error}")
                return self._refuse(call, 503, str(error), retry_after=True)
            if call.phase is Phase.ENDED:  # the caller left while a lost cancellation let the setup go on
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            if call.record is not None:
                await asyncio.shield(self.router.end(call.record, "the caller cancelled"))
            raise
        except Exception as error:
            log.exception("call setup failed", extra={"sip_call_id": call.dialog.call_id})
            if call.record is not None:
                await self.router.end(call.record, f"SIP setup failed: {error!r}")
            return self._refuse(call, 500, "internal error")
        log.info("SIP call answered", extra={"call": call.record.call_id, "sip_call_id": call.dialog.call_id,
                                             "line": call.route.line_id, "media": f"{call.media.host}:{call.media.port}"})
        call.answer = self._answer_sdp(call)
        ok = response_to(request, 200, to_tag=local_tag)
        self._dialog_headers(ok, request, call)
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = call.answer
        call.phase = Phase.ANSWERED
        transaction.respond(ok)
        await self._remember(call)
        await self._until_acked(call, transaction.peer, ok)

    async def _remember(self, call: SipCall) -> None:
        """Keep the answered dialog in the registry, for as long as its call may last: any control
        plane can then end the call on the caller's BYE, or send the BYE, if this one is gone."""
        stored = StoredDialog(_dialog_key(call.dialog), call.record.call_id, call.dialog.dumps())
        try:
            await self.registry.put_dialog(stored, call.route.max_call_seconds + DIALOG_TTL_MARGIN)
        except RegistryUnavailable as error:  # the call goes on; only this control plane can hang it up
            log.warning("an answered dialog not remembered", extra={"call": call.record.call_id,
                                                                     "error": describe(error)})
            return
        call.stored = True
        if call.phase is Phase.ENDED:  # hung up while it was being stored: forgotten again
            await self._claim(call)

    def _refuse(self, call: SipCall, status: int, reason: str, retry_after: bool = False) -> None:
        log.info("SIP call refused", extra={"sip_call_id": call.dialog.call_id, "status": status, "reason": reason})
        response = response_to(call.invite.request, status, to_tag=call.dialog.local_tag, warning=reason)
        if retry_after:
            response.headers.add("Retry-After", str(self.config.retry_after_seconds))
        call.phase = Phase.ENDED
        self.calls.pop((call.dialog.call_id, call.dialog.local_tag), None)
        call.invite.respond(response)

    async def _worker_of(self, record: CallRecord) -> WorkerInfo:
        for status in await self.registry.workers():
            if status.info.id == record.worker:
                return status.info
        raise WorkerRefused(f"worker {record.worker} is gone")

    def _dialog_headers(self, response: SipResponse, request: SipRequest, call: SipCall) -> None:
        for route in request.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", route)
        response.headers.add("Contact", call.dialog.contact)
        response.headers.add("Allow", ALLOW)
        response.headers.add("Supported", "replaces")

    def _contact(self, request: SipRequest, transport: str) -> str:
        """Our Contact in the dialog of an INVITE: on the transport and port it came by; `sips:`
        where the caller asked for TLS all the way (a sips Request-URI, RFC 5630 §3), else
        `;transport=tls` for a sip URI over TLS, as trunks and PBXs expect."""
        user = _user(request.headers.get("To")) or "plexline"
        host = self.config.public_host
        host = f"[{host}]" if ":" in host else host
        port = self.transport.port_for(transport)
        if transport == "TLS" and request.uri.lower().startswith("sips:"):
            return f"<sips:{user}@{host}:{port}>"
        return f"<sip:{user}@{host}:{port};transport={transport.lower()}>"

    def _answer_sdp(self, call: SipCall) -> bytes:
        call.sdp_version += 1
        return answer_for(call.plan, call.media.host, call.media.port, call.sdp_session, call.sdp_version).serialise()

    async def _until_acked(self, call: SipCall, peer: Peer, ok: SipResponse) -> None:
        """Resend the 2xx over UDP until the ACK (RFC 3261 §13.3.1.4); no ACK: hang up."""
        interval, waited = T1, 0.0
        while not call.acked.is_set():
            try:
                await asyncio.wait_for(call.acked.wait(), interval)
            except TimeoutError:
                waited += interval
                if waited >= 64 * T1:
                    log.warning("no ACK for the 200 OK: hanging up", extra={"sip_call_id": call.dialog.call_id})
                    await self._hang_up(call, "the caller never acknowledged the answer")
                    return
                if peer.transport == "UDP":
                    self._send(ok, peer)
                interval = min(2 * interval, T2)

    # -- requests inside a dialog ---------------------------------------------------------------

    def _on_ack(self, ack: SipRequest) -> None:
        to_tag = NameAddr.parse(ack.headers.get("To") or "", "To").tag
        call = self.calls.get((ack.call_id, to_tag))
        if call is None:
            return
        call.acked.set()
        if call.phase is Phase.ANSWERED:
            call.phase = Phase.CONFIRMED
        if call.reinvite is not None:
            call.reinvite = None

    def _on_cancel(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        invite = self.transactions.invite_for_cancel(request)
        if invite is None:
            transaction.respond(response_to(request, 481, to_tag=new_tag()))
            return
        transaction.respond(response_to(request, 200, to_tag=new_tag()))
        call = next((c for c in self.calls.values() if c.invite is invite), None)
        if call is None or call.phase is not Phase.OFFERED:
            return  # answered already (the caller will BYE) or refused
        self._abandon_setup(call)
        call.phase = Phase.ENDED
        self.calls.pop((call.dialog.call_id, call.dialog.local_tag), None)
        invite.respond(response_to(invite.request, 487, to_tag=call.dialog.local_tag))
        log.info("SIP call cancelled", extra={"sip_call_id": call.dialog.call_id})

    def _abandon_setup(self, call: SipCall) -> None:
        """Stop the call's setup for sure: it talks to Redis and the worker, and one lost
        cancellation (see agent.contracts.tasks) would hold a slot and open a leg for a caller gone."""
        if call.setup is not None:
            self._spawn(cancel_and_wait(call.setup))

    def _in_dialog(self, transaction: ServerTransaction, to_tag: str) -> None:
        request = transaction.request
        call = self.calls.get((request.call_id, to_tag))
        if call is None and request.method == "BYE":
            self._spawn_ending(self._bye_of_another_plane(transaction, to_tag))
            return
        if call is None:
            transaction.respond(response_to(request, 481))
            return
        number = request.cseq[0]
        if number < call.dialog.remote_cseq or (number == call.dialog.remote_cseq and request.method != "CANCEL"):
            transaction.respond(response_to(request, 500, warning="CSeq out of order"))
            return
        call.dialog.remote_cseq = number
        if request.method == "BYE":
            transaction.respond(response_to(request, 200))
            self._caller_hung_up(call)
        elif request.method == "INVITE":
            self._on_reinvite(call, transaction)
        elif request.method == "NOTIFY":
            transaction.respond(response_to(request, 200))
            status = _sipfrag_status(request.body)
            if status is not None:
                call.notified.put_nowait(status)
        elif request.method in ("INFO", "OPTIONS"):
            transaction.respond(self._options_response(request) if request.method == "OPTIONS"
                                else response_to(request, 200))
        else:  # REFER from the caller
            response = response_to(request, 405)
            response.headers.add("Allow", ALLOW)
            transaction.respond(response)

    async def _bye_of_another_plane(self, transaction: ServerTransaction, to_tag: str) -> None:
        """A BYE for a dialog this control plane does not hold: another one answered it (and may be
        gone). The dialog is taken from the registry and its call ended; one nobody remembers gets 481."""
        request = transaction.request
        try:
            stored = await self.registry.take_dialog(f"{request.call_id}:{to_tag}")
            record = await self.registry.call(stored.call_id) if stored is not None else None
        except RegistryUnavailable:
            transaction.respond(response_to(request, 503, warning="the call registry is unreachable"))
            return
        if stored is None:
            transaction.respond(response_to(request, 481))
            return
        if record is not None and record.state in IN_PROGRESS:
            await self.router.end(record, "the caller hung up")
        transaction.respond(response_to(request, 200))
        log.info("caller hung up a call another control plane answered", extra={"call": stored.call_id,
                                                                                 "sip_call_id": request.call_id})

    def _caller_hung_up(self, call: SipCall) -> None:
        previous, call.phase = call.phase, Phase.ENDED
        self.calls.pop((call.dialog.call_id, call.dialog.local_tag), None)
        call.acked.set()
        if previous is Phase.OFFERED and call.setup is not None:  # a BYE in the early dialog
            self._abandon_setup(call)
            call.invite.respond(response_to(call.invite.request, 487, to_tag=call.dialog.local_tag))
        elif call.record is not None and previous is not Phase.ENDED:
            self._spawn_ending(self._end_hung_up(call))
        log.info("caller hung up", extra={"sip_call_id": call.dialog.call_id})

    async def _end_hung_up(self, call: SipCall) -> None:
        """The dialog taken from the registry first (no control plane is to send it a BYE), then the
        call ended."""
        await self._claim(call)
        await self.router.end(call.record, "the caller hung up")

    def _on_reinvite(self, call: SipCall, transaction: ServerTransaction) -> None:
        request = transaction.request
        if call.phase is not Phase.CONFIRMED or call.reinvite is not None:
            transaction.respond(response_to(request, 491))
            return
        call.reinvite = transaction
        if call.dialog.refresh_target(request) and call.stored:
            self._spawn(self._update_stored(call))
        self._spawn(self._reinvite(call, transaction))

    async def _update_stored(self, call: SipCall) -> None:
        try:
            await self.registry.update_dialog(_dialog_key(call.dialog), call.dialog.dumps())
        except RegistryUnavailable as error:  # another control plane's BYE would go to the old target
            log.warning("a dialog's new target not remembered", extra={"call": call.record.call_id,
                                                                        "error": describe(error)})

    async def _reinvite(self, call: SipCall, transaction: ServerTransaction) -> None:
        request = transaction.request
        try:
            refusal = await self._renegotiate(call, request) if request.body else None
        except Exception:  # answered all the same: an unanswered re-INVITE would leave the call refusing the next
            log.exception("re-INVITE failed", extra={"sip_call_id": call.dialog.call_id})
            refusal = response_to(request, 500)
        if refusal is not None:
            call.reinvite = None
            transaction.respond(refusal)
            return
        ok = response_to(request, 200)
        self._dialog_headers(ok, request, call)
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = call.answer
        call.acked.clear()
        transaction.respond(ok)
        await self._until_acked(call, transaction.peer, ok)

    async def _renegotiate(self, call: SipCall, request: SipRequest) -> SipResponse | None:
        """The re-INVITE's offer applied to the call's leg; the refusal to answer instead, if any."""
        try:
            plan = plan_for_offer(SessionDescription.parse(request.body), previous=call.plan)
            if call.route.tenant.tenant.sip.require_srtp and plan.srtp is None:
                raise NotAcceptable(SRTP_REQUIRED)
        except ValueError as error:
            return response_to(request, 488, warning=str(error))
        line = call.route.line
        spec = rtp_leg(plan, line.transfer.digit if line.transfer else None, self.config.rtp_timeout,
                       self.config.jitter_packets, self.config.jitter_max_packets)
        try:
            call.media = await self.workers.set_rtp(call.worker, call.record.call_id, spec)
        except WorkerRefused as error:
            return response_to(request, 488, warning=str(error))
        call.plan = plan
        call.answer = self._answer_sdp(call)
        log.info("call media changed", extra={"call": call.record.call_id, "direction": plan.direction,
                                              "codec": plan.codec.name})
        return None

    # -- calls ended elsewhere ------------------------------------------------------------------

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            for look in (self._watch, self._hang_up_orphans):
                try:
                    await look()
                except Exception as error:
                    log.warning("SIP call watch failed", extra={"error": describe(error)})

    async def _watch(self) -> None:
        up = [c for c in self.calls.values() if c.record is not None and c.phase in (Phase.ANSWERED, Phase.CONFIRMED)]
        if not up:
            return
        live = {r.call_id for r in await self.registry.calls()}
        for call in up:
            if call.record.call_id in live or call.phase is Phase.ENDED:
                continue
            record = await self.registry.call(call.record.call_id)
            reason = record.reason if record is not None else "the call ended"
            call.phase = Phase.ENDED  # claimed: the next look does not hang it up again
            self._spawn(self._end_from_our_side(call, reason))

    async def _end_from_our_side(self, call: SipCall, reason: str) -> None:
        transfer = call.route.line.transfer
        to = transfer.to if reason.startswith(TRANSFER_REASON_PREFIX) and transfer is not None else None
        await self._hang_up(call, reason, transfer_to=to)

    async def _transfer(self, call: SipCall, to: str) -> None:
        target = to if to.startswith("sip") else f"sip:{to}@{SipUri.parse(NameAddr.parse(call.dialog.remote, 'From').uri).host}"
        refer = self._request(call.dialog, "REFER", [("Refer-To", f"<{target}>"),
                                                     ("Referred-By", f"<{NameAddr.parse(call.dialog.local, 'To').uri}>")])
        response = await self.transactions.request(refer, call.dialog.destination())
        log.info("transfer requested", extra={"call": call.record.call_id, "to": target, "status": response.status})
        if response.status >= 300:
            return
        try:
            while (status := await asyncio.wait_for(call.notified.get(), NOTIFY_WAIT)) < 200:
                pass
            log.info("transfer finished", extra={"call": call.record.call_id, "status": status})
        except TimeoutError:
            log.warning("no outcome of the transfer", extra={"call": call.record.call_id})

    async def _hang_up(self, call: SipCall, reason: str, transfer_to: str | None = None) -> None:
        """End the call (on its worker and in the registry) and send the caller a BYE, after a REFER
        to `transfer_to` if given; none if another control plane took the dialog first (it sent one).
        The call is held in `calls` until then: a draining control plane waits for it, and the
        caller's NOTIFYs of a transfer come in its dialog."""
        call.phase = Phase.ENDED
        try:
            ours = await self._claim(call)
            if call.record is not None:
                await self.router.end(call.record, reason)
            if not ours:
                log.info("another control plane hung up", extra={"sip_call_id": call.dialog.call_id,
                                                                 "reason": reason})
                return
            if transfer_to is not None:
                await self._transfer(call, transfer_to)
            await self._send_bye(call.dialog, reason)
        finally:
            self.calls.pop((call.dialog.call_id, call.dialog.local_tag), None)

    async def _claim(self, call: SipCall) -> bool:
        """Whether this control plane is the one to send the call's BYE: its dialog taken from the
        registry (where another one may have taken it first, once the call ended), or never stored
        there, or the registry unreachable (this one holds the dialog; the BYE goes out)."""
        if not call.stored:
            return True
        try:
            return await self.registry.take_dialog(_dialog_key(call.dialog)) is not None
        except RegistryUnavailable:
            return True

    async def _hang_up_orphans(self) -> None:
        """Send the BYE of each dialog in the registry whose call ended (its worker's report, an
        admin, a lost worker) with nobody hanging it up for ORPHAN_GRACE seconds since this control
        plane first saw it so: the one that answered is gone (killed, or restarted without its
        dialogs). While it lives, it hangs up its own within a WATCH_INTERVAL or so; whichever takes
        the dialog from the registry sends the BYE, the others none.

        The BYE is built from the stored dialog and goes out of this control plane's own transport.
        The stored dialog holds the Contact of the one that answered, and the BYE's Via names this
        one's `public_host` and SIP port: so every control plane behind one SIP service must have the
        same advertised host and the same SIP (and TLS) port, the service's, for the caller's answer
        and its later requests to reach the service. Over TCP or TLS no BYE can be sent (the caller's
        connection was to the one that answered, and none is opened to it); nor is a transfer (REFER)
        made for another control plane's call: it is hung up."""
        now = asyncio.get_running_loop().time()
        ours = {f"{call_id}:{tag}" for call_id, tag in self.calls}
        ended = [d for d in await self.registry.ended_dialogs() if d not in ours]
        self._orphans = {d: self._orphans.get(d, now) for d in ended}
        for dialog in [d for d, since in self._orphans.items() if now - since >= ORPHAN_GRACE]:
            del self._orphans[dialog]
            stored = await self.registry.take_dialog(dialog)
            if stored is not None:
                self._spawn(self._hang_up_orphan(stored))

    async def _hang_up_orphan(self, stored: StoredDialog) -> None:
        dialog = Dialog.loads(stored.state)
        if dialog.peer.transport != "UDP":
            log.warning("a call another control plane answered over TCP or TLS cannot be hung up here",
                        extra={"call": stored.call_id, "sip_call_id": dialog.call_id})
            return
        record = await self.registry.call(stored.call_id)
        log.info("hanging up a call another control plane answered", extra={"call": stored.call_id,
                                                                             "sip_call_id": dialog.call_id})
        await self._send_bye(dialog, record.reason if record is not None else "the call ended")

    async def _send_bye(self, dialog: Dialog, reason: str) -> None:
        text = reason[:100].replace('"', "'")
        bye = self._request(dialog, "BYE", [("Reason", f'SIP;cause=200;text="{text}"')])
        response = await self.transactions.request(bye, dialog.destination())
        log.info("hung up", extra={"sip_call_id": dialog.call_id, "reason": reason, "status": response.status})

    def _request(self, dialog: Dialog, method: str, extra: list[tuple[str, str]]) -> SipRequest:
        return dialog.request(method, self.config.public_host, self.transport.port_for(dialog.peer.transport), extra)


def _inspect(request: SipRequest) -> SipResponse | None:
    """RFC 3261 §8.2.1-8.2.2: the method (405, 501), the Request-URI's scheme (416), Require (420)."""
    if request.method not in ALLOW.split(", "):
        response = response_to(request, 405 if request.method in KNOWN_METHODS else 501, to_tag=new_tag())
        response.headers.add("Allow", ALLOW)
        return response
    if request.uri.partition(":")[0].lower() not in URI_SCHEMES:
        return response_to(request, 416, to_tag=new_tag())
    unsupported = [tag for value in request.headers.get_all("Require") for tag in value.replace(" ", "").split(",")
                   if tag and tag.lower() not in SUPPORTED]
    if unsupported and request.method != "ACK":
        response = response_to(request, 420, to_tag=new_tag())
        response.headers.add("Unsupported", ", ".join(unsupported))
        return response
    return None


def _accepts_sdp(accept: list[str]) -> bool:
    """No Accept header means application/sdp (RFC 3261 §20.1); else one of its ranges must match it."""
    ranges = [value.partition(";")[0].strip().lower() for value in accept]
    return not ranges or any(r in ("application/sdp", "application/*", "*/*") for r in ranges)


def _reason(status: int, detail: str) -> str:
    """A reason phrase that says what was wrong, one line and short."""
    text = "".join(" " if char < " " or char == "\x7f" else char for char in detail)
    return f"{REASONS.get(status, 'Error')}: {text}"[:200]


def _dialog_key(dialog: Dialog) -> str:
    return f"{dialog.call_id}:{dialog.local_tag}"


def _allowed(host: str, networks: list) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _user(header: str | None) -> str:
    try:
        return SipUri.parse(NameAddr.parse(header or "").uri).user
    except ValueError:
        return ""


def _dialled(request: SipRequest) -> list[str]:
    """The addresses a request may be for: the Request-URI user, then the To user, with and without '+'."""
    users = []
    for candidate in (_uri_user(request.uri), _user(request.headers.get("To"))):
        if candidate:
            users.append(candidate)
            if candidate.isdigit():
                users.append("+" + candidate)
    return users


def _uri_user(uri: str) -> str:
    try:
        return SipUri.parse(uri).user.split(";")[0]
    except ValueError:
        return ""


def _sipfrag_status(body: bytes) -> int | None:
    """The status of a message/sipfrag body ("SIP/2.0 200 OK"), as in a NOTIFY for a REFER."""
    first = body.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(first) >= 2 and first[0] == b"SIP/2.0" and first[1].isdigit():
        return int(first[1])
    return None
