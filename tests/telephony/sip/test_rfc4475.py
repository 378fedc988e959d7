"""RFC 4475's torture messages, each sent from a fresh socket to a running SIP server, and its answer.

The server is the control plane's UAS with one tenant (`acme`, trunks from 127.0.0.0/8) whose line
answers `user` (the user most of the RFC's requests are for) and +15555550100, and no worker: a
valid INVITE that reaches the line is refused 503 for want of a slot. Each message gets the answer
RFC 4475 describes for a user agent server, in the order RFC 3261 §8.2 checks a request (method,
Request-URI, Require, then the body); a response is never answered.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.contracts.workers import WorkerInfo
from personas.store import TenantStore
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.metrics import Metrics
from telephony.control.registry import NewCall
from telephony.control.routing import CallRouter
from telephony.control.worker_client import HttpWorkerClient
from telephony.events.call_history import CallHistory, open_call_history
from telephony.events.call_records import CallQuery
from telephony.sip.message import Headers, SipResponse
from telephony.sip.rate_limit import SourceLimiter
from telephony.sip.server import SipConfig, SipServer

pytestmark = pytest.mark.anyio
CORPUS = Path(__file__).parent / "rfc4475"
NONE = 0  # no answer at all: the message is a response

# RFC section -> the status a UAS answers; why, where the RFC leaves a choice or the status is not 400.
EXPECTED: dict[str, int] = {
    "3.1.1.1": 481,  # valid; its To has a tag, so it is for a dialog this UAS does not have (§12.2.2)
    "3.1.1.2": 501,  # valid; an unknown method: "Endpoints will generate a 501 listing the methods..."
    "3.1.1.3": 404,  # valid; the Request-URI's user is sips%3Auser%40example.com: no such line
    "3.1.1.4": 405,  # valid REGISTER; this UAS is no registrar
    "3.1.1.5": 501,  # valid; RE%47IST%45R is an unknown method, not REGISTER
    "3.1.1.6": 200,  # valid OPTIONS
    "3.1.1.7": 503,  # valid INVITE to the line: refused for want of a slot
    "3.1.1.8": 405,  # valid REGISTER; the INVITE after its Content-Length is ignored (answered once)
    "3.1.1.9": 200,
    "3.1.1.10": 200,
    "3.1.1.11": 405,  # valid MESSAGE; not served here
    "3.1.1.12": NONE,
    "3.1.1.13": NONE,
    "3.1.2.1": 400, "3.1.2.2": 400, "3.1.2.3": 400, "3.1.2.4": 400,
    "3.1.2.5": NONE,
    "3.1.2.6": 400, "3.1.2.7": 400, "3.1.2.8": 400, "3.1.2.9": 400, "3.1.2.10": 400, "3.1.2.11": 400,
    "3.1.2.12": 400, "3.1.2.13": 400, "3.1.2.14": 400, "3.1.2.15": 400,
    "3.1.2.16": 505,  # SIP/7.0
    "3.1.2.17": 400, "3.1.2.18": 400,
    "3.1.2.19": NONE,
    "3.2.1": 400,  # a branch of the magic cookie alone: "could reject it with a 400"
    "3.3.1": 400,  # no To, From, Call-ID
    "3.3.2": 416, "3.3.3": 416,  # Request-URI schemes this UAS does not serve
    "3.3.4": 405,  # a REGISTER (isbn: and http: URIs parse): the method is inspected first
    "3.3.5": 420,  # Require of unknown extensions (Proxy-Require is for proxies)
    "3.3.6": 415,  # a body that is not SDP
    "3.3.7": 405, "3.3.8": 400, "3.3.9": 400,
    "3.3.10": NONE,
    "3.3.11": 200,  # Max-Forwards 0 stops proxies, not the UAS it reached
    "3.3.12": 405, "3.3.13": 405, "3.3.14": 405,
    "3.3.15": 406,  # its Accept does not allow the SDP an answer would carry
    "3.4.1": 404,  # RFC 2543 syntax, parsed; UserB is no line here
}


def corpus() -> dict[str, bytes]:
    return {path.name.split("-")[0]: path.read_bytes() for path in sorted(CORPUS.glob("*.dat"))}


def test_the_corpus_holds_every_message_of_the_rfc():
    assert sorted(corpus()) == sorted(EXPECTED)


def answer(data: bytes) -> SipResponse:
    """Our response, read without judging it: it copies the request's headers, broken ones too."""
    start, *lines = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    version, status, reason = start.split(" ", 2)
    assert version == "SIP/2.0"
    headers = Headers()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name, value.strip())
    return SipResponse(int(status), reason, headers)


