"""The control plane's HTTP API in-process (embedded mode: in-memory registry, echo worker)."""

import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from agent.contracts.workers import WorkerInfo
from agent.worker import Worker, echo_model
from personas.store import TenantStore
from personas.tokens import hash_token
from plexline.embedded import LocalWorkerClient, create_embedded_app
from telephony.control.app import create_app
from telephony.control.control_plane import ControlPlane
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.registry import NewCall
from telephony.control.settings import Settings
from telephony.control.worker_client import HttpWorkerClient

EXAMPLE_ACME = Path(__file__).parents[3] / "personas" / "examples" / "tenants" / "acme"
OPERATOR, ACME, GLOBEX = "operator-token", "acme-admin-token", "globex-admin-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def persona(name: str) -> dict:
    return {"role": f"You work for {name} and your name is Sam.", "voice": "NATM1"}


@pytest.fixture
def personas_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tenants"
    shutil.copytree(EXAMPLE_ACME, root / "acme")
    tenant = yaml.safe_load((root / "acme" / "tenant.yaml").read_text())
    tenant |= {"admin_token_hash": hash_token(ACME, n=1024), "limits": {"max_concurrent_calls": 2}}
    (root / "acme" / "tenant.yaml").write_text(yaml.safe_dump(tenant))
    (root / "globex").mkdir()
    (root / "globex" / "tenant.yaml").write_text(yaml.safe_dump({
        "name": "Globex", "addresses": ["+15555550200", "globex-desk"],
        "admin_token_hash": hash_token(GLOBEX, n=1024)}))
    (root / "globex" / "desk.yaml").write_text(yaml.safe_dump({
        "answers": ["+15555550200"], "persona": persona("Globex")}))
    return root


def make_control_plane(personas_dir: Path, slots: int = 3, remote: httpx.MockTransport | None = None):
    settings = Settings(personas_dir=personas_dir, operator_token=OPERATOR, worker_secret="worker-secret",
                        reap_interval=0.05, reload_interval=0.05, retry_after_seconds=7, shutdown_grace=0)
    registry = MemoryRegistry()
    worker = Worker(echo_model(slots), worker_id="local", address="http://127.0.0.1:9", version="test",
                    registry=registry, heartbeat_ttl=5)
    workers = LocalWorkerClient(worker, HttpWorkerClient("worker-secret", transport=remote))
    return ControlPlane(settings, TenantStore(personas_dir), registry, workers, local_worker=worker)


@pytest.fixture
def client(personas_dir: Path):
    with TestClient(create_app(make_control_plane(personas_dir))) as client:
        yield client


def place(client: TestClient, to: str, token: str = OPERATOR) -> httpx.Response:
    return client.post("/calls", json={"to": to, "from": "+15555550999"}, headers=bearer(token))


# -- tenant isolation ---------------------------------------------------------------------------


def test_a_tenant_token_sees_its_own_tenant(client):
    tenant = client.get("/tenants/acme", headers=bearer(ACME)).json()
    lines = client.get("/tenants/acme/lines", headers=bearer(ACME)).json()

    assert (tenant["name"], tenant["lines"], tenant["problems"]) == ("Acme Home Goods", ["support"], [])
    assert "admin_token_hash" not in tenant
    assert [line["id"] for line in lines] == ["support"]


ANOTHER_TENANTS_THINGS = [
    ("get", "/tenants/{t}", None),
    ("get", "/tenants/{t}/lines", None),
    ("get", "/tenants/{t}/lines/desk", None),
    ("put", "/tenants/{t}/lines/desk", {"answers": ["+15555550200"], "persona": persona("Mine now")}),
    ("delete", "/tenants/{t}/lines/desk", None),
    ("post", "/tenants/{t}/lines", {"id": "new", "answers": ["+15555550200"], "persona": persona("X")}),
    ("post", "/tenants/{t}/lines/desk/validate", {"answers": ["+15555550200"], "persona": persona("X")}),
    ("get", "/tenants/{t}/lines/desk/persona", None),
    ("put", "/tenants/{t}/lines/desk/persona", persona("Mine now")),
    ("get", "/tenants/{t}/calls", None),
]


