"""Webhook attempts against a real receiver on loopback, and the checks that keep tenants' URLs out."""

import time

import pytest

from bench.webhook_receiver import Answer, Receiver
from personas.tenant import Webhook
from telephony.events.signature import new_secret
from telephony.events.webhook_client import WebhookClient, is_public

pytestmark = pytest.mark.anyio
SECRET = new_secret()
BODY = b'{"type":"call.started"}'


def hook(url: str, **allow) -> Webhook:
    return Webhook(url=url, secret=SECRET, **allow)


LOCAL = {"allow_http": True, "allow_private_network": True}


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("::1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False), ("fe80::1", False),
    ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False), ("::ffff:127.0.0.1", False),
    ("fd00::1", False), ("192.0.2.1", False),
    # IPv4 inside IPv6: NAT64, local NAT64, 6to4, IPv4-compatible, SIIT, Teredo
    ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::808:808", True),
    ("64:ff9b:1::a00:1", False), ("2002:7f00:1::", False), ("2002:808:808::", True), ("::127.0.0.1", False),
    ("::a00:1", False), ("::ffff:0:7f00:1", False), ("2001:0:4136:e378:8000:63bf:80ff:fffe", False)])
def test_public_addresses(address, public):
    assert is_public(address) is public


async def test_a_signed_delivery_reaches_a_receiver_the_tenant_allows():
    with Receiver(SECRET) as receiver:
        client = WebhookClient(timeout=5)
        attempt = await client.send(hook(receiver.url, **LOCAL), "msg_1", BODY)
        await client.close()
    assert attempt.delivered and attempt.status == 200 and attempt.error == ""
    assert [(d.msg_id, d.valid, d.body) for d in receiver.deliveries] == [("msg_1", True, BODY)]


async def test_plain_http_needs_the_tenants_allowance_and_nothing_is_sent_without_it():
    with Receiver(SECRET) as receiver:
        client = WebhookClient(timeout=5)
        attempt = await client.send(hook(receiver.url, allow_private_network=True), "msg_1", BODY)
        await client.close()
    assert not attempt.delivered and "https is required" in attempt.error
    assert receiver.deliveries == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "10.0.0.1",
                                  "[::ffff:127.0.0.1]"])
async def test_private_targets_are_refused_unless_allowed(host):
    client = WebhookClient(timeout=2)
    attempt = await client.send(hook(f"https://{host}:9/hooks"), "msg_1", BODY)
    await client.close()
    assert attempt.status is None and "not a public address" in attempt.error


async def test_a_name_resolving_to_any_private_address_is_refused():
    async def mixed(host, port):
        return ["93.184.215.14", "127.0.0.1"]

    client = WebhookClient(timeout=2, resolver=mixed)
    attempt = await client.send(hook("https://hooks.example/x"), "msg_1", BODY)
    await client.close()
    assert "127.0.0.1: not a public address" in attempt.error


async def test_the_connection_goes_to_the_address_checked_and_the_name_is_resolved_once():
    lookups = []

    async def resolver(host, port):
        lookups.append(host)
        return ["127.0.0.1"]

    with Receiver(SECRET) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        client = WebhookClient(timeout=5, resolver=resolver)
        target = hook(f"http://hooks.example:{port}/hooks", **LOCAL)
        attempts = [await client.send(target, f"msg_{n}", BODY) for n in range(3)]
        await client.close()
    assert all(a.delivered for a in attempts)
    assert lookups == ["hooks.example"]  # one connection, kept alive
    assert {d.host for d in receiver.deliveries} == {f"hooks.example:{port}"}


async def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt():
    with Receiver(SECRET, lambda n, msg_id: Answer(delay=3)) as receiver:
        client = WebhookClient(timeout=0.3)
        start = time.monotonic()
        attempt = await client.send(hook(receiver.url, **LOCAL), "msg_1", BODY)
        await client.close()
    assert attempt.status is None and "0.3 s" in attempt.error
    assert time.monotonic() - start < 1.5


async def test_no_more_than_the_maximum_of_an_answer_is_read():
    with Receiver(SECRET, lambda n, msg_id: Answer(body_bytes=200 * 2**20)) as receiver:
        client = WebhookClient(timeout=5, max_response_bytes=64 * 1024)
        start = time.monotonic()
        attempt = await client.send(hook(receiver.url, **LOCAL), "msg_1", BODY)
        await client.close()
    assert attempt.delivered
    assert time.monotonic() - start < 2  # 200 MiB were offered; reading them all takes far longer


async def test_a_retry_after_that_is_not_ascii_digits_is_ignored():
    answers = [Answer(503, headers={"Retry-After": "\u00b2"}), Answer(503, headers={"Retry-After": "1e400"})]
    with Receiver(SECRET, lambda n, msg_id: answers[n]) as receiver:
        client = WebhookClient(timeout=5)
        superscript = await client.send(hook(receiver.url, **LOCAL), "msg_1", BODY)
        huge = await client.send(hook(receiver.url, **LOCAL), "msg_1", BODY)
        await client.close()
    assert (superscript.status, superscript.retry_after) == (503, None)
    assert (huge.status, huge.retry_after) == (503, None)


async def test_errors_and_retry_after_are_reported():
    answers = [Answer(503, headers={"Retry-After": "7"}), Answer(302, headers={"Location": "https://elsewhere/"})]
    with Receiver(SECRET, lambda n, msg_id: answers[n]) as receiver:
        client = WebhookClient(timeout=5)
        unavailable = await client.send(hook(receiver.url, **LOCAL), "msg_1", BODY)
        moved = await client.send(hook(receiver.url, **LOCAL), "msg_1", BODY)
        await client.close()
    assert (unavailable.status, unavailable.error, unavailable.retry_after) == (503, "HTTP 503", 7.0)
    assert (moved.status, moved.delivered) == (302, False)  # redirects are not followed
    assert len(receiver.deliveries) == 2
