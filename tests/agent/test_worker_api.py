import time

import pytest
from fastapi.testclient import TestClient

from agent.worker import Worker, echo_model
from agent.worker_api import create_worker_app
from personas.schema import Persona

SECRET = "worker-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}
PERSONA = Persona(role="You work for Acme and your name is Maya.", voice="NATF2").model_dump(mode="json")


def call(call_id: str) -> dict:
    return {"call_id": call_id, "tenant": "acme", "line": "support", "caller": "+15555550999",
            "callee": "+15555550100", "persona": PERSONA, "max_call_seconds": 60}


@pytest.fixture
def client():
    worker = Worker(echo_model(1), worker_id="w1", address="http://127.0.0.1:9", version="test")
    with TestClient(create_worker_app(worker, SECRET, shutdown_grace=0)) as client:
        yield client


def test_every_worker_route_needs_the_secret(client):
    for method, path in [("get", "/worker"), ("get", "/worker/sessions"), ("delete", "/worker/sessions/x")]:
        assert client.request(method, path).status_code == 401
        assert client.request(method, path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/worker/sessions", json=call("c1")).status_code == 401
    assert client.post("/worker/voices", json={"tenant": "acme", "voice": "maya.wav"}).status_code == 401
    assert client.get("/healthz").status_code == 200


def test_a_voice_to_prepare_names_a_tenant_folder(client):
    """Echo has no voices: nothing to prepare. A tenant that is no folder name is refused before the worker."""
    accepted = client.post("/worker/voices", json={"tenant": "acme", "voice": "maya.wav"}, headers=AUTH)
    assert (accepted.status_code, accepted.json()) == (202, {"preparing": False})
    for tenant in ("../etc", "acme/voices", ""):
        assert client.post("/worker/voices", json={"tenant": tenant, "voice": "maya.wav"}, headers=AUTH).status_code == 422


def test_a_session_is_created_listed_read_and_ended(client):
    created = client.post("/worker/sessions", json=call("c1"), headers=AUTH)

    assert created.status_code == 201
    assert created.json()["call_id"] == "c1" and created.json()["slot"] == 0
    assert [s["call_id"] for s in client.get("/worker/sessions", headers=AUTH).json()] == ["c1"]
    assert client.get("/worker/sessions/c1", headers=AUTH).json()["tenant"] == "acme"
    assert client.get("/worker", headers=AUTH).json()["free"] == 0
    assert client.delete("/worker/sessions/c1", headers=AUTH).status_code == 204
    assert client.get("/worker/sessions/c1", headers=AUTH).status_code == 404
    assert client.delete("/worker/sessions/c1", headers=AUTH).status_code == 404
    assert client.get("/worker", headers=AUTH).json()["free"] == 1


def test_the_worker_reports_its_engine_step_times(client):
    idle = client.get("/worker", headers=AUTH).json()["clock"]
    client.post("/worker/sessions", json=call("c1"), headers=AUTH)
    deadline = time.monotonic() + 5
    while (clock := client.get("/worker", headers=AUTH).json()["clock"])["steps"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    assert idle == {"steps": 0, "overruns": 0, "step_seconds": []}  # no call, no step
    assert clock["steps"] >= 3 and len(clock["step_seconds"]) == clock["steps"]
    assert all(0 < s < 1 for s in clock["step_seconds"])


def test_refusals_carry_a_status_and_retry_after(client):
    client.post("/worker/sessions", json=call("c1"), headers=AUTH)

    duplicate = client.post("/worker/sessions", json=call("c1"), headers=AUTH)
    full = client.post("/worker/sessions", json=call("c2"), headers=AUTH)
    client.delete("/worker/sessions/c1", headers=AUTH)
    drained = client.put("/worker/draining", json={"draining": True}, headers=AUTH)
    draining = client.post("/worker/sessions", json=call("c3"), headers=AUTH)

    assert duplicate.status_code == 409
    assert (full.status_code, full.headers["Retry-After"]) == (503, "1")
    assert "slots are busy" in full.json()["detail"]
    assert drained.json()["draining"] is True
    assert draining.status_code == 503 and "draining" in draining.json()["detail"]
    assert client.get("/readyz").status_code == 503


def test_a_bad_session_request_is_rejected_before_the_engine(client):
    bad = call("c 1") | {"persona": {"role": "", "voice": "NATF2"}}

    response = client.post("/worker/sessions", json=bad, headers=AUTH)

    assert response.status_code == 422
    assert {tuple(e["loc"]) for e in response.json()["detail"]} == {("body", "call_id"), ("body", "persona", "role")}


def test_an_invalid_request_is_answered_without_echoing_it(client):
    huge = call("c1") | {"caller": ["+15555550999"] * 50_000, "persona": {"role": ["x" * 100] * 2000, "voice": 7}}

    response = client.post("/worker/sessions", json=huge, headers=AUTH)

    assert response.status_code == 422
    assert len(response.content) < 8192
    assert all(set(problem) == {"type", "loc", "msg"} for problem in response.json()["detail"])
