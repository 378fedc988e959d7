"""A tenant (a business) and its lines, as written in `<tenant>/tenant.yaml` and `<tenant>/<line>.yaml`.

The operator writes `tenant.yaml`: who the tenant is, the addresses (phone numbers and SIP users)
assigned to it, its admin token's hash and its limits. The tenant's admins write the line files:
which of those addresses each line answers and the persona that answers them. A line may only
answer addresses of its own tenant, so no tenant can take another's calls.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    IPvAnyNetwork,
    model_validator,
)

from personas.schema import Persona
from personas.tokens import check_hash_format

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # tenant folder and line file names
TENANT_FILE = "tenant.yaml"
LINE_SUFFIX = ".yaml"
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SIP_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,63}$")


def check_id(value: str, what: str) -> str:
    if not ID_PATTERN.match(value):
        raise ValueError(f"{what} {value!r} must be 1 to 63 lowercase letters, digits, '-' or '_'")
    if value + LINE_SUFFIX == TENANT_FILE:
        raise ValueError(f"{what} {value!r} is reserved")
    return value


def _no_bare_number(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{value} reads as a number in YAML: quote phone numbers, e.g. \"+{value}\"")
    return value


def _check_address(address: str) -> str:
    if not (_E164.match(address) or _SIP_USER.match(address)):
        raise ValueError(f"{address!r} is neither an E.164 number (+14155550100) nor a SIP user (support)")
    return address


Address = Annotated[str, BeforeValidator(_no_bare_number), AfterValidator(_check_address),
                    Field(description="an E.164 number (+14155550100) or a SIP user (support)",
                          json_schema_extra={"pattern": rf"^({_E164.pattern[1:-1]}|{_SIP_USER.pattern[1:-1]})$"})]
TokenHash = Annotated[str, AfterValidator(check_hash_format)]


def _unique(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    for address in addresses:
        if address in seen:
            raise ValueError(f"{address} is listed twice")
        seen.add(address)
    return addresses


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_webhook_secret(secret: str) -> str:
    """Standard Webhooks' form: whsec_ and the base64 of 24 to 64 random bytes."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        key = b""
    if not secret.startswith("whsec_") or not 24 <= len(key) <= 64:
        raise ValueError("must be whsec_ and the base64 of 24 to 64 random bytes, e.g. "
                         "whsec_$(head -c 32 /dev/urandom | base64)")
    return secret


class Webhook(_Strict):
    """Where the tenant's call events go, signed with `secret` (Standard Webhooks)."""

    url: HttpUrl
    secret: Annotated[str, AfterValidator(_check_webhook_secret)]
    allow_http: bool = False  # plain http (unencrypted): for a receiver on a trusted network only
    allow_private_network: bool = False  # targets on loopback, private or link-local addresses


class Limits(_Strict):
    max_concurrent_calls: int = Field(10, ge=1, le=100_000)
    max_call_seconds: int = Field(900, ge=10, le=86_400)


class DigestUser(_Strict):
    username: str = Field(pattern=r"^[A-Za-z0-9._~+-]{1,64}$")
    password: str = Field(min_length=8)  # digest needs the password itself (or a hash per realm)


class SipTrunk(_Strict):
    """Who may send this tenant's calls over SIP. Calls must come from one of the `allow` networks
    when any are listed, authenticate as one of the `digest` users when any are listed, and with a
    client certificate of one of `tls_client_names` when any are listed; a tenant with none of
    these (or no `sip` at all) takes no SIP calls."""

    allow: list[IPvAnyNetwork] = []
    digest: list[DigestUser] = []
    # Digest challenges in this order (RFC 8760: the strongest first); some older equipment reads
    # only the first challenge and knows only MD5.
    digest_algorithms: list[Literal["SHA-256", "MD5"]] = Field(["SHA-256", "MD5"], min_length=1)
    # Signalling over TLS (port 5061, sips: or transport=tls): an INVITE over UDP or TCP gets 403.
    require_tls: bool = False
    # Media encrypted (SRTP keyed by SDES, RTP/SAVP): a plain RTP/AVP offer is refused with 488.
    # Without require_tls the keys cross the network in the clear, in the SDP.
    require_srtp: bool = False
    # The trunk authenticates with a TLS client certificate (chaining to the control plane's
    # sip_tls_client_ca) whose subject common name or DNS/URI name is one of these; implies TLS.
    tls_client_names: list[Annotated[str, Field(min_length=1, max_length=253)]] = []


class MediaStreams(_Strict):
    """Calls from a carrier with Twilio-style media streams: its webhooks are signed with this token."""

    auth_token: str = Field(min_length=16)  # the account's auth token (X-Twilio-Signature, HMAC-SHA1)


# A phrase the caller may say: some words, matched case and punctuation aside.
Phrase = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\w")]


class Transfer(_Strict):
    """Hand the caller to a human (SIP REFER) when they press `digit` or say one of `phrases`
    (matched on their words where the worker runs a recogniser)."""

    digit: str | None = Field(None, pattern=r"^[0-9*#]$")
    to: str = Field(pattern=r"^(\+[1-9][0-9]{1,14}|sips?:[^\s<>]{3,200})$")  # E.164, or a SIP URI
    phrases: list[Phrase] = []

    @model_validator(mode="after")
    def _some_trigger(self) -> Transfer:
        if self.digit is None and not self.phrases:
            raise ValueError("a transfer needs a digit, phrases, or both")
        return self


class Tenant(_Strict):
    name: str = Field(min_length=1)
    addresses: Annotated[list[Address], AfterValidator(_unique)] = []
    admin_token_hash: TokenHash | None = None  # `plexline tenant-token` makes one; none: operator only
    webhook: Webhook | None = None
    limits: Limits = Limits()
    sip: SipTrunk | None = None
    media_streams: MediaStreams | None = None  # none: no media-stream calls for this tenant


Greeting = Literal["agent_first", "caller_first"]


class Line(_Strict):
    """One phone line: the addresses it answers and how the agent behaves on it."""

    answers: Annotated[list[Address], Field(min_length=1, description="the addresses this line answers, each "
                                                                     "once: each one of the tenant's addresses, "
                                                                     "none answered by another of its lines"),
                       AfterValidator(_unique)]
    persona: Persona
    # agent_first: the agent speaks as soon as the call is answered (PersonaPlex greets on its own);
    # caller_first: the agent stays silent until the caller has spoken.
    greeting: Greeting = "agent_first"
    recording: bool = False  # a stereo WAV of each call (caller left, agent right)
    caller_transcript: bool = True  # the caller's words in transcripts, where the worker runs a recogniser
    max_call_seconds: int | None = Field(None, ge=10, le=86_400)  # capped by the tenant's limit
    # Send call.transcript.partial webhooks this often during a call (none: only call.ended).
    partial_transcript_seconds: float | None = Field(None, ge=1, le=300)
    transfer: Transfer | None = None
    # The call ends when the caller says one of these (where the worker runs a recogniser).
    hang_up_phrases: list[Phrase] = []
