"""SIP messages (RFC 3261 §7): requests and responses parsed from bytes and serialised back.

`parse_message` checks sizes before it looks at anything else, decodes the header section as
UTF-8, unfolds continuation lines, expands compact header names and checks what every request
must carry. A message it refuses raises `SipParseError`; when the refused message is a request
whose Via, From, To, Call-ID and CSeq could be read, the error carries that request so that a
400 (or 513) can be sent back, otherwise the message is dropped. Nothing here does I/O.
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
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2}) (.*)$")


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
    if end < 0:
        raise SipParseError("no empty line ends the header section")
    if end > MAX_HEADER_BYTES:
        raise SipParseError(f"header section of {end} bytes exceeds the limit of {MAX_HEADER_BYTES}", 513)
    try:
        text = data[:end].decode("utf-8")
    except UnicodeDecodeError as error:
        raise SipParseError(f"header section is not UTF-8 (byte {error.start})") from None
    start_line, *lines = text.split("\r\n")
    headers, problem = _parse_headers(lines)
    message: SipMessage = _start(start_line, headers)
    body = data[end + 4:]
    request = message if isinstance(message, SipRequest) and _answerable(headers) else None
    try:
        if problem is not None:
            raise problem
        if isinstance(message, SipRequest) and message.version != SIP_VERSION:
            raise SipParseError(f"unsupported version {message.version[:20]!r}", 505)
        message.body = _body(headers, body)
        if isinstance(message, SipRequest):
            _check_request(message)
    except SipParseError as error:
        error.request = request
        raise
    return message


def _start(line: str, headers: Headers) -> SipMessage:
    if line.startswith(SIP_VERSION + " "):
        match = _STATUS_LINE.match(line)
        if match is None:
            raise SipParseError(f"malformed status line {line[:80]!r}")
        return SipResponse(int(match[1]), match[2], headers)
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1] or not parts[2].startswith("SIP/"):
        raise SipParseError(f"malformed request line {line[:80]!r}")
    return SipRequest(parts[0], parts[1], headers, version=parts[2])


def _parse_headers(lines: list[str]) -> tuple[Headers, SipParseError | None]:
    """The header fields, and the first problem that still leaves the message answerable."""
    headers, problem = Headers(), None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not headers.fields:
                raise SipParseError("a continuation line comes before any header")
            name, value = headers.fields[-1]
            headers.fields[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN.match(name):
            raise SipParseError(f"malformed header line {line[:80]!r}")
        if _CONTROL.search(value):
            problem = problem or SipParseError(f"control character in header {name[:40]!r}")
        if len(headers.fields) >= MAX_HEADERS:
            return headers, SipParseError(f"more than {MAX_HEADERS} header fields", 513)
        headers.add(name, value.strip())
    return headers, problem


def _answerable(headers: Headers) -> bool:
    try:
        return all(headers.get(h) for h in REQUIRED_HEADERS) and bool(Via.parse(headers.get_all("Via")[0]))
    except ValueError:
        return False


def _body(headers: Headers, rest: bytes) -> bytes:
    value = headers.get("Content-Length")
    if value is None:
        length = len(rest)  # UDP may omit it: the body is the rest of the datagram
    elif not value.isdigit() or len(value) > 9:
        raise SipParseError(f"Content-Length {value[:20]!r} is not a number")
    else:
        length = int(value)
        if length > len(rest):
            raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} bytes of body")
    if length > MAX_BODY_BYTES:
        raise SipParseError(f"body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}", 513)
    return rest[:length]


def _check_request(request: SipRequest) -> None:
    missing = [h for h in REQUIRED_HEADERS if not request.headers.get(h)]
    if missing:
        raise SipParseError(f"missing {', '.join(missing)}")
    number, method = request.cseq
    if method != request.method:
        raise SipParseError(f"CSeq method {method!r} is not the request's {request.method!r}")
    for name in ("From", "To"):
        NameAddr.parse(request.headers.get(name) or "", what=name)
    try:
        SipUri.parse(request.uri)
    except ValueError as error:
        raise SipParseError(f"Request-URI: {error}") from None
    forwards = request.headers.get("Max-Forwards")
    if forwards is not None and not (forwards.isdigit() and int(forwards) <= 255):
        raise SipParseError(f"Max-Forwards {forwards[:20]!r} is not a number from 0 to 255")


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
    if not number.isdigit() or len(number) > 10 or int(number) >= 2**31 or not _TOKEN.match(method or "?"):
        raise SipParseError(f"malformed CSeq {value[:40]!r}")
    return int(number), method


@dataclass
class SipUri:
    scheme: str  # sip, sips or tel
    user: str
    host: str
    port: int | None = None
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips", "tel"):
            raise ValueError(f"{text[:80]!r} is not a sip:, sips: or tel: URI")
        rest = rest.split("?", 1)[0]
        if scheme == "tel":
            number, _, params = rest.partition(";")
            return cls(scheme, number, "", None, parse_params(params))
        userinfo, at, hostport = rest.rpartition("@")
        hostport, _, params = hostport.partition(";")
        user = userinfo.split(":", 1)[0] if at else ""
        host, port = split_hostport(hostport)
        return cls(scheme, user, host, port, parse_params(params))

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
    if port and not (port.isdigit() and 0 < int(port) < 65536):
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
        text = text.strip()
        if "<" in text:
            display, _, rest = text.partition("<")
            uri, closed, params = rest.partition(">")
            if not closed:
                raise SipParseError(f"{what}: unclosed '<' in {text[:80]!r}")
        else:  # addr-spec: parameters after the URI belong to the header
            uri, _, params = text.partition(";")
            display = ""
        try:
            SipUri.parse(uri.strip())
        except ValueError as error:
            raise SipParseError(f"{what}: {error}") from None
        return cls(uri.strip(), display.strip().strip('"'), parse_params(params))

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
        protocol, _, rest = text.strip().partition(" ")
        parts = protocol.split("/")
        if len(parts) != 3 or parts[0].upper() != "SIP" or parts[1] != "2.0":
            raise SipParseError(f"malformed Via {text[:80]!r}")
        sent_by, _, params = rest.strip().partition(";")
        try:
            host, port = split_hostport(sent_by)
        except ValueError as error:
            raise SipParseError(f"Via: {error}") from None
        return cls(parts[2].upper(), host, port, parse_params(params))

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


# -- responses ----------------------------------------------------------------------------------

REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           415: "Unsupported Media Type", 420: "Bad Extension", 481: "Call/Transaction Does Not Exist",
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
