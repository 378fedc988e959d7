"""Who may administer a tenant: the operator's token, or the tenant's own admin token.

Tenant tokens are checked against the scrypt hash in tenant.yaml (about 50 ms), so tokens that
passed are remembered, keyed by the hash they passed against: a new hash in the file (a rotated
token) forgets them. A tenant that does not exist costs the same check as a wrong token, so the
time taken does not tell whether another tenant exists.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

from personas.store import TenantEntry
from personas.tokens import hash_token, verify_token


class Authenticator:
    def __init__(self, operator_token: str, remembered: int = 1024):
        self._operator = operator_token.encode()
        self._unmatchable = hash_token(secrets.token_urlsafe(32))  # checked in place of a missing hash
        self._remembered = remembered
        self._passed: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._lock = threading.Lock()

    def is_operator(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._operator)

    def may_administer(self, token: str, tenant: TenantEntry | None) -> bool:
        """Blocking (scrypt): call from a thread."""
        if tenant is None:
            verify_token(token, self._unmatchable)
            return False
        if self.is_operator(token):
            return True
        stored = tenant.tenant.admin_token_hash or self._unmatchable
        key = (tenant.id, stored, hashlib.sha256(token.encode()).digest())
        with self._lock:
            if key in self._passed:
                self._passed.move_to_end(key)
                return True
        if not verify_token(token, stored):
            return False
        with self._lock:
            self._passed[key] = None
            while len(self._passed) > self._remembered:
                self._passed.popitem(last=False)
        return True
