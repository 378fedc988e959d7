"""Faults the webhook outbox must survive without losing an event: a control plane killed with
SIGKILL in the middle of deliveries (Redis and journal-file outboxes), and Redis itself killed and
restarted with its append-only file on."""

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from redis.exceptions import RedisError
from redis_server import start_redis
from test_commands_e2e import command, wait_until_up

from bench.webhook_receiver import Answer, Receiver
from personas.tenant import Webhook
from telephony.events.dispatcher import WebhookDispatcher
from telephony.events.file_outbox import FileOutbox
from telephony.events.outbox import Outbox, OutboxEvent, RetryPolicy
from telephony.events.redis_outbox import RedisOutbox
from telephony.events.signature import new_secret
from telephony.events.webhook_client import WebhookClient

SECRET = new_secret()
OPERATOR = "faults-operator-token"
KINDS = ("call.started", "call.transcript.partial", "call.ended")


def call_events(call: int) -> list[OutboxEvent]:
    return [OutboxEvent(f"msg_{call}_{n}", "acme", f"call-{call}", kind,
                        json.dumps({"type": kind, "data": {"call_id": f"call-{call}", "seq": n}}).encode())
            for n, kind in enumerate(KINDS)]


def all_ids(calls: range) -> list[str]:
    return sorted(e.id for c in calls for e in call_events(c))


def in_call_order(deliveries) -> bool:
    seen = defaultdict(list)
    for d in deliveries:
        seen[d.event["data"]["call_id"]].append(d.event["data"]["seq"])
    return all(seqs == sorted(seqs) for seqs in seen.values())


def personas(root: Path, receiver: Receiver) -> Path:
    (root / "acme").mkdir(parents=True)
    (root / "acme" / "tenant.yaml").write_text(yaml.safe_dump({
        "name": "Acme", "addresses": ["+15555550100"],
        "webhook": {"url": receiver.url, "secret": SECRET, "allow_http": True, "allow_private_network": True}}))
    return root


def kill_mid_delivery(process: subprocess.Popen, receiver: Receiver, after: int) -> None:
    """SIGKILL once `after` events are in: the receiver holds each attempt 0.2 s, so some are in flight."""
    receiver.wait_for(after)
    process.send_signal(signal.SIGKILL)
    process.wait()


def slow(n: int, msg_id: str) -> Answer:
    return Answer(delay=0.2)


ENV = {"PLEXLINE_OPERATOR_TOKEN": OPERATOR, "PLEXLINE_WORKER_SECRET": "faults-worker-secret",
       "PLEXLINE_SIP_PORT": "0", "PLEXLINE_WEBHOOK_CONCURRENCY": "4", "PLEXLINE_WEBHOOK_TIMEOUT": "0.5",
       "PLEXLINE_WEBHOOK_RETRY_FIRST": "0.1", "PLEXLINE_WEBHOOK_RETRY_CAP": "0.5", "PLEXLINE_SHUTDOWN_GRACE": "0"}


@dataclass(frozen=True)
class Deliverer:
    """A plexline process that delivers webhooks from a durable outbox, which the test fills first."""

    args: list[str]
    env: dict[str, str]
    outbox: Callable[[], Outbox]
    calls: int


def control_plane_on_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Deliverer:
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return Deliverer(["control-plane"], {"PLEXLINE_REDIS_URL": url, "PLEXLINE_REDIS_PREFIX": prefix},
                     lambda: RedisOutbox.from_url(url, prefix=prefix), calls=20)


def serve_with_its_journal(tmp_path: Path, request: pytest.FixtureRequest) -> Deliverer:
    return Deliverer(["serve", "--model", "echo", "--slots", "1"],
                     {"PLEXLINE_REDIS_URL": "", "PLEXLINE_DATA_DIR": str(tmp_path / "data")},
                     lambda: FileOutbox(tmp_path / "data" / "outbox"), calls=10)


