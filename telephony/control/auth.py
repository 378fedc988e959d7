"""Who may administer a tenant: the operator's token, or the tenant's own admin token.

Tenant tokens are checked against the scrypt hash in tenant.yaml (about 50 ms), so tokens that
passed are remembered, keyed by the hash they passed against: a new hash in the file (a rotated
token) forgets them. A tenant that does not exist costs the same check as a wrong token, so the
time taken does not tell whether another tenant exists.

Each failed check costs its source (the client's address) a token of a bucket (`failures`): a
source whose bucket is empty is refused (TooManyFailures, 429) without a check until it refills,
so wrong tokens cannot buy CPU time; a token that passed before still passes from anywhere. At
most `checks` scrypt checks run at once, so a flood from many sources leaves the other cores to
calls and SIP.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

from personas.store import TenantEntry
from personas.tokens import hash_token, verify_token
from telephony.sip.rate_limit import SourceLimiter


class TooManyFailures(Exception):
    def __init__(self, retry_after: int):
        super().__init__("too many failed authentications from this address: try again later")
        self.retry_after = retry_after


class Authenticator:
    def __init__(self, operator_token: str, remembered: int = 1024, failures: SourceLimiter | None = None,
                 checks: int = 1):
        self._operator = operator_token.encode()
        self._unmatchable = hash_token(secrets.token_urlsafe(32))  # checked in place of a missing hash
        self._remembered = remembered
        self._passed: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._failures = failures or SourceLimiter(rate=1.0, burst=10.0)
        self._checks = threading.BoundedSemaphore(checks)
        self._lock = threading.Lock()

    def is_operator(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._operator)

    def may_administer(self, token: str, tenant: TenantEntry | None, source: str = "") -> bool:
        """Blocking (scrypt): call from a thread. TooManyFailures if `source` failed too often."""
        if tenant is not None and self.is_operator(token):
            return True
        stored = tenant.tenant.admin_token_hash or self._unmatchable if tenant else self._unmatchable
        key = (tenant.id if tenant else "", stored, hashlib.sha256(token.encode()).digest())
        with self._lock:
            if key in self._passed:
                self._passed.move_to_end(key)
                return True
            if not self._failures.allowed(source):
                raise TooManyFailures(max(1, round(1 / self._failures.rate)))
        with self._checks:
            passed = verify_token(token, stored) and tenant is not None
        if not passed:
            with self._lock:
                self._failures.penalise(source)
            return False
        with self._lock:
            self._passed[key] = None
            while len(self._passed) > self._remembered:
                self._passed.popitem(last=False)
        return True
