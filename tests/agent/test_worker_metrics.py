"""The worker's /metrics: what the autoscaler and the operator read, scraped without a secret."""

import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agent.worker import Worker, echo_model
from agent.worker_api import create_worker_app
from tests.agent.test_worker_api import AUTH, SECRET, call


@pytest.fixture
def client():
    worker = Worker(echo_model(3), worker_id="w7", address="http://127.0.0.1:9", version="test")
    with TestClient(create_worker_app(worker, SECRET, shutdown_grace=0)) as client:
        yield client


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")  # no secret
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def slots(samples, state: str) -> float:
    return samples[("plexline_engine_slots", (("state", state), ("worker", "w7")))]


def test_slots_follow_the_calls_and_free_ones_vanish_while_draining(client):
    idle = scrape(client)
    client.post("/worker/sessions", json=call("c1"), headers=AUTH)
    busy = scrape(client)
    client.put("/worker/draining", json={"draining": True}, headers=AUTH)
    draining = scrape(client)

    assert (slots(idle, "used"), slots(idle, "free")) == (0, 3)
    assert (slots(busy, "used"), slots(busy, "free")) == (1, 2)
    assert (slots(draining, "used"), slots(draining, "free")) == (1, 0)
    assert idle[("plexline_engine_slots_total", (("worker", "w7"),))] == 3
    assert (idle[("plexline_worker_draining", (("worker", "w7"),))],
            draining[("plexline_worker_draining", (("worker", "w7"),))]) == (0, 1)


def test_engine_steps_and_their_recent_times_are_exported(client):
    assert not any(name == "plexline_engine_step_recent_seconds" for name, _ in scrape(client))  # no step yet
    client.post("/worker/sessions", json=call("c1"), headers=AUTH)
    deadline = time.monotonic() + 5
    while scrape(client)[("plexline_engine_steps_total", (("worker", "w7"),))] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    samples = scrape(client)

    assert samples[("plexline_engine_steps_total", (("worker", "w7"),))] >= 3
    assert samples[("plexline_engine_overruns_total", (("worker", "w7"),))] >= 0
    p50 = samples[("plexline_engine_step_recent_seconds", (("quantile", "0.5"), ("worker", "w7")))]
    p99 = samples[("plexline_engine_step_recent_seconds", (("quantile", "0.99"), ("worker", "w7")))]
    assert 0 < p50 <= p99 < 1


def test_readiness_is_lost_while_draining_and_back_after(client):
    assert client.get("/readyz").json() == {"ready": True, "free": 3, "draining": False}
    client.put("/worker/draining", json={"draining": True}, headers=AUTH)
    drained = client.get("/readyz")
    client.put("/worker/draining", json={"draining": False}, headers=AUTH)

    assert (drained.status_code, drained.json()["draining"]) == (503, True)
    assert client.get("/readyz").status_code == 200


def test_the_process_and_its_event_loop_are_exported(client):
    idle = scrape(client)
    client.post("/worker/sessions", json=call("c1"), headers=AUTH)
    busy = scrape(client)

    assert idle[("process_resident_memory_bytes", ())] > 10 * 2**20
    assert idle[("process_open_fds", ())] > 0
    assert busy[("plexline_event_loop_tasks", ())] > idle[("plexline_event_loop_tasks", ())] > 0  # the call's own
