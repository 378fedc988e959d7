"""Calls through the control plane (embedded: in-memory registry, echo worker, files for the history)
to a real webhook receiver; the admin API of call records, recordings and dead letters."""

import json
import shutil
import socket
import time
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from agent.call_reporter import CallReporter
from agent.contracts.events import event_schema
from agent.contracts.workers import WorkerInfo
from agent.worker import Worker, echo_model
from bench.webhook_receiver import Answer, Receiver
from personas.store import TenantStore
from personas.tokens import hash_token
from plexline.embedded import LocalWorkerClient
from telephony.control.app import create_app
from telephony.control.control_plane import ControlPlane
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.registry import NewCall
from telephony.control.settings import Settings
from telephony.control.worker_client import HttpWorkerClient
from telephony.events.call_history import open_call_history
from telephony.events.signature import new_secret

EXAMPLE_ACME = Path(__file__).parents[3] / "personas" / "examples" / "tenants" / "acme"
SCHEMA_FILE = Path(__file__).parents[3] / "docs" / "webhook-events.schema.json"
OPERATOR, ACME, GLOBEX = "operator-token", "acme-admin-token", "globex-admin-token"
ACME_SECRET, GLOBEX_SECRET = new_secret(), new_secret()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def local_webhook(url: str, secret: str) -> dict:
    return {"url": url, "secret": secret, "allow_http": True, "allow_private_network": True}


@pytest.fixture
def receivers():
    """acme's receiver takes everything; globex's says it is gone."""
    with Receiver(ACME_SECRET) as acme, Receiver(GLOBEX_SECRET, lambda n, msg_id: Answer(410)) as globex:
        yield acme, globex


@pytest.fixture
def client(tmp_path: Path, receivers):
    acme_hook, globex_hook = receivers
    root = tmp_path / "tenants"
    shutil.copytree(EXAMPLE_ACME, root / "acme")
    tenant = yaml.safe_load((root / "acme" / "tenant.yaml").read_text())
    tenant |= {"admin_token_hash": hash_token(ACME, n=1024), "webhook": local_webhook(acme_hook.url, ACME_SECRET)}
    (root / "acme" / "tenant.yaml").write_text(yaml.safe_dump(tenant))
    line = yaml.safe_load((root / "acme" / "support.yaml").read_text()) | {"recording": True}
    (root / "acme" / "support.yaml").write_text(yaml.safe_dump(line))
    (root / "globex").mkdir()
    (root / "globex" / "tenant.yaml").write_text(yaml.safe_dump({
        "name": "Globex", "addresses": ["+15555550200"], "admin_token_hash": hash_token(GLOBEX, n=1024),
        "webhook": local_webhook(globex_hook.url, GLOBEX_SECRET)}))
    (root / "globex" / "desk.yaml").write_text(yaml.safe_dump({
        "answers": ["+15555550200"], "persona": {"role": "You work for Globex.", "voice": "NATM1"}}))

    settings = Settings(personas_dir=root, operator_token=OPERATOR, worker_secret="worker-secret", data_dir=tmp_path,
                        reap_interval=0.05, reload_interval=0.05, shutdown_grace=0, webhook_timeout=2)
    history = open_call_history(None, "", settings.recordings_folder, data_dir=tmp_path)
    registry = MemoryRegistry()
    worker = Worker(echo_model(3), worker_id="local", address="http://127.0.0.1:9", version="test",
                    registry=registry, heartbeat_ttl=5, reporter=CallReporter(history),
                    recordings=settings.recordings_folder)
    plane = ControlPlane(settings, TenantStore(root), registry, LocalWorkerClient(worker, HttpWorkerClient("s")),
                         history=history, local_worker=worker)
    with TestClient(create_app(plane)) as client:
        yield client


def call(client: TestClient, to: str, token: str, seconds: float = 0.3) -> str:
    placed = client.post("/calls", json={"to": to, "from": "+15555550999"}, headers=bearer(token))
    assert placed.status_code == 201, placed.text
    call_id = placed.json()["call_id"]
    time.sleep(seconds)
    tenant = "acme" if token == ACME else "globex"
    assert client.delete(f"/tenants/{tenant}/calls/{call_id}", headers=bearer(token)).status_code == 204
    return call_id


