"""Admission through the admin API (embedded: echo worker, files for the history; the in-memory registry
and Redis): one tenant's burst leaves a slot to another, and one source's flood is cut off with 429
while other sources still get in. Each request's source address is set by the test (`X-Test-Source`)."""

import shutil
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from agent.call_reporter import CallReporter
from agent.worker import Worker, echo_model
from personas.store import TenantStore
from personas.tokens import hash_token
from plexline.embedded import LocalWorkerClient
from telephony.control.app import create_app
from telephony.control.control_plane import ControlPlane
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.redis_registry import RedisRegistry
from telephony.control.settings import Settings
from telephony.control.worker_client import HttpWorkerClient
from telephony.events.call_history import open_call_history
from tests.telephony.control.test_admin_api import GOOD_OFFER_LINES

EXAMPLE_ACME = Path(__file__).parents[3] / "personas" / "examples" / "tenants" / "acme"
OPERATOR, ACME, GLOBEX = "operator-token", "acme-admin-token", "globex-admin-token"
ACME_LINE, GLOBEX_LINE = "+15555550100", "+15555550200"
SLOTS = 4


def tenants(root: Path) -> Path:
    shutil.copytree(EXAMPLE_ACME, root / "acme")
    tenant = yaml.safe_load((root / "acme" / "tenant.yaml").read_text())
    (root / "acme" / "tenant.yaml").write_text(yaml.safe_dump(tenant | {"admin_token_hash": hash_token(ACME, n=1024)}))
    (root / "globex").mkdir()
    (root / "globex" / "tenant.yaml").write_text(yaml.safe_dump({
        "name": "Globex", "addresses": [GLOBEX_LINE], "admin_token_hash": hash_token(GLOBEX, n=1024)}))
    (root / "globex" / "desk.yaml").write_text(yaml.safe_dump({
        "answers": [GLOBEX_LINE], "persona": {"role": "You work for Globex.", "voice": "NATM1"}}))
    return root


def with_test_sources(app):
    """The app, with each HTTP request's client address taken from its X-Test-Source header."""
    async def wrapped(scope, receive, send):
        source = dict(scope.get("headers", [])).get(b"x-test-source")
        if scope["type"] == "http" and source:
            scope = dict(scope, client=(source.decode(), 40000))
        await app(scope, receive, send)
    return wrapped


@pytest.fixture(params=["memory", "redis"])
def plane_of(request, tmp_path: Path, redis_prefix: str):
    """A control plane made with some settings, served by a TestClient."""
    opened = []

    def make(**settings) -> tuple[TestClient, ControlPlane]:
        root = tenants(tmp_path / "tenants")
        chosen = Settings(personas_dir=root, operator_token=OPERATOR, worker_secret="worker-secret",
                          data_dir=tmp_path, reap_interval=0.05, reload_interval=0.05, shutdown_grace=0,
                          retry_after_seconds=7, **settings)
        registry = (MemoryRegistry() if request.param == "memory" else
                    RedisRegistry.from_url(request.getfixturevalue("redis_url"), prefix=redis_prefix))
        history = open_call_history(None, "", chosen.recordings_folder, data_dir=tmp_path)
        worker = Worker(echo_model(SLOTS), worker_id="local", address="http://127.0.0.1:9", version="test",
                        registry=registry, heartbeat_ttl=5, reporter=CallReporter(history))
        plane = ControlPlane(chosen, TenantStore(root), registry, LocalWorkerClient(worker, HttpWorkerClient("s")),
                             history=history, local_worker=worker)
        client = TestClient(with_test_sources(create_app(plane)))
        opened.append(client.__enter__())
        return client, plane

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def place(client: TestClient, to: str, token: str, source: str):
    return client.post("/calls", json={"to": to, "from": "+15555550999"},
                       headers={"Authorization": f"Bearer {token}", "X-Test-Source": source})


def refusals(client: TestClient, tenant: str, token: str) -> list[str]:
    records = client.get(f"/tenants/{tenant}/call-records", headers={"Authorization": f"Bearer {token}"}).json()
    return [r["reason"] for r in records if r["outcome"] == "refused"]


def test_one_tenants_burst_leaves_a_slot_to_another(plane_of):
    client, plane = plane_of()
    burst = [place(client, ACME_LINE, ACME, f"203.0.113.{i}") for i in range(SLOTS + 2)]
    other = place(client, GLOBEX_LINE, GLOBEX, "198.51.100.2")

    assert [r.status_code for r in burst] == [201] * (SLOTS - 1) + [503] * 3  # 10% of 4 slots kept: 1
    assert burst[-1].headers["Retry-After"] == "7" and "fair share" in burst[-1].json()["detail"]
    assert other.status_code == 201
    assert plane.metrics.calls_refused.labels("acme", "fair_share")._value.get() == 3
    reasons = refusals(client, "acme", ACME)
    assert len(reasons) == 3 and all("the cluster is nearly full (1 of 4 slots free) and tenant acme" in r
                                     for r in reasons)


def test_one_sources_flood_is_cut_off_and_another_source_gets_in(plane_of):
    client, plane = plane_of(source_max_calls=2, source_calls_per_minute=6)
    flooder, token = "198.51.100.66", {"Authorization": f"Bearer {GLOBEX}"}
    held = [place(client, GLOBEX_LINE, GLOBEX, flooder) for _ in range(3)]
    assert [r.status_code for r in held] == [201, 201, 429] and held[2].headers["Retry-After"] == "7"
    for answer in held[:2]:
        client.delete(f"/tenants/globex/calls/{answer.json()['call_id']}", headers=token)

    flood = []
    for _ in range(7):  # 3 attempts made, 6 a minute allowed
        flood.append(answer := place(client, GLOBEX_LINE, GLOBEX, flooder))
        if answer.status_code == 201:
            client.delete(f"/tenants/globex/calls/{answer.json()['call_id']}", headers=token)
    whip = client.post("/tenants/globex/lines/desk/whip", content="\r\n".join(GOOD_OFFER_LINES) + "\r\n",
                       headers=token | {"X-Test-Source": flooder, "Content-Type": "application/sdp"})
    elsewhere = place(client, ACME_LINE, ACME, "203.0.113.1")
    operator = place(client, GLOBEX_LINE, OPERATOR, flooder)

    assert [r.status_code for r in flood] == [201] * 3 + [429] * 4
    assert 50 <= int(flood[-1].headers["Retry-After"]) <= 60
    assert whip.status_code == 429  # one count for every entry point
    assert elsewhere.status_code == 201 and operator.status_code == 201  # the operator is not limited per source
    assert plane.metrics.calls_refused.labels("globex", "source_limit")._value.get() == 6
    assert refusals(client, "globex", GLOBEX) == [  # the flood's first refusal of its minute only
        f"{flooder} made more than 6 call attempts in a minute", f"{flooder} holds 2 calls, the most one source may hold"]