@pytest.mark.parametrize("method, path, body", ANOTHER_TENANTS_THINGS)
def test_another_tenant_looks_exactly_like_no_tenant(client, personas_dir, method, path, body):
    before = (personas_dir / "globex" / "desk.yaml").read_bytes()

    other = client.request(method, path.format(t="globex"), json=body, headers=bearer(ACME))
    missing = client.request(method, path.format(t="nosuch"), json=body, headers=bearer(ACME))
    wrong = client.request(method, path.format(t="globex"), json=body, headers=bearer("not-a-token"))

    assert other.status_code == missing.status_code == wrong.status_code == 401
    assert other.json()["detail"].replace("globex", "?") == missing.json()["detail"].replace("nosuch", "?")
    assert (personas_dir / "globex" / "desk.yaml").read_bytes() == before
    assert client.get("/tenants/globex/lines/desk", headers=bearer(GLOBEX)).status_code == 200


def test_a_tenant_token_cannot_reach_another_tenants_calls(client):
    call = place(client, "+15555550200", GLOBEX).json()

    own_path = f"/tenants/acme/calls/{call['call_id']}"
    assert client.get(own_path, headers=bearer(ACME)).status_code == 404
    assert client.delete(own_path, headers=bearer(ACME)).status_code == 404
    assert client.get("/tenants/acme/calls", headers=bearer(ACME)).json() == []
    other, missing = place(client, "+15555550200", ACME), place(client, "+15555550299", ACME)
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace("0200", "?") == missing.json()["detail"].replace("0299", "?")
    assert client.get(f"/tenants/globex/calls/{call['call_id']}", headers=bearer(GLOBEX)).json()["state"] == "active"


@pytest.mark.parametrize("method, path", [("get", "/tenants"), ("get", "/problems"), ("get", "/calls"),
                                          ("get", "/workers"), ("patch", "/workers/local"), ("get", "/metrics")])
def test_operator_routes_refuse_tenant_tokens(client, method, path):
    response = client.request(method, path, json={"draining": True}, headers=bearer(ACME))

    assert response.status_code == 403


def test_no_token_or_a_wrong_one_is_401_saying_so(client):
    none, wrong = client.get("/tenants/acme"), client.get("/tenants/acme", headers=bearer("guess"))

    assert none.status_code == wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.json()["detail"] == "this token does not administer a tenant 'acme'"
    assert client.get("/tenants/acme", headers=bearer(GLOBEX)).status_code == 401


def test_the_operator_sees_every_tenant(client):
    tenants = client.get("/tenants", headers=bearer(OPERATOR)).json()

    assert [t["id"] for t in tenants] == ["acme", "globex"]
    assert client.get("/tenants/globex/lines/desk", headers=bearer(OPERATOR)).status_code == 200
    assert client.get("/tenants/nosuch", headers=bearer(OPERATOR)).status_code == 404


# -- lines and personas -------------------------------------------------------------------------


def test_lines_are_created_read_replaced_and_deleted(client, personas_dir):
    new = {"id": "evening", "answers": ["+15555550101"], "persona": persona("Acme Evenings"), "recording": True}
    created = client.post("/tenants/acme/lines", json=new, headers=bearer(ACME))
    again = client.post("/tenants/acme/lines", json=new, headers=bearer(ACME))
    document = {k: v for k, v in new.items() if k != "id"} | {"greeting": "caller_first"}
    replaced = client.put("/tenants/acme/lines/evening", json=document, headers=bearer(ACME))

    assert created.status_code == 201
    assert created.json()["recording"] is True and created.json()["tenant"] == "acme"
    assert again.status_code == 409
    assert replaced.json()["greeting"] == "caller_first"
    on_disk = yaml.safe_load((personas_dir / "acme" / "evening.yaml").read_text())
    assert on_disk["greeting"] == "caller_first" and on_disk["persona"]["role"].startswith("You work for Acme Evenings")
    assert place(client, "+15555550101").json()["line"] == "evening"  # live at once
    assert client.delete("/tenants/acme/lines/evening", headers=bearer(ACME)).status_code == 204
    assert client.get("/tenants/acme/lines/evening", headers=bearer(ACME)).status_code == 404
    assert not (personas_dir / "acme" / "evening.yaml").exists()


def test_a_persona_is_read_and_replaced_alone(client):
    path = "/tenants/acme/lines/support/persona"

    replaced = client.put(path, json=persona("Acme Nights"), headers=bearer(ACME))
    line = client.get("/tenants/acme/lines/support", headers=bearer(ACME)).json()

    assert replaced.json()["role"] == "You work for Acme Nights and your name is Sam."
    assert client.get(path, headers=bearer(ACME)).json() == replaced.json()
    assert line["answers"] == ["+15555550100", "acme-support"] and line["max_call_seconds"] == 600