def until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_a_call_reaches_the_webhook_signed_and_is_kept_with_its_recording(client, receivers):
    acme_hook, _ = receivers
    call_id = call(client, "+15555550100", ACME)

    got = acme_hook.wait_for(2)
    assert [d.event["type"] for d in got] == ["call.started", "call.ended"] and all(d.valid for d in got)
    ended = got[1].event["data"]
    assert (ended["call_id"], ended["outcome"], ended["reason"]) == (call_id, "agent_hung_up", "ended by an admin")
    assert ended["recording"]["url"] == f"/tenants/acme/call-records/{call_id}/recording"

    listed = client.get("/tenants/acme/call-records", headers=bearer(ACME)).json()
    record = client.get(f"/tenants/acme/call-records/{call_id}", headers=bearer(ACME)).json()
    assert [(r["call_id"], r["from"], r["recorded"]) for r in listed] == [(call_id, "+15555550999", True)]
    assert record == ended  # the record is the event's data
    assert [i["event"] for i in record["transcript"]["items"]] == ["answered", "agent_hung_up"]

    recording = client.get(ended["recording"]["url"], headers=bearer(ACME))
    assert (recording.status_code, recording.headers["content-type"]) == (200, "audio/wav")
    path = Path(client.app.state.control_plane.history.recordings.root) / "acme" / f"{call_id}.wav"
    with wave.open(str(path)) as f:
        assert f.getnchannels() == 2 and 0.1 < f.getnframes() / f.getframerate() < 2
    assert client.delete(ended["recording"]["url"], headers=bearer(ACME)).status_code == 204
    assert client.get(ended["recording"]["url"], headers=bearer(ACME)).status_code == 404


def test_call_records_filter_by_time_line_and_outcome(client, receivers):
    first, second = call(client, "+15555550100", ACME, 0.05), call(client, "+15555550100", ACME, 0.05)
    receivers[0].wait_for(4)

    def ids(**params) -> list[str]:
        response = client.get("/tenants/acme/call-records", params=params, headers=bearer(ACME))
        assert response.status_code == 200, response.text
        return [r["call_id"] for r in response.json()]

    now = datetime.now(timezone.utc)
    assert ids() == [second, first]
    assert ids(limit=1) == [second]
    assert ids(line="support", outcome="agent_hung_up") == [second, first]
    assert ids(line="sales") == [] and ids(outcome="failed") == []
    assert ids(since=(now + timedelta(minutes=1)).isoformat()) == []
    assert ids(until=(now - timedelta(minutes=1)).isoformat()) == []
    assert client.get("/tenants/acme/call-records", params={"outcome": "lost"}, headers=bearer(ACME)).status_code == 422


def test_another_tenants_calls_recordings_and_letters_are_not_found(client, receivers):
    call_id = call(client, "+15555550100", ACME, 0.05)
    receivers[0].wait_for(2)
    for path in (f"/tenants/acme/call-records/{call_id}", f"/tenants/acme/call-records/{call_id}/recording",
                 "/tenants/acme/call-records", "/tenants/acme/webhooks/dead-letters"):
        assert client.get(path, headers=bearer(GLOBEX)).status_code == 401  # another tenant's path: as a wrong token
    assert client.delete(f"/tenants/acme/call-records/{call_id}/recording", headers=bearer(GLOBEX)).status_code == 401
    for path in (f"/tenants/globex/call-records/{call_id}", f"/tenants/globex/call-records/{call_id}/recording"):
        assert client.get(path, headers=bearer(GLOBEX)).status_code == 404  # not under its own tenant either
    assert client.get(f"/tenants/acme/call-records/{call_id}", headers=bearer(OPERATOR)).status_code == 200


def test_dead_letters_are_listed_and_replayed_by_the_tenant(client, receivers):
    call(client, "+15555550200", GLOBEX, 0.05)
    letters = until(lambda: len(r := client.get("/tenants/globex/webhooks/dead-letters",
                                                headers=bearer(GLOBEX)).json()) == 2 and r)
    assert letters and [(d["type"], d["error"]) for d in letters] == [
        ("call.started", "the receiver answered 410 Gone"), ("call.ended", "the receiver answered 410 Gone")]
    assert letters[1]["payload"]["data"]["call_id"] == letters[1]["call_id"]
    assert client.post(f"/tenants/acme/webhooks/dead-letters/{letters[0]['event_id']}/replay",
                       headers=bearer(ACME)).status_code == 404

    replay = client.post(f"/tenants/globex/webhooks/dead-letters/{letters[0]['event_id']}/replay",
                         headers=bearer(GLOBEX))
    assert replay.status_code == 202
    assert until(lambda: len(receivers[1].deliveries) == 3)  # tried again (and gone again)
    assert client.post("/tenants/globex/webhooks/dead-letters/msg_nosuch/replay",
                       headers=bearer(GLOBEX)).status_code == 404


