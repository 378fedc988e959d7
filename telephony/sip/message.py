"""SIP messages (RFC 3261 §7): requests and responses parsed from bytes and serialised back.

`parse_message` checks sizes before it looks at anything else, decodes the header section as
UTF-8, unfolds continuation lines, expands compact header names, then checks the whole message
against RFC 3261's grammar: the request line, every Via (LWS allowed around its "/"), From, To,
Contact, Route and Record-Route as name-addr or addr-spec (quoted display names with their
backslash escapes, parameters), CSeq, Max-Forwards, Content-Length (exactly one), Date, and the
headers that must appear once. So what the layers above read (the transaction key, the dialog's
tags) has already been checked, and nothing they read can fail.

A message it refuses raises `SipParseError` with a message that says what is wrong. When the
refused message has a request line (even a malformed one), the error carries a request holding
the headers that could be read, so that a 400 (or 505, 513) is sent back to the source; a
response, or bytes that are not a request at all, are dropped. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

SIP_VERSION = "SIP/2.0"
MAX_MESSAGE_BYTES = 65_535  # a UDP datagram; TCP messages are held to the same
MAX_HEADER_BYTES = 16_384
MAX_HEADERS = 100
MAX_BODY_BYTES = 32_768
REQUIRED_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

# The compact forms of RFC 3261 §7.3.3 and later RFCs, and the spelling used when serialising.
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding", "o": "event",
            "r": "refer-to", "b": "referred-by", "x": "session-expires", "u": "allow-events"}
_CANONICAL = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate", "mime-version":
              "MIME-Version", "rack": "RAck", "rseq": "RSeq"}
SINGLE_HEADERS = ("To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type")
MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7: the start of every branch of this RFC

_TOKEN_CHARS = r"A-Za-z0-9.!%*_+`'~\-"
_TOKEN = re.compile(rf"^[{_TOKEN_CHARS}]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2}) (.*)$")
_LOOKS_LIKE_REQUEST = re.compile(rf"^[{_TOKEN_CHARS}]+ .*SIP/")  # answerable even when malformed
_REQUEST_LINE = re.compile(rf"^([{_TOKEN_CHARS}]+) (\S+) (SIP/[0-9]+\.[0-9]+)$")
_ABSOLUTE_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"]+$")
_PARAM_VALUE = re.compile(rf"^[{_TOKEN_CHARS}:\[\]]+$")  # token or host (IPv6 references too)
_VIA = re.compile(rf"^([{_TOKEN_CHARS}]+)\s*/\s*([{_TOKEN_CHARS}]+)\s*/\s*([{_TOKEN_CHARS}]+)\s+([^;]+?)\s*(;.*)?$")
_DISPLAY_WORD = re.compile(rf"^[{_TOKEN_CHARS}\u0080-\U0010ffff]+$")  # tokens, and UTF-8 that phones leave unquoted
_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                   r"[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$")


class SipParseError(ValueError):
    """A message that cannot be accepted; `request` is set when it can still be answered."""

    def __init__(self, message: str, status: int = 400, request: SipRequest | None = None):
        super().__init__(message)
        self.status = status
        self.request = request


def canonical_name(name: str) -> str:
    lower = name.lower()
    lower = _COMPACT.get(lower, lower)
    return _CANONICAL.get(lower) or "-".join(part.capitalize() for part in lower.split("-"))


@dataclass
class Headers:
    """Header fields in order, names compared without case; values as written (unfolded)."""

    fields: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        key = canonical_name(name)
        return next((v for n, v in self.fields if n == key), None)

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, comma-separated lists split (Via, Route, Contact...)."""
        key = canonical_name(name)
        return [part for n, v in self.fields if n == key for part in split_list(v)]

    def add(self, name: str, value: str) -> None:
        self.fields.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self.fields = [(n, v) for n, v in self.fields if n != key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)


class _DialogHeaders:
    """What requests and responses alike are matched by (transactions, dialogs)."""

    headers: Headers

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")


