"""HTTP digest authentication for SIP (RFC 3261 §22, RFC 8760): SHA-256 and MD5, qop=auth.

Nonces are stateless: a timestamp and an HMAC of it under a secret of this process, so a
challenge needs no memory and any nonce we did not make, or older than `NONCE_SECONDS`, fails.
A stale nonce with the right password gets a fresh challenge marked stale=true.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from telephony.sip.message import parse_params, split_list

NONCE_SECONDS = 300
ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}  # in our order of preference


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode()).hexdigest()


@dataclass(frozen=True)
class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""

    @classmethod
    def parse(cls, header: str) -> Credentials:
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() != "digest":
            raise ValueError(f"authorization scheme {scheme[:20]!r} is not Digest")
        fields = {}
        for part in split_list(rest):
            fields.update(parse_params(part))
        missing = [f for f in ("username", "realm", "nonce", "uri", "response") if f not in fields]
        if missing:
            raise ValueError(f"digest credentials lack {', '.join(missing)}")
        algorithm = fields.get("algorithm", "MD5").upper()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"digest algorithm {algorithm[:20]!r} is not supported")
        return cls(fields["username"], fields["realm"], fields["nonce"], fields["uri"], fields["response"].lower(),
                   algorithm, fields.get("qop", ""), fields.get("nc", ""), fields.get("cnonce", ""))


def expected_response(credentials: Credentials, method: str, password: str) -> str:
    a = credentials.algorithm
    ha1 = _h(a, f"{credentials.username}:{credentials.realm}:{password}")
    ha2 = _h(a, f"{method}:{credentials.uri}")
    if credentials.qop:
        return _h(a, f"{ha1}:{credentials.nonce}:{credentials.nc}:{credentials.cnonce}:{credentials.qop}:{ha2}")
    return _h(a, f"{ha1}:{credentials.nonce}:{ha2}")


class DigestAuthenticator:
    def __init__(self, secret: bytes | None = None):
        self._secret = secret or secrets.token_bytes(32)

    def nonce(self, now: float | None = None) -> str:
        stamp = str(int(now if now is not None else time.time()))
        mac = hmac.new(self._secret, stamp.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(stamp.encode() + b":" + mac).decode().rstrip("=")

    def nonce_age(self, nonce: str, now: float | None = None) -> float | None:
        """Seconds since we made `nonce`; None if we did not make it."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
            stamp, _, mac = raw.partition(b":")
            expected = hmac.new(self._secret, stamp, hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(mac, expected):
                return None
            return (now if now is not None else time.time()) - int(stamp)
        except (ValueError, TypeError):
            return None

    def challenges(self, realm: str, algorithms: Sequence[str] = tuple(ALGORITHMS), stale: bool = False) -> list[str]:
        """WWW-Authenticate values, one per algorithm in the order given (RFC 8760 §2.4: strongest first)."""
        nonce = self.nonce()
        flag = ", stale=true" if stale else ""
        return [f'Digest realm="{realm}", nonce="{nonce}", algorithm={a}, qop="auth"{flag}' for a in algorithms]

    def check(self, header: str, method: str, realm: str, passwords: dict[str, str]) -> tuple[bool, bool]:
        """(authenticated, stale) for an Authorization header against `passwords` (username -> password)."""
        try:
            credentials = Credentials.parse(header)
        except ValueError:
            return False, False
        password = passwords.get(credentials.username)
        if password is None or credentials.realm != realm:
            return False, False
        if credentials.qop and credentials.qop != "auth":
            return False, False
        good = hmac.compare_digest(expected_response(credentials, method, password), credentials.response)
        age = self.nonce_age(credentials.nonce)
        if age is None or age < -5:
            return False, False
        if age > NONCE_SECONDS:
            return False, good
        return good, False
