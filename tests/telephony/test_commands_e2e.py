"""The commands as an operator runs them, as subprocesses on loopback ports.

`plexline serve` alone (embedded: no Redis), then the distributed set: one `plexline worker` and
two `plexline control-plane`s sharing a real Redis, and the worker killed mid-call.
"""

import os
import re
import socket
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from bench.processes import child

ROOT = Path(__file__).parents[2]
OPERATOR = "e2e-operator-token"
AUTH = {"Authorization": f"Bearer {OPERATOR}"}
CALL = {"to": "+15555550100", "from": "+15555550999"}


def command(args: list[str], env: dict[str, str], log: Path) -> AbstractContextManager[subprocess.Popen]:
    """`python -m plexline` with `args` (and `env` over this process's), stopped on exit (15 s to shut down)."""
    return child([sys.executable, "-m", "plexline", *args], log, grace=15, cwd=ROOT,
                 env=os.environ | {"PYTHONPATH": str(ROOT)} | env)


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not come up:\n{log.read_text()}")


def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_serve_on_port_0_announces_the_port_it_bound_and_takes_calls_there(tmp_path, free_port):
    env = {"PLEXLINE_OPERATOR_TOKEN": OPERATOR, "PLEXLINE_SHUTDOWN_GRACE": "0", "PLEXLINE_REDIS_URL": "",
           "PLEXLINE_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "serve.log"
    args = ["serve", "--model", "echo", "--http-port", "0", "--sip-port", str(free_port()), "--slots", "1"]
    with command(args, env, log) as serve:
        said = eventually(lambda: serve.poll() is not None or "plexline: up" in log.read_text(), timeout=60)
        assert said is True and serve.poll() is None, log.read_text()
        url = re.search(r"plexline: up: admin API (http://127\.0\.0\.1:(\d+))/docs", log.read_text())
        assert url is not None and url[2] != "0", log.read_text()
        url, port = url[1], url[2]

        call = httpx.post(url + "/calls", json=CALL, headers=AUTH)
        [worker] = httpx.get(url + "/workers", headers=AUTH).json()

        assert (call.status_code, call.json()["state"]) == (201, "active")
        assert (worker["id"], worker["address"]) == (f"{socket.gethostname()}-{port}", url)


def test_a_worker_on_port_0_registers_the_port_it_bound(tmp_path, redis_url, redis_prefix, free_port):
    env = {"PLEXLINE_REDIS_URL": redis_url, "PLEXLINE_REDIS_PREFIX": redis_prefix,
           "PLEXLINE_OPERATOR_TOKEN": OPERATOR, "PLEXLINE_WORKER_SECRET": "e2e-worker-secret",
           "PLEXLINE_SHUTDOWN_GRACE": "0"}
    plane_url = f"http://127.0.0.1:{free_port()}"
    with command(["worker", "--model", "echo", "--port", "0", "--slots", "1"], env, tmp_path / "worker.log"), \
            command(["control-plane", "--http-port", plane_url.rsplit(":", 1)[1], "--sip-port", str(free_port())],
                    env, tmp_path / "plane.log") as plane:
        wait_until_up(plane_url, plane, tmp_path / "plane.log")
        workers = eventually(lambda: httpx.get(plane_url + "/workers", headers=AUTH).json(), timeout=60)
        assert workers, (tmp_path / "worker.log").read_text()
        [worker] = workers
        port = worker["address"].rsplit(":", 1)[1]

        call = httpx.post(plane_url + "/calls", json=CALL, headers=AUTH)

        assert port != "0" and worker["id"] == f"{socket.gethostname()}-{port}"
        assert httpx.get(worker["address"] + "/healthz").status_code == 200
        assert (call.status_code, call.json()["state"], call.json()["worker"]) == (201, "active", worker["id"])


def test_serve_alone_places_and_ends_a_call_without_redis(tmp_path, free_port):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PLEXLINE_OPERATOR_TOKEN": OPERATOR, "PLEXLINE_SHUTDOWN_GRACE": "0", "PLEXLINE_REDIS_URL": "",
           "PLEXLINE_DATA_DIR": str(tmp_path / "data")}
    args = ["serve", "--model", "echo", "--http-port", str(port), "--sip-port", str(free_port()), "--slots", "1"]
    with command(args, env, tmp_path / "serve.log") as serve:
        wait_until_up(url, serve, tmp_path / "serve.log")

        call = httpx.post(url + "/calls", json=CALL, headers=AUTH)
        full = httpx.post(url + "/calls", json=CALL, headers=AUTH)
        call_id = call.json()["call_id"]
        on_worker = httpx.get(url + f"/worker/sessions/{call_id}", headers=AUTH)
        ended = httpx.delete(url + f"/tenants/acme/calls/{call_id}", headers=AUTH)
        record = httpx.get(url + f"/tenants/acme/calls/{call_id}", headers=AUTH).json()

        assert (call.status_code, call.json()["state"], call.json()["line"]) == (201, "active", "support")
        assert full.status_code == 503 and "Retry-After" in full.headers
        assert on_worker.status_code == 401  # the worker's API wants the worker secret, not the operator's
        assert ended.status_code == 204
        assert (record["state"], record["reason"]) == ("ended", "ended by an admin")
        assert httpx.get(url + "/readyz").json() == {"ready": True, "workers": 1, "free_slots": 1}


