"""Signatures against the Standard Webhooks reference library (PyPI `standardwebhooks`) as an oracle."""

import base64
import time
from datetime import datetime, timezone

import pytest
import standardwebhooks

from telephony.events.signature import (
    InvalidSecret,
    InvalidSignature,
    new_secret,
    secret_key,
    signed_headers,
    verify,
)

BODY = b'{"type":"call.ended","data":{"text":"caf\xc3\xa9 \xe2\x80\x94 ok"}}'


def test_the_reference_library_accepts_our_signatures():
    secret = new_secret()
    headers = signed_headers(secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", BODY)

    assert standardwebhooks.Webhook(secret).verify(BODY, headers) == {
        "type": "call.ended", "data": {"text": "café — ok"}}
    assert headers["webhook-signature"].startswith("v1,")


def test_we_accept_the_reference_librarys_signatures():
    secret = new_secret(24)
    now = int(time.time())
    reference = standardwebhooks.Webhook(secret).sign("msg_abc", datetime.fromtimestamp(now, timezone.utc),
                                                        BODY.decode())
    headers = {"Webhook-Id": "msg_abc", "Webhook-Timestamp": str(now), "Webhook-Signature": reference}

    assert verify(secret, headers, BODY) == "msg_abc"


def test_the_known_vector_of_the_spec_libraries():
    # The worked example of Svix's documentation, where the Standard Webhooks scheme comes from.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = signed_headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", body, timestamp=1614265330)

    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_changed_body_id_or_timestamp_fails():
    secret = new_secret()
    headers = signed_headers(secret, "msg_1", BODY)
    for changed in ({**headers, "webhook-id": "msg_2"},
                    {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}):
        with pytest.raises(InvalidSignature, match="no signature matches"):
            verify(secret, changed, BODY)
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify(secret, headers, BODY + b" ")
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify(new_secret(), headers, BODY)


def test_an_old_or_future_timestamp_is_refused():
    secret = new_secret()
    headers = signed_headers(secret, "msg_1", BODY, timestamp=1_000_000)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(secret, headers, BODY, now=1_000_000 + 301)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(secret, headers, BODY, now=1_000_000 - 301)
    assert verify(secret, headers, BODY, now=1_000_000 + 299) == "msg_1"


def test_any_of_several_signatures_may_match_while_a_secret_rotates():
    old, new = new_secret(), new_secret()
    headers = signed_headers(new, "msg_1", BODY)
    by_old = signed_headers(old, "msg_1", BODY, int(headers["webhook-timestamp"]))["webhook-signature"]
    headers["webhook-signature"] = f"v1a,bm90LWVkMjU1MTk= {by_old} {headers['webhook-signature']}"

    assert verify(new, headers, BODY) == "msg_1"
    assert verify(old, headers, BODY) == "msg_1"


def test_missing_headers_and_bad_secrets_are_named():
    with pytest.raises(InvalidSignature, match="missing"):
        verify(new_secret(), {"webhook-id": "msg_1"}, BODY)
    with pytest.raises(InvalidSecret, match="starts with 'whsec_'"):
        secret_key(base64.b64encode(bytes(32)).decode())
    with pytest.raises(InvalidSecret, match="24 to 64 bytes, not 16"):
        secret_key("whsec_" + base64.b64encode(bytes(16)).decode())
    with pytest.raises(InvalidSecret, match="base64"):
        secret_key("whsec_not*base64")
    with pytest.raises(ValueError, match="must not contain '.'"):
        signed_headers(new_secret(), "msg.1", BODY)
