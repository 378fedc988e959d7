"""A voice uploaded through the admin API is made ready on the workers before any call needs it.

A real `plexline control-plane` and a real `plexline worker` (tiny dummy model, CPU) share Redis and the
tenants' folder, as deployed; a second worker is registered whose address answers nothing (down).
"""

import asyncio
import hashlib
import shutil
import subprocess

import httpx

from agent.contracts.workers import WorkerInfo
from personas import EXAMPLE_TENANTS
from telephony.control.redis_registry import RedisRegistry
from tests.telephony.test_commands_e2e import AUTH, CALL, OPERATOR, command, eventually, wait_until_up

SECRET = "e2e-worker-secret"


def engine_voices(metrics: str) -> float | None:
    """The worker's `plexline_engine_voices` counter, from its /metrics text."""
    for line in metrics.splitlines():
        if line.startswith("plexline_engine_voices_total{"):
            return float(line.split()[-1])
    return None


def register_a_worker_that_is_down(redis_url: str, prefix: str, port: int) -> None:
    async def register():
        registry = RedisRegistry.from_url(redis_url, prefix=prefix)
        try:
            await registry.heartbeat(WorkerInfo("gone", f"http://127.0.0.1:{port}", 2, "dummy", "test"), 60, [])
        finally:
            await registry.close()

    asyncio.run(register())


def test_an_uploaded_voice_is_made_on_the_workers_before_its_first_call(tmp_path, redis_url, redis_prefix, free_port):
    tenants, cache = tmp_path / "tenants", tmp_path / "cache"
    shutil.copytree(EXAMPLE_TENANTS, tenants)
    voice = tmp_path / "maya.wav"
    subprocess.run(["espeak-ng", "-w", str(voice), "Hello, this is Maya, how can I help you today?"], check=True)
    env = {"PLEXLINE_REDIS_URL": redis_url, "PLEXLINE_REDIS_PREFIX": redis_prefix, "PLEXLINE_OPERATOR_TOKEN": OPERATOR,
           "PLEXLINE_WORKER_SECRET": SECRET, "PLEXLINE_SHUTDOWN_GRACE": "0", "PLEXLINE_WORKER_TIMEOUT": "2",
           "PLEXLINE_PERSONAS_DIR": str(tenants), "PLEXLINE_VOICES_DIR": str(tenants)}  # the folder they share
    worker_port, plane_port = free_port(), free_port()
    worker_url, plane = f"http://127.0.0.1:{worker_port}", f"http://127.0.0.1:{plane_port}"
    with command(["worker", "--model", "dummy", "--device", "cpu", "--cache-dir", str(cache), "--port",
                  str(worker_port), "--slots", "2", "--worker-id", "cpu0"], env, tmp_path / "worker.log") as worker, \
            command(["control-plane", "--http-port", str(plane_port), "--sip-port", str(free_port())], env,
                    tmp_path / "plane.log") as control_plane:
        wait_until_up(worker_url, worker, tmp_path / "worker.log")
        wait_until_up(plane, control_plane, tmp_path / "plane.log")
        register_a_worker_that_is_down(redis_url, redis_prefix, free_port())
        assert eventually(lambda: len(httpx.get(plane + "/workers", headers=AUTH).json()) == 2)

        uploaded = httpx.put(plane + "/tenants/acme/voices/maya.wav", content=voice.read_bytes(),
                             headers=AUTH | {"Content-Type": "audio/wav"})
        assert uploaded.status_code == 200  # though a worker is down

        stored = eventually(lambda: next(cache.glob(f"*/voices/wav/{made_name(voice)}"), None), timeout=60)
        assert stored is not None, (tmp_path / "worker.log").read_text()
        assert eventually(lambda: engine_voices(httpx.get(worker_url + "/metrics").text) == 1)
        logged = eventually(lambda: [line for line in (tmp_path / "plane.log").read_text().splitlines()
                                     if "a worker was not asked to prepare a voice" in line])
        assert logged and "worker=gone" in logged[0]
        before = stored.stat().st_mtime_ns

        persona = httpx.get(plane + "/tenants/acme/lines/support/persona", headers=AUTH).json()
        changed = httpx.put(plane + "/tenants/acme/lines/support/persona", json=persona | {"voice": "maya.wav"},
                            headers=AUTH)
        assert changed.status_code == 200
        call = httpx.post(plane + "/calls", json=CALL, headers=AUTH)

        assert call.status_code == 201, call.text
        assert (call.json()["state"], call.json()["worker"]) == ("active", "cpu0")
        assert engine_voices(httpx.get(worker_url + "/metrics").text) == 1  # the call made no voice: it was ready
        assert stored.stat().st_mtime_ns == before and len(list(cache.glob("*/voices/wav/*.pt"))) == 1
        assert httpx.delete(plane + f"/tenants/acme/calls/{call.json()['call_id']}", headers=AUTH).status_code == 204


def made_name(voice) -> str:
    """The worker's file for a WAV voice: its stored voice, named by the hash of the recording's bytes."""
    return f"{hashlib.sha256(voice.read_bytes()).hexdigest()}.pt"
