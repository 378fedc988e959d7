import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.sip_corpus import INVITE, MALFORMED, SDP
from telephony.sip.message import (
    MAX_HEADER_BYTES,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    frame_length,
    parse_message,
    response_to,
    split_list,
)


def test_parses_sipps_invite_and_serialises_it_back():
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    assert (request.method, request.uri, request.call_id, request.cseq) == (
        "INVITE", "sip:+15555550100@127.0.0.1:5060", "1-12345@127.0.0.1", (1, "INVITE"))
    assert request.body == SDP
    again = parse_message(request.serialise())
    assert again.headers.fields == request.headers.fields and again.body == request.body


def test_compact_names_folded_lines_and_lists():
    data = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bK1, SIP/2.0/TCP h2:5070\r\n"
            b"f: <sip:b@127.0.0.2>;tag=9\r\nt: <sip:a@127.0.0.1>\r\ni: abc\r\nCSeq: 7\r\n  OPTIONS\r\nl: 0\r\n\r\n")
    request = parse_message(data)
    assert request.cseq == (7, "OPTIONS")
    assert [Via.parse(v).host for v in request.headers.get_all("via")] == ["127.0.0.2", "h2"]
    assert request.headers.get("Call-ID") == "abc" and request.headers.get("From") == "<sip:b@127.0.0.2>;tag=9"


def test_a_response_parses():
    response = parse_message(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\n\r\n")
    assert isinstance(response, SipResponse) and (response.status, response.reason) == (180, "Ringing")


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_each_broken_message_is_refused_with_the_right_answer(name):
    data, expected = MALFORMED[name]
    try:
        message = parse_message(data)
    except SipParseError as error:
        answer = error.status if error.request is not None else 0
        assert answer == expected, f"{name}: {error} ({error.status}, answerable={error.request is not None})"
        assert str(error)
        return
    # The SIP is sound; the server refuses what it says (SDP: 488, the URI's scheme: 416) or ignores it
    # (stray responses).
    assert expected in (488, 416, 0), f"{name} parsed"
    assert isinstance(message, SipResponse) or message.method == "INVITE"


def test_error_messages_say_what_is_wrong():
    with pytest.raises(SipParseError, match="Content-Length 5000 exceeds the 196 bytes of body"):
        parse_message(MALFORMED["Content-Length beyond the body"][0])
    with pytest.raises(SipParseError, match="missing Call-ID"):
        parse_message(MALFORMED["missing Call-ID"][0])
    with pytest.raises(SipParseError, match="CSeq method 'BYE' is not the request's 'INVITE'"):
        parse_message(MALFORMED["CSeq method differs"][0])
    with pytest.raises(SipParseError, match=f"exceeds the limit of {MAX_HEADER_BYTES}"):
        parse_message(MALFORMED["huge header line"][0])


def test_a_400_copies_the_dialog_headers_and_explains():
    try:
        parse_message(MALFORMED["Max-Forwards not a number"][0])
    except SipParseError as error:
        response = response_to(error.request, 400, to_tag="abc", warning=str(error))
    text = response.serialise().decode()
    assert text.startswith("SIP/2.0 400 Bad Request\r\n")
    assert "To: <sip:+15555550100@127.0.0.1:5060>;tag=abc" in text and "CSeq: 1 INVITE" in text
    assert 'Warning: 399 plexline "Max-Forwards \'lots\' is not a number from 0 to 255"' in text


def test_stream_framing_by_content_length():
    two = INVITE + b"\r\n" + INVITE
    assert frame_length(two) == len(INVITE)
    assert frame_length(two[len(INVITE):]) == 2  # a keep-alive CRLF
    assert frame_length(INVITE[:-10]) is None
    with pytest.raises(SipParseError, match="must have a Content-Length"):
        frame_length(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n")


def test_header_values():
    assert split_list('<sip:a@b;lr>, "x, y" <sip:c@d>') == ["<sip:a@b;lr>", '"x, y" <sip:c@d>']
    uri = SipUri.parse("sip:+1555@10.0.0.1:5070;transport=tcp")
    assert (uri.user, uri.host, uri.port, uri.params, str(uri)) == (
        "+1555", "10.0.0.1", 5070, {"transport": "tcp"}, "sip:+1555@10.0.0.1:5070;transport=tcp")
    address = NameAddr.parse('"Bob" <sip:bob@h>;tag=xyz')
    assert (address.display, address.uri, address.tag) == ("Bob", "sip:bob@h", "xyz")
    with pytest.raises(ValueError, match="not a sip:, sips: or tel: URI"):
        SipUri.parse("mailto:x@y")


def _mutations():
    """The captured INVITE with bytes replaced, inserted or cut, and lines repeated or dropped."""
    position = st.integers(0, len(INVITE))
    return st.one_of(
        st.tuples(position, st.binary(min_size=1, max_size=8)).map(lambda t: INVITE[:t[0]] + t[1] + INVITE[t[0] + len(t[1]):]),
        st.tuples(position, st.binary(max_size=64)).map(lambda t: INVITE[:t[0]] + t[1] + INVITE[t[0]:]),
        position.map(lambda n: INVITE[:n]),
        st.lists(st.sampled_from(INVITE.split(b"\r\n")), max_size=30).map(lambda lines: b"\r\n".join(lines)),
    )


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=3000), _mutations()))
def test_fuzzed_input_parses_or_raises_a_parse_error_only(data):
    try:
        message = parse_message(data)
    except SipParseError as error:
        if error.request is not None:
            response_to(error.request, error.status, to_tag="t", warning=str(error)).serialise()
        return
    parse_message(message.serialise())  # whatever parses, serialises to something that parses


@pytest.mark.parametrize("header", [b"CSeq: \xc2\xb2 INVITE", b"Max-Forwards: \xc2\xb2", b"Content-Length: \xc2\xb2",
                                    b"Via: SIP/2.0/UDP 127.0.0.2:\xc2\xb2;branch=z9hG4bK-1-0"])
def test_digits_that_are_not_ascii_are_a_parse_error(header):
    name = header.split(b":")[0]
    lines = [header if line.startswith(name + b":") else line for line in INVITE.split(b"\r\n")]
    with pytest.raises(SipParseError) as error:
        parse_message(b"\r\n".join(lines))
    assert error.value.request is not None and error.value.status == 400


def test_display_names_quoted_with_escapes_tokens_or_plain_utf8():
    assert NameAddr.parse(r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=1').display == 'J Rosenberg \\"'
    assert NameAddr.parse("José Núñez <sip:jose@example.com>").display == "José Núñez"  # as some phones send it
    assert NameAddr.parse("caller<sip:caller@example.com>").display == "caller"
    for bad in ("Bell, Alexander <sip:a@example.com>", '"unterminated <sip:a@example.com>',
                "< sip:a@example.com >", "sip:a@example.com?Route=x", "<sip:a@example.com>;;tag=1"):
        with pytest.raises(SipParseError):
            NameAddr.parse(bad)