@dataclass
class SipRequest(_DialogHeaders):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def serialise(self) -> bytes:
        return _serialise(f"{self.method} {self.uri} {SIP_VERSION}", self.headers, self.body)


@dataclass
class SipResponse(_DialogHeaders):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def serialise(self) -> bytes:
        return _serialise(f"{SIP_VERSION} {self.status} {self.reason}", self.headers, self.body)


SipMessage = SipRequest | SipResponse


def _serialise(start: str, headers: Headers, body: bytes) -> bytes:
    lines = [start] + [f"{n}: {v}" for n, v in headers if n != "Content-Length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_message(data: bytes) -> SipMessage:
    """One SIP message from one datagram (or one frame of a stream, see `frame_length`)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}", 513)
    end = data.find(b"\r\n\r\n")
    head = data[:end] if end >= 0 else data
    if len(head) > MAX_HEADER_BYTES:
        raise SipParseError(f"header section of {len(head)} bytes exceeds the limit of {MAX_HEADER_BYTES}", 513)
    problem: SipParseError | None = None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        text = head.decode("utf-8", "replace")
        problem = SipParseError(f"header section is not UTF-8 (byte {error.start})")
    start_line, *lines = text.split("\r\n")
    headers, header_problem = _parse_headers(lines)
    if start_line.startswith(SIP_VERSION + " "):
        response = _response(start_line, headers)
        try:
            _raise_first(problem, header_problem, None if end >= 0 else _NO_END)
            response.body = _body(headers, data[end + 4:])
            _check_response(response)
        except SipParseError as error:
            raise SipParseError(f"response: {error}", error.status) from None
        return response
    if not _LOOKS_LIKE_REQUEST.match(start_line):
        raise SipParseError(f"neither a request nor a response: {start_line[:80]!r}")
    answerable = SipRequest(start_line.split(" ", 1)[0], "", headers)
    try:
        _raise_first(problem, header_problem, None if end >= 0 else _NO_END)
        request = _request(start_line, headers)
        request.body = _body(headers, data[end + 4:])
        _check_request(request)
    except SipParseError as error:
        error.request = answerable
        raise
    return request


_NO_END = SipParseError("no empty line ends the header section")


def _raise_first(*problems: SipParseError | None) -> None:
    for problem in problems:
        if problem is not None:
            raise SipParseError(str(problem), problem.status)


def _response(line: str, headers: Headers) -> SipResponse:
    match = _STATUS_LINE.match(line)
    if match is None:
        raise SipParseError(f"malformed status line {line[:80]!r}")
    return SipResponse(int(match[1]), match[2], headers)


def _request(line: str, headers: Headers) -> SipRequest:
    match = _REQUEST_LINE.match(line)
    if match is None:
        raise SipParseError(f"malformed request line {line[:80]!r} (Method SP Request-URI SP SIP-Version, "
                            "one space apart)")
    method, uri, version = match.groups()
    if version != SIP_VERSION:
        raise SipParseError(f"unsupported version {version[:20]!r}", 505)
    if not _ABSOLUTE_URI.match(uri):
        raise SipParseError(f"Request-URI {uri[:80]!r} is not a URI")
    return SipRequest(method, uri, headers, version=version)


def _parse_headers(lines: list[str]) -> tuple[Headers, SipParseError | None]:
    """The header fields that can be read, and the first problem found (the message stays answerable)."""
    headers, problem = Headers(), None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not headers.fields:
                problem = problem or SipParseError("a continuation line comes before any header")
                continue
            name, value = headers.fields[-1]
            headers.fields[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN.match(name):
            problem = problem or SipParseError(f"malformed header line {line[:80]!r}")
            continue
        if len(headers.fields) >= MAX_HEADERS:
            return headers, problem or SipParseError(f"more than {MAX_HEADERS} header fields", 513)
        headers.add(name, value.strip())
    for name, value in headers:
        if _has_control(value):
            return headers, problem or SipParseError(f"control character in header {name[:40]!r} "
                                                     "(outside a quoted string's escape)")
    for name in SINGLE_HEADERS:
        if sum(1 for n, _ in headers if n == name) > 1:
            return headers, problem or SipParseError(f"more than one {name} header")
    return headers, problem


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²' and other digits that int() refuses."""
    return text.isascii() and text.isdigit()


def _has_control(value: str) -> bool:
    """A control character other than HTAB, except as a quoted-pair inside a quoted string (RFC 3261 §25.1)."""
    if not _CONTROL.search(value):
        return False
    quoted, escaped = False, False
    for char in value:
        if escaped:
            escaped = False
            if char in "\r\n":
                return True
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif _CONTROL.match(char):
            return True
    return False


def _body(headers: Headers, rest: bytes) -> bytes:
    value = headers.get("Content-Length")
    if value is None:
        length = len(rest)  # UDP may omit it: the body is the rest of the datagram
    elif not _digits(value) or len(value) > 9:
        raise SipParseError(f"Content-Length {value[:20]!r} is not a number")
    else:
        length = int(value)
        if length > len(rest):
            raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} bytes of body")
    if length > MAX_BODY_BYTES:
        raise SipParseError(f"body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}", 513)
    return rest[:length]