@dataclass
class Uas:
    server: SipServer
    registry: MemoryRegistry
    history: CallHistory

    async def send(self, data: bytes, seconds: float = 5.0) -> list[SipResponse]:
        """`data` from a fresh socket; the responses that come back until the final one or `seconds`
        (a refusal is placed, recorded and answered: on a loaded machine that took over 0.4 s)."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            await loop.sock_sendto(sock, data, ("127.0.0.1", self.server.port))
            responses, deadline = [], loop.time() + seconds
            while (left := deadline - loop.time()) > 0:
                try:
                    response = answer(await asyncio.wait_for(loop.sock_recv(sock, 65535), left))
                except TimeoutError:
                    break
                responses.append(response)
                if response.status >= 200:
                    break
            return responses


@pytest.fixture
async def uas(tmp_path: Path) -> AsyncIterator[Uas]:
    (tmp_path / "tenants" / "acme").mkdir(parents=True)
    (tmp_path / "tenants" / "acme" / "tenant.yaml").write_text(
        'name: Acme\naddresses: ["user", "+15555550100"]\nlimits: {max_concurrent_calls: 1}\n'
        "sip:\n  allow: [127.0.0.0/8]\n")
    (tmp_path / "tenants" / "acme" / "desk.yaml").write_text(
        'answers: ["user", "+15555550100"]\npersona:\n  role: You answer the phone.\n  voice: NATF2\n')
    registry = MemoryRegistry()
    history = open_call_history(None, "", tmp_path / "recordings", data_dir=tmp_path / "data")
    workers = HttpWorkerClient("secret", 1.0)  # no worker ever registers: never called
    router = CallRouter(registry, workers, Metrics(), refusals=history)
    server = SipServer(SipConfig(port=0), TenantStore(tmp_path / "tenants"), router, workers, registry)
    server.limiter = SourceLimiter(rate=1000, burst=10_000)  # every message of the corpus comes from 127.0.0.1
    await server.start()
    try:
        yield Uas(server, registry, history)
    finally:
        await server.stop()
        await history.close()
        await workers.close()


@pytest.mark.parametrize("section", sorted(EXPECTED, key=lambda s: [int(n) for n in s.split(".")]))
async def test_each_torture_message_gets_the_answer_the_rfc_describes(uas, section):
    silent = EXPECTED[section] == NONE
    responses = await uas.send(corpus()[section], seconds=0.4 if silent else 5.0)
    finals = [r for r in responses if r.status >= 200]
    if silent:
        assert responses == []
        return
    assert [r.status for r in finals] == [EXPECTED[section]], [(r.status, r.reason) for r in responses]
    final = finals[0]
    if final.status == 400:
        assert final.reason.startswith("Bad Request: ") and len(final.reason) > 20, final.reason  # says what
    assert {r.status for r in responses} <= {100, final.status}  # nothing rings before a refusal


async def test_what_each_refusal_names_and_carries(uas):
    messages = corpus()
    unknown = (await uas.send(messages["3.1.1.2"]))[-1]
    assert "INVITE" in unknown.headers.get("Allow")
    extension = (await uas.send(messages["3.3.5"]))[-1]
    assert extension.headers.get("Unsupported") == "nothingSupportsThis, nothingSupportsThisEither"
    media = (await uas.send(messages["3.3.6"]))[-1]
    assert media.headers.get("Accept") == "application/sdp"
    reasons = {section: (await uas.send(messages[section]))[-1].reason
               for section in ("3.1.2.2", "3.1.2.6", "3.1.2.9", "3.1.2.14", "3.3.9", "3.2.1")}
    assert reasons == {
        "3.1.2.2": "Bad Request: Content-Length 9999 exceeds the 154 bytes of body",
        "3.1.2.6": "Bad Request: To: unterminated quoted string '\"Mr. J. User <sip:j.user@example.com>'",
        "3.1.2.9": "Bad Request: malformed request line 'INVITE  sip:user@example.com  SIP/2.0' (Method SP "
                   "Request-URI SP SIP-Version, one space apart)",
        "3.1.2.14": "Bad Request: To: spaces inside <sip:t.watson@example.org>",
        "3.3.9": "Bad Request: more than one Content-Length header",
        "3.2.1": "Bad Request: the Via branch is the magic cookie 'z9hG4bK' alone, with no transaction id"}


async def test_a_call_refused_for_want_of_a_slot_gets_503_without_ringing_and_is_recorded(uas):
    responses = await uas.send(corpus()["3.1.1.7"])
    assert [r.status for r in responses] == [100, 503]
    assert responses[-1].headers.get("Retry-After") == "5"
    records = await uas.history.records.find("acme", CallQuery(outcome="refused"))
    assert [(r.line, r.reason, r.duration_seconds) for r in records] == [
        ("desk", "no free slot: no worker has a free slot", 0.0)]


async def test_a_tenant_at_its_limit_gets_486_with_retry_after_and_is_recorded(uas):
    await uas.registry.heartbeat(WorkerInfo("w1", "http://127.0.0.1:9", 4, "echo", "test"), 5.0, [])
    await uas.registry.reserve(NewCall("up-1", "acme", "desk", "+15555550999", "user", 1))  # its one call
    responses = await uas.send(corpus()["3.1.1.7"])
    assert [r.status for r in responses] == [100, 486]
    assert responses[-1].headers.get("Retry-After") == "5"
    records = await uas.history.records.find("acme", CallQuery(outcome="refused"))
    assert [r.reason for r in records] == ["the tenant's limit of 1 concurrent calls is reached"]


async def test_rfc_2543_requests_without_a_branch_are_told_apart_by_their_call_id(uas):
    first = corpus()["3.4.1"]
    second = first.replace(b"inv2543.1717@", b"inv2543.1718@")  # the same peer's next call
    assert [r.status for r in await uas.send(first)] == [404]  # a refusal goes out alone, without 100 Trying
    assert [r.status for r in await uas.send(second)] == [404]  # a call of its own, not a retransmission


async def test_a_bug_in_a_handler_is_answered_500_and_the_server_goes_on(uas, monkeypatch):
    class BrokenStore:  # as if reading the tenants had a bug
        @property
        def catalog(self):
            raise RuntimeError("a bug")

    monkeypatch.setattr(uas.server, "store", BrokenStore())
    responses = await uas.send(corpus()["3.1.1.7"])
    assert [(r.status, r.reason) for r in responses] == [
        (500, "Server Internal Error: RuntimeError('a bug')")]  # through its transaction
    assert [r.status for r in await uas.send(corpus()["3.1.1.6"])] == [200]