def test_control_planes_and_a_worker_share_only_redis_and_a_lost_worker_fails_its_calls(
        tmp_path, redis_url, redis_prefix, free_port):
    env = {"PLEXLINE_REDIS_URL": redis_url, "PLEXLINE_REDIS_PREFIX": redis_prefix,
           "PLEXLINE_OPERATOR_TOKEN": OPERATOR, "PLEXLINE_WORKER_SECRET": "e2e-worker-secret",
           "PLEXLINE_HEARTBEAT_TTL": "1", "PLEXLINE_REAP_INTERVAL": "0.2", "PLEXLINE_SHUTDOWN_GRACE": "0"}
    ports = [free_port() for _ in range(3)]
    sip_ports = [str(free_port()) for _ in range(2)]  # two control planes on one host: a SIP port each
    worker_url, one, two = (f"http://127.0.0.1:{p}" for p in ports)
    with command(["worker", "--model", "echo", "--port", str(ports[0]), "--slots", "2", "--worker-id", "gpu0"],
                 env, tmp_path / "worker.log") as worker, \
            command(["control-plane", "--http-port", str(ports[1]), "--sip-port", sip_ports[0]], env,
                    tmp_path / "one.log") as plane_one, \
            command(["control-plane", "--http-port", str(ports[2]), "--sip-port", sip_ports[1]], env,
                    tmp_path / "two.log") as plane_two:
        wait_until_up(worker_url, worker, tmp_path / "worker.log")
        wait_until_up(one, plane_one, tmp_path / "one.log")
        wait_until_up(two, plane_two, tmp_path / "two.log")

        first = httpx.post(one + "/calls", json=CALL, headers=AUTH).json()
        second = httpx.post(two + "/calls", json=CALL, headers=AUTH).json()
        third = httpx.post(one + "/calls", json=CALL, headers=AUTH)
        sessions = httpx.get(worker_url + "/worker/sessions", headers={"Authorization": "Bearer e2e-worker-secret"})
        assert (first["worker"], second["worker"], third.status_code) == ("gpu0", "gpu0", 503)
        assert sorted(s["call_id"] for s in sessions.json()) == sorted([first["call_id"], second["call_id"]])

        # One control plane ends a call the other placed.
        assert httpx.delete(two + f"/tenants/acme/calls/{first['call_id']}", headers=AUTH).status_code == 204
        assert [c["call_id"] for c in httpx.get(one + "/calls", headers=AUTH).json()] == [second["call_id"]]

        worker.kill()  # no goodbye: its heartbeat just stops
        lost_at = time.monotonic()
        record = eventually(lambda: (r := httpx.get(one + f"/tenants/acme/calls/{second['call_id']}",
                                                   headers=AUTH).json())["state"] == "failed" and r)
        assert record and record["reason"] == "worker gpu0 lost: its heartbeat stopped"
        assert time.monotonic() - lost_at < 5
        assert httpx.get(two + "/workers", headers=AUTH).json() == []
        assert httpx.post(two + "/calls", json=CALL, headers=AUTH).status_code == 503


def test_a_first_run_says_where_to_call_it_and_lists_no_calls_of_an_earlier_run(tmp_path, free_port):
    env = {"PLEXLINE_SHUTDOWN_GRACE": "0", "PLEXLINE_REDIS_URL": "", "PLEXLINE_OPERATOR_TOKEN": "",
           "PLEXLINE_DATA_DIR": "", "TMPDIR": str(tmp_path)}  # as a newcomer runs it: nothing set

    def run(name: str) -> tuple[str, list[dict]]:
        port, sip = free_port(), free_port()
        url, log = f"http://127.0.0.1:{port}", tmp_path / f"{name}.log"
        args = ["serve", "--model", "echo", "--http-port", str(port), "--sip-port", str(sip), "--slots", "1"]
        with command(args, env, log) as serve:
            wait_until_up(url, serve, log)
            said = eventually(lambda: "plexline: up" in log.read_text() and log.read_text())
            token = said.split("operator token for this run: ")[1].split()[0]
            auth = {"Authorization": f"Bearer {token}"}
            assert f"plexline: up: admin API {url}/docs, dialer {url}/dialer" in said
            line = f"plexline:   acme/support: sip:+15555550100@127.0.0.1:{sip}, sip:acme-support@127.0.0.1:{sip}"
            assert line in said
            assert "--model echo: each caller hears itself" in said
            home = httpx.get(url + "/")
            assert (home.status_code, home.headers["location"]) == (307, "/dialer")
            before = httpx.get(url + "/tenants/acme/call-records", headers=auth).json()
            call_id = httpx.post(url + "/calls", json=CALL, headers=auth).json()["call_id"]
            assert httpx.delete(url + f"/tenants/acme/calls/{call_id}", headers=auth).status_code == 204
            assert eventually(lambda: httpx.get(url + "/tenants/acme/call-records", headers=auth).json())
        return said.split("data folder for this run: ")[1].split()[0], before

    first_folder, first_calls = run("first")
    second_folder, second_calls = run("second")
    assert first_calls == [] and second_calls == []  # the second run does not list the first one's call
    assert first_folder != second_folder and Path(first_folder).parent == tmp_path
