"""A SIP dialog as the answering side (UAS) sees it (RFC 3261 §12): who, where, and the CSeq counts.

Made from the INVITE we answer: the remote target is the caller's Contact, the route set its
Record-Route (in order), our tag is new. `request` builds the requests we send inside the dialog
(BYE, REFER) and `destination` says where they go: the first route, else the remote target. A
host that is not an IP literal is not looked up; the request goes back where the INVITE came from.

`dumps` and `loads` carry a dialog through the registry (JSON), so that another control plane can
send the BYE of a dialog whose control plane is gone.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import asdict, dataclass, field

from telephony.sip.message import Headers, NameAddr, SipRequest, SipUri
from telephony.sip.transaction import new_branch
from telephony.sip.transport import Peer


def new_tag() -> str:
    return secrets.token_hex(6)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local: str  # our To of the INVITE, with our tag: the From of our requests
    remote: str  # the caller's From: the To of our requests
    remote_target: str  # the caller's Contact URI (a target refresh changes it)
    route_set: list[str]
    peer: Peer  # where the INVITE came from
    remote_cseq: int
    contact: str  # ours, in our answers and requests
    local_cseq: int = field(default_factory=lambda: secrets.randbelow(10_000) + 1)

    @classmethod
    def answering(cls, invite: SipRequest, local_tag: str, peer: Peer, contact: str) -> Dialog:
        contacts = invite.headers.get_all("Contact")
        target = NameAddr.parse(contacts[0], "Contact").uri if contacts else NameAddr.parse(
            invite.headers.get("From") or "", "From").uri
        to = invite.headers.get("To") or ""
        return cls(call_id=invite.call_id, local_tag=local_tag,
                   remote_tag=NameAddr.parse(invite.headers.get("From") or "", "From").tag,
                   local=f"{to};tag={local_tag}", remote=invite.headers.get("From") or "",
                   remote_target=target, route_set=invite.headers.get_all("Record-Route"), peer=peer,
                   remote_cseq=invite.cseq[0], contact=contact)

    @classmethod
    def loads(cls, text: str) -> Dialog:
        fields = json.loads(text)
        return cls(**fields | {"peer": Peer(**fields["peer"])})

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def refresh_target(self, request: SipRequest) -> bool:
        """A target refresh (a re-INVITE, RFC 3261 §12.2.2): its Contact is the new remote target.
        Whether the target changed."""
        contacts = request.headers.get_all("Contact")
        target = NameAddr.parse(contacts[0], "Contact").uri if contacts else self.remote_target
        changed, self.remote_target = target != self.remote_target, target
        return changed

    def request(self, method: str, via_host: str, via_port: int,
                extra: list[tuple[str, str]] = (), body: bytes = b"", content_type: str = "") -> SipRequest:
        self.local_cseq += 1
        headers = Headers()
        transport = self.peer.transport
        headers.add("Via", f"SIP/2.0/{transport} {via_host}:{via_port};branch={new_branch()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", self.local)
        headers.add("To", self.remote)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_cseq} {method}")
        for route in self.route_set:
            headers.add("Route", route)
        headers.add("Contact", self.contact)
        for name, value in extra:
            headers.add(name, value)
        if content_type:
            headers.add("Content-Type", content_type)
        return SipRequest(method, self.remote_target, headers, body)

    def destination(self) -> Peer:
        uri = NameAddr.parse(self.route_set[0], "Route").uri if self.route_set else self.remote_target
        try:
            parsed = SipUri.parse(uri)
            ipaddress.ip_address(parsed.host)
        except ValueError:
            return self.peer
        transport = parsed.params.get("transport", self.peer.transport).upper()
        if transport != self.peer.transport:
            return self.peer  # a new connection of another kind is not made: answer the way it came
        if transport in ("TCP", "TLS"):
            return self.peer  # the caller's connection; a new one to its Contact is not opened
        return Peer(transport, parsed.host, parsed.port or 5060)