def test_invalid_lines_name_the_field_and_the_reason(client, personas_dir):
    schema_error = client.put("/tenants/acme/lines/support", headers=bearer(ACME),
                              json={"answers": ["+15555550100"], "persona": {"role": "Hi", "voice": "NOPE"}})
    not_ours = client.put("/tenants/acme/lines/support", headers=bearer(ACME),
                          json={"answers": ["+15555550200"], "persona": persona("Acme")})
    bad_id = client.post("/tenants/acme/lines", headers=bearer(ACME),
                         json={"id": "Bad Id", "answers": ["+15555550101"], "persona": persona("Acme")})

    assert schema_error.status_code == 422
    assert [e["loc"] for e in schema_error.json()["detail"]] == [["body", "persona", "voice"]]
    assert not_ours.status_code == 422
    assert not_ours.json()["detail"] == [{"type": "value_error", "loc": ["body", "answers", 0],
                                          "msg": "+15555550200 is not one of this tenant's addresses"}]
    assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["loc"] == ["body", "id"]
    assert "Acme Home Goods" in (personas_dir / "acme" / "support.yaml").read_text()


def test_an_invalid_request_is_answered_without_echoing_it(client):
    huge = {"answers": ["+15555550100"] * 50_000, "persona": {"role": ["x" * 100] * 2000, "voice": 7}}
    answer = client.put("/tenants/acme/lines/support", headers=bearer(ACME), json=huge)

    assert answer.status_code == 422
    assert len(answer.content) < 8192
    assert all(set(problem) == {"type", "loc", "msg"} for problem in answer.json()["detail"])


@pytest.mark.anyio
async def test_the_twilio_form_is_refused_once_it_passes_its_limit_without_reading_the_rest(personas_dir):
    """Straight through ASGI (the test client reads a whole body before the app sees it)."""
    app, pulled, sent = create_app(make_control_plane(personas_dir)), [], []

    async def receive() -> dict:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": len(pulled) < 10_000}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/twilio/voice", "raw_path": b"/twilio/voice",
             "query_string": b"", "headers": [(b"content-type", b"application/x-www-form-urlencoded")],
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5), "root_path": ""}
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert len(pulled) < 100


def test_validate_checks_without_saving(client, personas_dir):
    good = {"answers": ["+15555550101"], "persona": persona("Draft")}
    taken = {"answers": ["+15555550100"], "persona": persona("Draft")}

    ok = client.post("/tenants/acme/lines/draft/validate", json=good, headers=bearer(ACME))
    conflict = client.post("/tenants/acme/lines/draft/validate", json=taken, headers=bearer(ACME))

    assert ok.status_code == 200 and ok.json()["valid"] is True and ok.json()["line"]["id"] == "draft"
    assert conflict.status_code == 422
    assert conflict.json()["detail"][0]["msg"] == "+15555550100 is already answered by line 'support'"
    assert not (personas_dir / "acme" / "draft.yaml").exists()


def test_an_edit_on_disk_is_served_within_the_reload_interval(client, personas_dir):
    line = yaml.safe_load((personas_dir / "acme" / "support.yaml").read_text())
    line["persona"]["role"] = "You work for Acme Reloaded."
    (personas_dir / "acme" / "support.yaml").write_text(yaml.safe_dump(line))

    for _ in range(100):
        role = client.get("/tenants/acme/lines/support/persona", headers=bearer(ACME)).json()["role"]
        if role == "You work for Acme Reloaded.":
            break
        time.sleep(0.02)
    assert role == "You work for Acme Reloaded."


# -- calls --------------------------------------------------------------------------------------


def test_a_call_is_placed_listed_and_ended(client):
    call = place(client, "acme-support", ACME)
    call_id = call.json()["call_id"]
    listed = client.get("/tenants/acme/calls", headers=bearer(ACME)).json()
    ended = client.delete(f"/tenants/acme/calls/{call_id}", headers=bearer(ACME))
    record = client.get(f"/tenants/acme/calls/{call_id}", headers=bearer(ACME)).json()

    assert call.status_code == 201
    assert call.json() | {"call_id": "", "created_at": 0} == {
        "call_id": "", "tenant": "acme", "line": "support", "worker": "local", "state": "active",
        "caller": "+15555550999", "callee": "acme-support", "created_at": 0, "ended_at": None, "reason": ""}
    assert [c["call_id"] for c in listed] == [call_id]
    assert ended.status_code == 204
    assert (record["state"], record["reason"]) == ("ended", "ended by an admin")
    assert client.delete(f"/tenants/acme/calls/{call_id}", headers=bearer(ACME)).status_code == 409
    assert client.get("/workers", headers=bearer(OPERATOR)).json()[0]["used"] == 0


