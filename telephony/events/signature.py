"""Standard Webhooks signatures (https://www.standardwebhooks.com): signing deliveries, verifying them.

Every delivery carries three headers:

    webhook-id          the event's id: the same on every retry, so a receiver can deduplicate
    webhook-timestamp   when this attempt was made, in integer seconds since the epoch
    webhook-signature   "v1," + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))

The key is the tenant's secret, written `whsec_` + base64 of 24 to 64 random bytes; the HMAC
key is the decoded bytes. Receivers verify with `verify` (this module uses only the standard
library, so it may be copied into a receiver as it is):

    from telephony.events.signature import InvalidSignature, verify

    try:
        verify(secret, request.headers, raw_body)  # the body exactly as received, not re-serialised
    except InvalidSignature:
        return 401
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
TOLERANCE_SECONDS = 300  # how far a delivery's timestamp may be from the receiver's clock


class InvalidSecret(ValueError):
    pass


class InvalidSignature(Exception):
    pass


def new_secret(nbytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; raises InvalidSecret."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a webhook secret starts with {SECRET_PREFIX!r} (make one with new_secret())")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as error:
        raise InvalidSecret(f"a webhook secret is {SECRET_PREFIX} and base64: {error}") from error
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)}")
    return key


def check_secret(secret: str) -> str:
    secret_key(secret)
    return secret


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    if "." in msg_id:
        raise ValueError("a webhook id must not contain '.': it delimits the signed content")
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret_key(secret), msg_id, timestamp, body)}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: float = TOLERANCE_SECONDS,
           now: float | None = None) -> str:
    """Check a delivery; returns its webhook-id (the key to deduplicate on). Raises InvalidSignature."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature(f"webhook-timestamp {stamp!r} is not an integer") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature(f"webhook-timestamp is {now - timestamp:+.0f} s from now (tolerance {tolerance:.0f} s)")
    expected = signature(secret_key(secret), msg_id, timestamp, body)
    # Several signatures (space-separated) while a secret is rotated; other schemes (v1a) are skipped.
    if any(hmac.compare_digest(expected.encode(), given.encode()) for given in signatures.split()):
        return msg_id
    raise InvalidSignature("no signature matches")
