import pytest

from personas.tokens import check_hash_format, hash_token, new_token, verify_token


def test_a_token_verifies_against_its_hash_only():
    token = new_token()
    stored = hash_token(token, n=1024)

    assert verify_token(token, stored)
    assert not verify_token(token + "x", stored)
    assert not verify_token(new_token(), stored)
    assert token not in stored


def test_two_hashes_of_one_token_differ_by_their_salt():
    token = new_token()

    assert hash_token(token, n=1024) != hash_token(token, n=1024)


def test_the_cost_is_read_from_the_stored_hash():
    token = new_token()

    assert verify_token(token, hash_token(token, n=2048, r=4, p=2))


@pytest.mark.parametrize(
    "stored, reason",
    [
        ("plain-text-token", "must be scrypt$"),
        ("scrypt$16384$8$1$c2FsdHNhbHQ$!!", "malformed scrypt hash"),
        ("scrypt$1000$8$1$c2FsdHNhbHRzYWx0$" + "A" * 43, "cost out of range"),
        ("scrypt$16384$8$1$c2FsdHNhbHRzYWx0$AAAA", "wrong length"),
    ],
)
def test_malformed_hashes_are_rejected_with_a_reason(stored, reason):
    with pytest.raises(ValueError, match=reason.replace("$", r"\$")):
        check_hash_format(stored)