def _check_request(request: SipRequest) -> None:
    headers = request.headers
    missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
    if missing:
        raise SipParseError(f"missing {', '.join(missing)}")
    number, method = request.cseq
    if method != request.method:
        raise SipParseError(f"CSeq method {method!r} is not the request's {request.method!r}")
    vias = [Via.parse(v) for v in headers.get_all("Via")]
    if vias[0].branch == MAGIC_COOKIE:
        raise SipParseError(f"the Via branch is the magic cookie {MAGIC_COOKIE!r} alone, with no transaction id")
    for name in ("From", "To"):
        NameAddr.parse(headers.get(name) or "", what=name)
    for name in ("Contact", "Route", "Record-Route"):
        for value in headers.get_all(name):
            if not (name == "Contact" and value == "*"):
                NameAddr.parse(value, what=name)
    scheme = request.uri.partition(":")[0].lower()
    if scheme in ("sip", "sips"):
        try:
            uri = SipUri.parse(request.uri)
        except ValueError as error:
            raise SipParseError(f"Request-URI: {error}") from None
        if uri.headers:
            raise SipParseError(f"the Request-URI carries headers ({uri.headers[:40]!r}), which it must not")
    forwards = headers.get("Max-Forwards")
    if forwards is not None and not (_digits(forwards) and int(forwards) <= 255):
        raise SipParseError(f"Max-Forwards {forwards[:20]!r} is not a number from 0 to 255")
    date = headers.get("Date")
    if date is not None and not _DATE.match(date):
        raise SipParseError(f"Date {date[:40]!r} is not an RFC 1123 date in GMT")


def _check_response(response: SipResponse) -> None:
    if not response.headers.get("Via") or not response.headers.get("CSeq"):
        raise SipParseError("missing Via or CSeq")
    for value in response.headers.get_all("Via"):
        Via.parse(value)
    response.cseq  # noqa: B018  (raises if malformed)


def frame_length(buffer: bytes | bytearray) -> int | None:
    """On a stream (TCP): the length of the first whole message in `buffer`, None if incomplete.

    Raises SipParseError when the stream cannot be framed (the connection must be closed).
    Blank lines between messages (keep-alives, RFC 5626) count as a frame of their own.
    """
    if buffer[:2] == b"\r\n":
        return 2
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
    if end < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise SipParseError(f"no end of the header section within {MAX_HEADER_BYTES} bytes", 513)
        return None
    match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,9})[ \t]*\r?$", bytes(buffer[:end + 2]))
    if match is None:
        raise SipParseError("a message on a stream must have a Content-Length")
    length = int(match[1])
    if length > MAX_BODY_BYTES:
        raise SipParseError(f"body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}", 513)
    total = end + 4 + length
    return total if len(buffer) >= total else None


