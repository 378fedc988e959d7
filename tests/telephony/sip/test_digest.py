import hashlib

import pytest

from telephony.sip.digest import NONCE_SECONDS, DigestAuthenticator, parse_params


def client_response(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    """What a UAC sends back (RFC 7616, qop=auth), computed independently of the server's code."""
    fields = {}
    for part in challenge.removeprefix("Digest ").split(", "):
        fields.update(parse_params(part))
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[fields["algorithm"]]
    digest = lambda s: h(s.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = digest(f"{user}:{fields['realm']}:{password}"), digest(f"{method}:{uri}")
    response = digest(f"{ha1}:{fields['nonce']}:00000001:c0ffee:auth:{ha2}")
    return (f'Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", uri="{uri}", '
            f'response="{response}", algorithm={fields["algorithm"]}, qop=auth, nc=00000001, cnonce="c0ffee"')


@pytest.mark.parametrize("index, algorithm", [(0, "SHA-256"), (1, "MD5")])
def test_both_algorithms_authenticate(index, algorithm):
    auth = DigestAuthenticator()
    challenge = auth.challenges("plexline")[index]
    assert f"algorithm={algorithm}" in challenge
    header = client_response(challenge, "INVITE", "sip:+1555@127.0.0.1", "trunk", "pw-123456")
    assert auth.check(header, "INVITE", "plexline", {"trunk": "pw-123456"}) == (True, False)
    assert auth.check(header, "INVITE", "plexline", {"trunk": "other-password"}) == (False, False)
    assert auth.check(header, "BYE", "plexline", {"trunk": "pw-123456"}) == (False, False)  # bound to the method


def test_nonces_we_did_not_make_or_too_old_are_refused():
    auth, other = DigestAuthenticator(), DigestAuthenticator()
    header = client_response(other.challenges("r")[0], "INVITE", "sip:a@b", "u", "pw-123456")
    assert auth.check(header, "INVITE", "r", {"u": "pw-123456"}) == (False, False)
    old = auth.challenges("r")[0].replace(auth.nonce(), auth.nonce(now=0))
    stale = client_response(old, "INVITE", "sip:a@b", "u", "pw-123456")
    assert auth.nonce_age(auth.nonce(now=0)) > NONCE_SECONDS
    assert auth.check(stale, "INVITE", "r", {"u": "pw-123456"}) == (False, True)  # right password: stale=true


def test_the_order_of_challenges_is_the_tenants():
    assert [c.split("algorithm=")[1].split(",")[0] for c in DigestAuthenticator().challenges("r", ["MD5", "SHA-256"])] == [
        "MD5", "SHA-256"]