def test_refusals_are_503_with_retry_after(personas_dir):
    with TestClient(create_app(make_control_plane(personas_dir, slots=3))) as client:
        calls = [place(client, "+15555550100") for _ in range(3)]  # acme's limit is 2
        globex = [place(client, "+15555550200") for _ in range(2)]  # one slot left

        assert [c.status_code for c in calls] == [201, 201, 503]
        assert calls[2].json()["detail"] == "the tenant's limit of concurrent calls is reached"
        assert [c.status_code for c in globex] == [201, 503]
        assert globex[1].headers["Retry-After"] == "7"
        assert globex[1].json()["detail"] == "no free slot on any worker: try again later"
        metrics = client.get("/metrics", headers=bearer(OPERATOR)).text
        assert 'plexline_calls_refused_total{reason="tenant_limit",tenant="acme"} 1.0' in metrics
        assert 'plexline_calls_refused_total{reason="no_capacity",tenant="globex"} 1.0' in metrics
        assert 'plexline_calls_admitted_total{tenant="acme"} 2.0' in metrics
        assert "plexline_routing_seconds_count 3.0" in metrics


def test_a_refusing_worker_is_skipped_for_another(personas_dir):
    asked = []

    def refuse(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(503, json={"detail": "all 8 slots are busy"})

    plane = make_control_plane(personas_dir, remote=httpx.MockTransport(refuse))
    with TestClient(create_app(plane)) as client:
        # A bigger, emptier remote worker is the first choice; it refuses, the local one takes the call.
        client.portal.call(plane.registry.heartbeat, WorkerInfo("remote", "http://127.0.0.1:9", 8, "echo", "x"), 60, [])
        call = place(client, "+15555550100")

        assert asked == ["/worker/sessions"]
        assert call.status_code == 201 and call.json()["worker"] == "local"
        assert {w["id"]: w["used"] for w in client.get("/workers", headers=bearer(OPERATOR)).json()} == {
            "local": 1, "remote": 0}


def test_a_drained_worker_gets_no_new_calls(client):
    drained = client.patch("/workers/local", json={"draining": True}, headers=bearer(OPERATOR))
    refused = place(client, "+15555550100")
    client.patch("/workers/local", json={"draining": False}, headers=bearer(OPERATOR))

    assert drained.json()["draining"] is True
    assert refused.status_code == 503
    assert place(client, "+15555550100").status_code == 201
    assert client.patch("/workers/nosuch", json={"draining": True}, headers=bearer(OPERATOR)).status_code == 404


def test_a_lost_workers_calls_are_failed_with_the_reason(personas_dir):
    plane = make_control_plane(personas_dir)
    with TestClient(create_app(plane)) as client:
        registry = plane.registry
        # What the app's own event loop runs (the registry is not shared across threads).
        client.portal.call(registry.heartbeat, WorkerInfo("doomed", "http://127.0.0.1:9", 1, "echo", "x"), 0.1, [])
        client.portal.call(registry.reserve, NewCall("lost-call", "acme", "support", "a", "b", 10), ["local"])

        deadline = time.monotonic() + 20  # the first reap comes a heartbeat's life after the start
        while time.monotonic() < deadline:
            record = client.get("/tenants/acme/calls/lost-call", headers=bearer(ACME)).json()
            if record["state"] == "failed":
                break
            time.sleep(0.02)

        assert (record["state"], record["reason"]) == ("failed", "worker doomed lost: its heartbeat stopped")
        assert [w["id"] for w in client.get("/workers", headers=bearer(OPERATOR)).json()] == ["local"]
        assert 'plexline_calls_failed_total{tenant="acme"} 1.0' in client.get("/metrics", headers=bearer(OPERATOR)).text


def test_health_readiness_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "workers": 1, "free_slots": 3}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/calls", "/tenants/{tenant}/lines/{line}", "/tenants/{tenant}/lines/{line}/persona",
            "/tenants/{tenant}/lines/{line}/validate", "/tenants/{tenant}/calls/{call_id}",
            "/workers/{worker_id}"} <= set(paths)
    assert not any(path.startswith("/worker/") for path in paths)  # a worker's own API is not the control plane's