# -- header values ------------------------------------------------------------------------------


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, keeping commas inside quotes and <...>."""
    parts, start, depth, quoted, escaped = [], 0, 0, False, False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            escaped, quoted = char == "\\", char != '"'
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def parse_params(text: str) -> dict[str, str]:
    """`;a=1;b;c="x"` -> {"a": "1", "b": "", "c": "x"}; names lowercased."""
    params: dict[str, str] = {}
    for part in text.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            params[name.strip().lower()] = value.strip().strip('"')
    return params


def format_params(params: dict[str, str]) -> str:
    return "".join(f";{k}={v}" if v else f";{k}" for k, v in params.items())


def parse_cseq(value: str) -> tuple[int, str]:
    number, _, method = value.strip().partition(" ")
    method = method.strip()
    if not _digits(number) or len(number) > 10 or int(number) >= 2**32 or not _TOKEN.match(method or "?"):
        raise SipParseError(f"malformed CSeq {value[:40]!r} (a number below 2**32, then the method)")
    return int(number), method


def header_params(text: str, what: str) -> dict[str, str]:
    """The parameters of a header value (`;a=1;b;c="x"`, LWS allowed around ";" and "="), strictly:
    every parameter has a token for a name and a token, host or quoted string for a value."""
    text = text.strip()
    if not text:
        return {}
    if not text.startswith(";"):
        raise SipParseError(f"{what}: {text[:40]!r} where parameters should begin with ';'")
    params: dict[str, str] = {}
    for part in _split_outside_quotes(text[1:], ";"):
        name, equals, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not _TOKEN.match(name):
            raise SipParseError(f"{what}: empty or malformed parameter {part.strip()[:40]!r}")
        if value.startswith('"'):
            value, rest = unquote(value, what)
            if rest.strip():
                raise SipParseError(f"{what}: {rest.strip()[:40]!r} after the quoted value of {name!r}")
        elif equals and not _PARAM_VALUE.match(value):
            raise SipParseError(f"{what}: parameter {name[:40]!r} has a malformed value {value[:40]!r}")
        params[name.lower()] = value
    return params


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def unquote(text: str, what: str) -> tuple[str, str]:
    """A quoted string at the start of `text`: its content with quoted-pairs resolved, and what follows."""
    out, escaped = [], False
    for i, char in enumerate(text[1:], start=1):
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return "".join(out), text[i + 1:]
        else:
            out.append(char)
    raise SipParseError(f"{what}: unterminated quoted string {text[:40]!r}")


@dataclass
class SipUri:
    scheme: str  # sip, sips or tel
    user: str
    host: str
    port: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: str = ""  # what follows "?", still escaped

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips", "tel"):
            raise ValueError(f"{text[:80]!r} is not a sip:, sips: or tel: URI")
        if scheme == "tel":
            number, _, params = rest.split("?", 1)[0].partition(";")
            return cls(scheme, number, "", None, parse_params(params))
        # The userinfo ends at the first "@" (the user part may hold "?", ";" and ":"; "@" only escaped).
        userinfo, at, hostpart = rest.partition("@")
        if not at:
            userinfo, hostpart = "", rest
        hostpart, _, headers = hostpart.partition("?")
        hostport, _, params = hostpart.partition(";")
        user = userinfo.split(":", 1)[0]
        if at and not user:
            raise ValueError(f"{text[:80]!r} has an empty user before '@'")
        host, port = split_hostport(hostport)
        return cls(scheme, user, host, port, parse_params(params), headers)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}:{user}{self.host}{port}{format_params(self.params)}"


def split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host or not re.match(r"^[A-Za-z0-9.:_-]+$", host):
        raise ValueError(f"bad host {text[:80]!r}")
    if port and not (_digits(port) and 0 < int(port) < 65536):
        raise ValueError(f"bad port {port[:10]!r}")
    return host, int(port) if port else None


@dataclass
class NameAddr:
    """`"Display" <uri>;tag=x` as in From, To, Contact, Route, Refer-To."""

    uri: str
    display: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, what: str = "address") -> NameAddr:
        """name-addr (`[display] <URI>`) or addr-spec (a bare URI, which may hold no ";", "?" or ","),
        then header parameters. The display name is a quoted string (escapes resolved) or tokens. Any
        URI scheme is read (RFC 3261 §19.1: a UA may meet others); sip: and sips: URIs are checked."""
        rest, display = text.strip(), ""
        if rest.startswith('"'):
            display, rest = unquote(rest, what)
            rest = rest.lstrip()
            if not rest.startswith("<"):
                raise SipParseError(f"{what}: the display name is not followed by '<'")
        elif "<" in rest:
            before, _, after = rest.partition("<")
            words = before.split()
            if not all(_DISPLAY_WORD.match(word) for word in words):
                raise SipParseError(f"{what}: display name {before.strip()[:40]!r} is neither a quoted string "
                                    "nor tokens")
            display, rest = " ".join(words), "<" + after
        if rest.startswith("<"):
            uri, closed, params = rest[1:].partition(">")
            if not closed:
                raise SipParseError(f"{what}: unclosed '<' in {text[:80]!r}")
            if uri != uri.strip():
                raise SipParseError(f"{what}: spaces inside <{uri.strip()[:60]}>")
        else:
            uri, semicolon, params = rest.partition(";")
            uri, params = uri.strip(), semicolon + params
            if any(char in uri for char in "?, \t"):
                raise SipParseError(f"{what}: {uri[:60]!r} holds '?', ',' or spaces, so it must be enclosed in <>")
        if not _ABSOLUTE_URI.match(uri):
            raise SipParseError(f"{what}: {uri[:60]!r} is not a URI")
        if uri.partition(":")[0].lower() in ("sip", "sips"):
            try:
                SipUri.parse(uri)
            except ValueError as error:
                raise SipParseError(f"{what}: {error}") from None
        return cls(uri, display, header_params(params, what))

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


@dataclass
class Via:
    transport: str  # UDP, TCP, TLS...
    host: str
    port: int | None
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """`SIP / 2.0 / UDP host:port;branch=...`: LWS may surround each "/" and ":" (RFC 3261 §25.1)."""
        match = _VIA.match(text.strip())
        if match is None:
            raise SipParseError(f"malformed Via {text[:80]!r}")
        name, version, transport, sent_by, params = match.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"Via names {name[:10]}/{version[:10]}, not SIP/2.0")
        sent_by = re.sub(r"\s*:\s*", ":", sent_by) if not sent_by.startswith("[") else sent_by
        try:
            host, port = split_hostport(sent_by)
        except ValueError as error:
            raise SipParseError(f"Via: {error}") from None
        return cls(transport.upper(), host, port, header_params(params or "", "Via"))

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


# -- responses ----------------------------------------------------------------------------------

REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
           408: "Request Timeout", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
           420: "Bad Extension", 481: "Call/Transaction Does Not Exist",
           482: "Loop Detected", 483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated",
           488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
           501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported",
           513: "Message Too Large"}


def response_to(request: SipRequest, status: int, *, to_tag: str = "", reason: str | None = None,
                warning: str | None = None) -> SipResponse:
    """A response with the request's Via, From, To (given `to_tag` if it has none), Call-ID and CSeq."""
    headers = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for n, v in request.headers:
            if n == name:
                headers.add(name, v)
    to = request.headers.get("To") or ""
    if to_tag and status != 100 and ";tag=" not in to.replace(" ", "").lower():
        headers.set("To", f"{to};tag={to_tag}")
    if warning:
        headers.add("Warning", '399 plexline "' + warning.replace('"', "'").replace("\\", "/")[:200] + '"')
    return SipResponse(status, reason or REASONS.get(status, "Unknown"), headers)
