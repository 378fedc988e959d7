"""Admin tokens: random secrets handed to a tenant, stored only as salted scrypt hashes.

A stored hash reads `scrypt$<n>$<r>$<p>$<salt>$<digest>` (salt and digest in unpadded base64url),
so its cost can be raised later without invalidating the hashes already written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1  # 16 MiB and about 50 ms per check on a server core
DIGEST_BYTES = 32
_MAX_N = 2**20


def new_token() -> str:
    return "plx_" + secrets.token_urlsafe(32)


def hash_token(token: str, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(token, salt, n, r, p)
    return "$".join([SCHEME, str(n), str(r), str(p), _b64(salt), _b64(digest)])


def verify_token(token: str, stored: str) -> bool:
    n, r, p, salt, digest = _parse(stored)
    return hmac.compare_digest(_scrypt(token, salt, n, r, p), digest)


def check_hash_format(stored: str) -> str:
    """`stored` if it is a hash this module wrote; raises ValueError naming what is wrong."""
    _parse(stored)
    return stored


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("must be scrypt$<n>$<r>$<p>$<salt>$<digest> (made by `plexline tenant-token`)")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError as error:
        raise ValueError(f"malformed scrypt hash: {error}") from None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError(f"scrypt cost out of range (n={n}, r={r}, p={p})")
    if len(salt) < 8 or len(digest) != DIGEST_BYTES:
        raise ValueError("malformed scrypt hash: salt or digest of the wrong length")
    return n, r, p, salt, digest


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20),
                          dklen=DIGEST_BYTES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