@pytest.mark.parametrize("make", [control_plane_on_redis, serve_with_its_journal], ids=lambda make: make.__name__)
def test_killed_mid_delivery_and_restarted_it_delivers_the_rest(make, tmp_path, free_port, request):
    deliverer = make(tmp_path, request)
    total, kill_after = 3 * deliverer.calls, 3 * deliverer.calls // 4

    async def append():
        outbox = deliverer.outbox()
        await outbox.append([e for c in range(deliverer.calls) for e in call_events(c)])  # as workers would
        await outbox.close()

    asyncio.run(append())
    with Receiver(SECRET, slow) as receiver:
        env = ENV | deliverer.env | {"PLEXLINE_PERSONAS_DIR": str(personas(tmp_path / "tenants", receiver))}
        port = free_port()
        args = [*deliverer.args, "--http-port", str(port)]
        with command(args, env, tmp_path / "first.log") as first:
            wait_until_up(f"http://127.0.0.1:{port}", first, tmp_path / "first.log")
            kill_mid_delivery(first, receiver, after=kill_after)
        before = len(receiver.accepted())
        with command(args, env, tmp_path / "second.log") as second:
            got = receiver.wait_for(total, timeout=60)  # the restart itself takes seconds on a loaded machine
            second.terminate()
            second.wait()

    assert kill_after <= before < total
    assert sorted(d.msg_id for d in got) == all_ids(range(deliverer.calls))
    assert in_call_order(got)
    resent = [i for i, n in Counter(d.msg_id for d in receiver.deliveries).items() if n > 1]
    assert resent, "the kill came between deliveries: nothing was in flight"


def start_aof_redis(folder: Path, port: int) -> subprocess.Popen:
    return start_redis(folder, port, "--appendonly", "yes", "--appendfsync", "everysec")


def test_redis_killed_and_restarted_with_its_append_only_file_loses_nothing(tmp_path, free_port):
    port, folder = free_port(), tmp_path / "redis"
    folder.mkdir()
    url = f"redis://127.0.0.1:{port}/0"

    async def scenario(receiver: Receiver) -> int:
        outbox = RedisOutbox.from_url(url, lease=1.0, reclaim_idle=1.0)
        producer = RedisOutbox.from_url(url)  # a worker's connection
        hook = Webhook(url=receiver.url, secret=SECRET, allow_http=True, allow_private_network=True)
        dispatcher = WebhookDispatcher(outbox, {"acme": hook}.get, WebhookClient(timeout=1), RetryPolicy(0.1, 0.5, 600),
                                       concurrency=4, claim_wait=0.1)
        dispatcher.start()

        async def publish(calls: range) -> None:
            """As a worker's reporter does: keep them until Redis takes them (here for a minute, not for ever)."""
            deadline = time.monotonic() + 60
            for c in calls:
                while True:
                    try:
                        await producer.append(call_events(c))
                        break
                    except (RedisError, OSError):
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.1)

        await publish(range(20))
        await receiver.until(20)
        redis_server.send_signal(signal.SIGKILL)  # mid-delivery, events still queued
        redis_server.wait()
        delivered_before = len(receiver.accepted())
        late = asyncio.ensure_future(publish(range(20, 30)))  # calls that end while Redis is down
        await asyncio.sleep(1.0)
        restarted.append(start_aof_redis(folder, port))
        await late
        await receiver.until(90, timeout=30)
        await dispatcher.stop(grace=1)
        await dispatcher.client.close()
        pending = await outbox.pending()
        await outbox.close()
        await producer.close()
        assert pending == 0
        return delivered_before

    redis_server = start_aof_redis(folder, port)
    restarted: list[subprocess.Popen] = []
    try:
        with Receiver(SECRET, lambda n, msg_id: Answer(delay=0.05)) as receiver:
            before = asyncio.run(scenario(receiver))
    finally:
        for server in [redis_server, *restarted]:
            if server.poll() is None:
                server.terminate()
                server.wait()

    got = receiver.accepted()
    assert 20 <= before < 90
    assert sorted(d.msg_id for d in got) == all_ids(range(30))
    assert in_call_order(got)