def test_the_embedded_app_serves_its_workers_api_too(personas_dir):
    plane = make_control_plane(personas_dir)
    with TestClient(create_embedded_app(plane, plane.local_worker)) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/calls", "/worker/sessions"} <= set(paths)
        sessions = client.get("/worker/sessions", headers=bearer("worker-secret"))
        metrics = client.get("/metrics", headers=bearer(OPERATOR)).text
    assert sessions.status_code == 200 and sessions.json() == []
    assert 'plexline_engine_slots{state="free",worker="local"} 3.0' in metrics  # the worker's metrics too
    assert "plexline_calls_admitted_total" in metrics and "process_open_fds" in metrics


def test_the_operator_reads_the_problems_of_every_tenant(client, personas_dir):
    (personas_dir / "globex" / "broken.yaml").write_text("answers: [oops\n")
    client.app.state.control_plane.store.reload()

    problems = client.get("/problems", headers=bearer(OPERATOR)).json()
    globex = client.get("/tenants/globex", headers=bearer(GLOBEX)).json()
    acme = client.get("/tenants/acme", headers=bearer(ACME)).json()

    assert problems == globex["problems"] == ["globex/broken.yaml: line 2, column 1: invalid YAML: "
                                              "expected ',' or ']', but got '<stream end>'"]
    assert acme["problems"] == []


def test_with_redis_unreachable_calls_are_refused_and_the_plane_is_not_ready(personas_dir, free_port):
    from telephony.control.redis_registry import RedisRegistry

    settings = Settings(personas_dir=personas_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        operator_token=OPERATOR, worker_secret="worker-secret", retry_after_seconds=7)
    plane = ControlPlane(settings, TenantStore(personas_dir), RedisRegistry.from_url(settings.redis_url),
                         HttpWorkerClient("worker-secret"))
    with TestClient(create_app(plane)) as client:
        refused = place(client, "+15555550100")
        ready = client.get("/readyz")

    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "7")
    assert refused.json()["detail"] == "the call registry is unreachable"  # not Redis's address
    assert ready.status_code == 503 and ready.json()["ready"] is False


# -- WHIP offers checked before a call is placed ------------------------------------------------

GOOD_OFFER_LINES = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
                    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=ice-ufrag:abcd",
                    "a=ice-pwd:0123456789abcdef012345", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
                    "a=setup:actpass", "a=rtpmap:111 opus/48000/2", "a=sendrecv",
                    "a=candidate:1 1 udp 2130706431 127.0.0.2 50000 typ host"]


def without(prefix: str) -> str:
    return "\r\n".join(line for line in GOOD_OFFER_LINES if not line.startswith(prefix)) + "\r\n"


@pytest.mark.parametrize("offer, reason", [
    ("hello", "not SDP"),
    ("v=0\r\n\x00\x01garbage\r\n", "not of the form"),
    (without("m=audio").replace("a=rtpmap:111 opus/48000/2\r\n", ""), "no audio"),
    (without("a=candidate"), "no ICE candidate"),
    (without("a=ice-pwd"), "ICE credentials"),
    (without("a=fingerprint"), "DTLS fingerprint"),
    ("v=0\r\n" + "a=x\r\n" * 5000 + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "lines"),
])
def test_a_garbage_offer_is_refused_before_any_call_is_placed(client, offer, reason):
    admitted = client.app.state.control_plane.metrics.calls_admitted
    answer = client.post("/tenants/acme/lines/support/whip", content=offer,
                         headers=bearer(ACME) | {"Content-Type": "application/sdp"})

    assert answer.status_code == 400 and reason in answer.json()["detail"]
    assert admitted.labels(tenant="acme")._value.get() == 0


def test_the_openapi_says_whip_delete_answers_no_body_and_lists_the_common_answers(client):
    paths = client.get("/openapi.json").json()["paths"]
    delete = paths["/tenants/{tenant}/lines/{line}/whip/{call_id}"]["delete"]
    assert "content" not in delete["responses"]["200"]
    assert {"401", "404", "429"} <= set(delete["responses"])
    assert {"401", "413", "422", "429"} <= set(paths["/tenants/{tenant}/lines/{line}"]["put"]["responses"])