def test_a_call_lost_with_its_worker_is_reported_failed(client, receivers):
    plane = client.app.state.control_plane
    registry = plane.registry
    gone = WorkerInfo("gone", "http://127.0.0.1:9", 1, "echo", "test")
    client.portal.call(registry.heartbeat, gone, 0.2, [])
    new = NewCall("lost-1", "acme", "support", "+15555550999", "+15555550100", 10)
    client.portal.call(lambda: registry.reserve(new, exclude=["local"]))
    client.portal.call(registry.activate, "lost-1")

    got = receivers[0].wait_for(1)
    ended = got[0].event
    assert (ended["type"], ended["data"]["call_id"], ended["data"]["outcome"]) == ("call.ended", "lost-1", "failed")
    assert ended["data"]["reason"] == "worker gone lost: its heartbeat stopped"
    assert ended["data"]["persona"]["voice"] == "NATF2" and ended["data"]["recording"] is None
    record = client.get("/tenants/acme/call-records/lost-1", headers=bearer(ACME)).json()
    assert record["outcome"] == "failed"


def test_the_schema_is_served_and_matches_the_documented_one(client):
    assert client.get("/webhooks/schema").json() == event_schema()
    assert json.loads(SCHEMA_FILE.read_text()) == event_schema(), "regenerate: python -m agent.contracts.events"


def test_refused_calls_are_recorded_with_their_reason_whatever_their_transport(client, receivers):
    placed = [client.post("/calls", json={"to": to, "from": f"+1555555090{i}"}, headers=bearer(token))
              for i, (to, token) in enumerate([("+15555550100", ACME)] * 2 + [("+15555550200", GLOBEX)])]
    assert [p.status_code for p in placed] == [201] * 3  # every slot of the worker is taken (acme: its fair share)
    refused = client.post("/calls", json={"to": "+15555550100", "from": "+15555550999"}, headers=bearer(ACME))
    assert refused.status_code == 503
    offer = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
             "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 AB:CD\r\n"
             "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\na=rtpmap:111 opus/48000/2\r\n")  # one that could connect
    whip = client.post("/tenants/acme/lines/support/whip", content=offer,
                       headers=bearer(ACME) | {"Content-Type": "application/sdp"})
    assert whip.status_code == 503

    got = receivers[0].wait_for(4)  # acme's two call.started, then the two refusals
    ended = [d.event["data"] for d in got if d.event["type"] == "call.ended"]
    assert [(e["from"], e["outcome"], e["duration_seconds"]) for e in ended] == [
        ("+15555550999", "refused", 0.0), ("webrtc:testclient", "refused", 0.0)]
    assert all(e["reason"] == "no free slot: no worker has a free slot" for e in ended)
    listed = client.get("/tenants/acme/call-records", params={"outcome": "refused"}, headers=bearer(ACME)).json()
    assert sorted((r["call_id"], r["reason"]) for r in listed) == sorted((e["call_id"], e["reason"]) for e in ended)


def test_events_still_being_delivered_are_listed_with_their_failed_attempts(client, tmp_path):
    tenant_file = tmp_path / "tenants" / "acme" / "tenant.yaml"
    tenant = yaml.safe_load(tenant_file.read_text())
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        tenant["webhook"]["url"] = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    tenant_file.write_text(yaml.safe_dump(tenant))
    time.sleep(0.3)  # the store reloads
    call_id = call(client, "+15555550100", ACME, 0.05)

    waiting = until(lambda: [d for d in client.get("/tenants/acme/webhooks/deliveries", headers=bearer(ACME)).json()
                             if d["call_id"] == call_id and d["attempts"] >= 1])

    assert waiting and waiting[0]["type"] == "call.started" and waiting[0]["retry_at"] is not None
    assert "ConnectError" in waiting[0]["error"]
    assert client.get("/tenants/globex/webhooks/deliveries", headers=bearer(GLOBEX)).json() == []
    assert client.get("/tenants/acme/webhooks/deliveries", headers=bearer(GLOBEX)).status_code == 401


def test_delivered_events_are_listed_newest_first_with_their_attempts_and_status(client, receivers):
    call_id = call(client, "+15555550100", ACME, 0.05)
    call(client, "+15555550200", GLOBEX, 0.05)  # its receiver answers 410 Gone: nothing delivered

    delivered = until(lambda: len(r := client.get("/tenants/acme/webhooks/delivered",
                                                  headers=bearer(ACME)).json()) == 2 and r)

    assert delivered and [(d["type"], d["call_id"], d["attempts"], d["status"]) for d in delivered] == [
        ("call.ended", call_id, 1, 200), ("call.started", call_id, 1, 200)]
    assert delivered[0]["delivered_at"] >= delivered[1]["delivered_at"]
    assert until(lambda: len(receivers[1].deliveries) == 2)
    assert client.get("/tenants/globex/webhooks/delivered", headers=bearer(GLOBEX)).json() == []
    assert client.get("/tenants/acme/webhooks/delivered", headers=bearer(GLOBEX)).status_code == 401
