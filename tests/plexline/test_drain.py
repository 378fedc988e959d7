"""`plexline drain` (a worker's preStop hook): no new calls at once, the calls in progress left to end."""

import time

import pytest
from fastapi.testclient import TestClient

from agent.worker import Worker, echo_model
from agent.worker_api import create_worker_app
from personas.schema import Persona
from plexline.cli import main
from plexline.drain import drain

SECRET = "worker-secret"
PERSONA = Persona(role="You work for Acme and your name is Maya.", voice="NATF2").model_dump(mode="json")


def call(call_id: str, seconds: int = 60) -> dict:
    return {"call_id": call_id, "tenant": "acme", "line": "support", "caller": "+15555550999",
            "callee": "+15555550100", "persona": PERSONA, "max_call_seconds": seconds}


@pytest.fixture
def client():
    worker = Worker(echo_model(2), worker_id="w1", address="http://127.0.0.1:9", version="test")
    with TestClient(create_worker_app(worker, SECRET, shutdown_grace=0),
                    headers={"Authorization": f"Bearer {SECRET}"}) as client:
        yield client


def test_an_idle_worker_drains_at_once_and_refuses_new_calls(client):
    said = []

    left = drain(client, wait=30, say=said.append)

    assert (left, said) == (0, ["plexline drain: 0 call(s) in progress"])
    assert client.post("/worker/sessions", json=call("c1")).status_code == 503
    assert client.get("/readyz").status_code == 503


def test_calls_in_progress_are_left_to_end_by_themselves(client):
    client.post("/worker/sessions", json=call("short", seconds=1)).raise_for_status()
    start = time.monotonic()

    left = drain(client, wait=20, poll=0.1, say=lambda _: None)

    assert left == 0 and 0.8 < time.monotonic() - start < 10  # it waited for the call's own end


def test_a_call_longer_than_the_wait_is_not_cut(client):
    client.post("/worker/sessions", json=call("long")).raise_for_status()

    left = drain(client, wait=0.3, poll=0.1, say=lambda _: None)

    assert left == 1
    assert [s["call_id"] for s in client.get("/worker/sessions").json()] == ["long"]


def test_the_command_says_why_it_cannot_drain(monkeypatch, capsys):
    monkeypatch.delenv("PLEXLINE_WORKER_SECRET", raising=False)
    assert main(["drain"]) == 1
    assert "PLEXLINE_WORKER_SECRET is not set" in capsys.readouterr().err

    monkeypatch.setenv("PLEXLINE_WORKER_SECRET", "x")
    assert main(["drain", "--url", "http://127.0.0.1:9", "--wait", "0"]) == 1
    assert "cannot drain the worker at http://127.0.0.1:9" in capsys.readouterr().err
