"""A cluster on one machine: one Redis, two control planes and four CPU workers on the tiny dummy model,
each its own process (started with scripts/scale_out.py's helpers), and 40 calls over SIP (sipp, UDP
to one control plane and TCP to the other) and WebRTC (aiortc through WHIP, to both).

24 calls fill the workers evenly; then one worker is drained and another killed (SIGKILL). The killed
worker's calls fail (SIP callers get a BYE) and the others' calls go on with media flowing; 16 new
calls land on the two workers left serving and fill them exactly, and the next call is refused
although the drained worker has free slots. At every quiet point each worker's sessions match the
registry's calls, one call per slot. At the end every call has its record, failed for the lost worker.

The tiny model on two loaded cores may run slower than real time: the test asks for routing, media
that keeps flowing and bookkeeping, not for real-time audio.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import shutil
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import yaml
from sip_service import speech, write_rtp_pcap

from bench import sipp as sipp_callers
from bench.webrtc_caller import RATE, WhipCall

ROOT = Path(__file__).parents[2]
TENANT, LINE, NUMBER = "cluster", "support", "+15550000100"
SLOTS = 14  # per worker: 4 x 6 calls first; then the two left serving take 8 more each, and are full
WORKERS = ("w0", "w1", "w2", "w3")
DRAINED, KILLED = "w0", "w1"
SIP_TIMEOUT_S = 170  # sipp gives up on a call (and fails) after this long without the service's BYE


def _scale_out():
    spec = importlib.util.spec_from_file_location("scale_out", ROOT / "scripts" / "scale_out.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


scale_out = _scale_out()


@dataclass
class Plane:
    url: str
    sip_port: int


@dataclass
class Cluster:
    planes: list[Plane]
    workers: dict[str, scale_out.Started]
    operator: dict[str, str]
    worker_auth: dict[str, str]


def write_tenant(root: Path) -> Path:
    (root / TENANT).mkdir(parents=True)
    tenant = {"name": "Cluster", "addresses": [NUMBER], "sip": {"allow": ["127.0.0.0/8"]},
              "limits": {"max_concurrent_calls": 1000, "max_call_seconds": 3600}}
    line = {"answers": [NUMBER], "persona": {"role": "You answer the phone for a test company.", "voice": "NATF2"},
            "max_call_seconds": 3600}
    (root / TENANT / "tenant.yaml").write_text(yaml.safe_dump(tenant))
    (root / TENANT / f"{LINE}.yaml").write_text(yaml.safe_dump(line))
    return root


def start_cluster(stack: ExitStack, folder: Path) -> Cluster:
    redis_url = scale_out.start_redis(stack, shutil.which("redis-server") or "redis-server", folder, folder / "redis.log")
    operator, worker_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                        "PLEXLINE_REDIS_URL": redis_url, "PLEXLINE_OPERATOR_TOKEN": operator,
                        "PLEXLINE_WORKER_SECRET": worker_secret,
                        "PLEXLINE_PERSONAS_DIR": str(write_tenant(folder / "tenants")),
                        "PLEXLINE_VOICES_DIR": str(folder / "tenants"), "PLEXLINE_DATA_DIR": str(folder / "data"),
                        "PLEXLINE_RECORDINGS_DIR": str(folder / "recordings"), "PLEXLINE_SHUTDOWN_GRACE": "0",
                        "PLEXLINE_HEARTBEAT_TTL": "2", "PLEXLINE_REAP_INTERVAL": "0.5",
                        "PLEXLINE_WORKER_TIMEOUT": "30", "PLEXLINE_RTP_TIMEOUT": "120"}
    started, planes = [], []
    for i, name in enumerate(WORKERS):
        port = scale_out.free_port()
        rtp = {"PLEXLINE_RTP_PORT_MIN": str(30000 + 1000 * i), "PLEXLINE_RTP_PORT_MAX": str(30999 + 1000 * i)}
        child = stack.enter_context(scale_out.process(scale_out.plexline(sys.executable, [
            "worker", "--http-port", str(port), "--worker-id", name, "--model", "dummy:tiny", "--device", "cpu",
            "--slots", str(SLOTS)]), folder / f"{name}.log", env | rtp))
        started.append(scale_out.Started(name, f"http://127.0.0.1:{port}", child, folder / f"{name}.log",
                                         time.monotonic()))
    for i in range(2):
        port, sip_port = scale_out.free_port(), scale_out.free_port()
        child = stack.enter_context(scale_out.process(scale_out.plexline(sys.executable, [
            "control-plane", "--http-port", str(port), "--sip-port", str(sip_port)]), folder / f"plane{i}.log", env))
        started.append(scale_out.Started(f"plane{i}", f"http://127.0.0.1:{port}", child, folder / f"plane{i}.log",
                                         time.monotonic()))
        planes.append(Plane(f"http://127.0.0.1:{port}", sip_port))
    scale_out.wait_until_up(started, timeout=120)
    return Cluster(planes, {s.name: s for s in started if s.name in WORKERS},
                   {"Authorization": f"Bearer {operator}"}, {"Authorization": f"Bearer {worker_secret}"})


# -- callers ------------------------------------------------------------------------------------


async def start_sipp(plane: Plane, transport: str, calls: int, prefix: str, pcap: Path, folder: Path):
    """`calls` SIP calls from CALLER `prefix`1..N; each sends speech and waits for the service's BYE."""
    return await sipp_callers.start_sipp(
        "wait_bye.xml", plane.sip_port, NUMBER, folder, calls=calls, timeout=SIP_TIMEOUT_S + 10, transport=transport,
        substitutions={"PCAP_FILE": pcap, "CALLER": prefix, "WAIT_MS": SIP_TIMEOUT_S * 1000})


def caller_voice(seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * (180 + 30 * seed) * t)).astype(np.float32)


async def call_webrtc(plane: Plane, operator: dict[str, str], seed: int) -> tuple[WhipCall, int]:
    call = WhipCall(plane.url, operator["Authorization"].split()[1], TENANT, LINE, caller_voice(4, seed))
    return call, (await call.start()).status_code


# -- reading the cluster ------------------------------------------------------------------------


async def in_progress(http: httpx.AsyncClient, plane: Plane) -> dict[str, dict]:
    response = await http.get(plane.url + "/calls")
    response.raise_for_status()
    return {c["call_id"]: c for c in response.json()}


async def sessions(http: httpx.AsyncClient, cluster: Cluster, worker: str) -> dict[str, dict]:
    response = await http.get(cluster.workers[worker].url + "/worker/sessions", headers=cluster.worker_auth)
    response.raise_for_status()
    return {s["call_id"]: s for s in response.json()}


async def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)
    return result


async def check_one_call_per_slot(http: httpx.AsyncClient, cluster: Cluster, plane: Plane, live: list[str]) -> None:
    """Each live worker holds exactly the calls the registry gives it, each in a slot of its own."""
    calls = await in_progress(http, plane)
    workers = {w["id"]: w for w in (await http.get(plane.url + "/workers")).json()}
    for name in live:
        held = await sessions(http, cluster, name)
        booked = {c for c, record in calls.items() if record["worker"] == name}
        slots = [s["slot"] for s in held.values()]
        assert set(held) == booked, (name, sorted(held), sorted(booked))
        assert len(slots) == len(set(slots)) <= SLOTS and workers[name]["used"] == len(held), (name, slots)


# -- the test -----------------------------------------------------------------------------------


def test_forty_calls_on_two_control_planes_and_four_workers_survive_a_drain_and_a_killed_worker(tmp_path):
    pcap = write_rtp_pcap(tmp_path / "speech.pcap", speech(150.0))
    with ExitStack() as stack:
        cluster = start_cluster(stack, tmp_path)
        asyncio.run(scenario(cluster, pcap, tmp_path))


async def scenario(cluster: Cluster, pcap: Path, folder: Path) -> None:
    one, two = cluster.planes
    async with httpx.AsyncClient(headers=cluster.operator, timeout=60) as http:
        # 24 calls: 12 over SIP (UDP to one control plane, TCP to the other), 12 over WebRTC (to both).
        sipp = [await start_sipp(one, "u1", 6, "udp", pcap, folder / "sipp-1"),
                await start_sipp(two, "t1", 6, "tcp", pcap, folder / "sipp-2")]
        placed = await asyncio.gather(*(call_webrtc(cluster.planes[i % 2], cluster.operator, i) for i in range(12)))
        assert [status for _, status in placed] == [201] * 12
        webrtc = {call.session_url.rsplit("/", 1)[1]: call for call, _ in placed}
        first = await wait_until(lambda: _calls_if(http, one, 24), 60, "24 calls in progress")
        await asyncio.gather(*(asyncio.wait_for(c.connected.wait(), 30) for c in webrtc.values()))
        assert Counter(c["worker"] for c in first.values()) == {w: 6 for w in WORKERS}  # least loaded first
        assert sum(c["caller"].startswith(("udp", "tcp")) for c in first.values()) == 12
        await check_one_call_per_slot(http, cluster, two, list(WORKERS))

        # One worker drained through a control plane, another killed.
        (await http.patch(two.url + f"/workers/{DRAINED}", json={"draining": True})).raise_for_status()
        cluster.workers[KILLED].child.kill()
        killed = {c for c, record in first.items() if record["worker"] == KILLED}
        kept = {c: record for c, record in first.items() if record["worker"] != KILLED}
        await wait_until(lambda: _gone(http, one, KILLED, killed), 30, f"{KILLED} reaped and its calls failed")
        heard = {c: len(call.received.frames) for c, call in webrtc.items() if c in kept}
        steps = {c: s["frames"] for w in WORKERS if w != KILLED for c, s in (await sessions(http, cluster, w)).items()}
        await asyncio.sleep(3)
        now = await in_progress(http, two)
        assert set(now) == set(kept) and all(now[c]["worker"] == kept[c]["worker"] for c in kept)  # they go on
        later = {c: s["frames"] for w in WORKERS if w != KILLED for c, s in (await sessions(http, cluster, w)).items()}
        assert all(later[c] > steps[c] for c in kept), "a call on a worker left running stopped stepping"
        assert all(len(webrtc[c].received.frames) > heard[c] for c in heard), "a WebRTC caller stopped hearing"

        # 16 new calls: only the two workers left serving take them, and are full with them.
        sipp += [await start_sipp(one, "u1", 4, "udp-late", pcap, folder / "sipp-3"),
                 await start_sipp(two, "t1", 4, "tcp-late", pcap, folder / "sipp-4")]
        late = await asyncio.gather(*(call_webrtc(cluster.planes[i % 2], cluster.operator, 20 + i) for i in range(8)))
        assert [status for _, status in late] == [201] * 8
        webrtc |= {call.session_url.rsplit("/", 1)[1]: call for call, _ in late}
        after = await wait_until(lambda: _calls_if(http, two, 24 - 6 + 16), 60, "34 calls in progress")
        new = {c: record for c, record in after.items() if c not in first}
        assert Counter(record["worker"] for record in new.values()) == {"w2": 8, "w3": 8}
        refused, status = await call_webrtc(one, cluster.operator, 99)
        assert status == 503  # full, though the drained worker has free slots
        await check_one_call_per_slot(http, cluster, one, [w for w in WORKERS if w != KILLED])
        assert all(len(webrtc[c].received.frames) > heard[c] for c in heard)

        # The end: WebRTC callers hang up; SIP calls are ended by the operator on the other control
        # plane than the one holding their dialog, which sends the caller a BYE.
        ending = [webrtc[c].hang_up() for c in after if c in webrtc]
        for call_id, record in after.items():
            if call_id not in webrtc:
                plane = two if record["caller"].startswith("udp") else one
                ending.append(http.delete(plane.url + f"/tenants/{TENANT}/calls/{call_id}"))
        await asyncio.gather(*ending)
        for call_id in killed & set(webrtc):
            await webrtc[call_id].close()
        outputs = await asyncio.gather(*(asyncio.wait_for(p.communicate(), 60) for p in sipp))
        for process, (output, _) in zip(sipp, outputs):
            assert process.returncode == 0, output.decode(errors="replace")[-3000:]
        await wait_until(lambda: _none_in_progress(http, one), 30, "every call ended")

        # Every call has its record; the lost worker's failed, none of the others did.
        everyone = set(first) | set(after)
        assert len(everyone) == 40
        for call_id in everyone:
            response = await wait_until(lambda call_id=call_id: _record(http, two, call_id), 30,
                                        f"the record of {call_id}")
            assert (response["outcome"] == "failed") == (call_id in killed), (call_id, response["outcome"],
                                                                              response["reason"])


async def _calls_if(http: httpx.AsyncClient, plane: Plane, count: int) -> dict[str, dict] | None:
    calls = await in_progress(http, plane)
    return calls if len(calls) == count and all(c["state"] == "active" for c in calls.values()) else None


async def _none_in_progress(http: httpx.AsyncClient, plane: Plane) -> bool:
    return not await in_progress(http, plane)


async def _gone(http: httpx.AsyncClient, plane: Plane, worker: str, calls: set[str]) -> bool:
    workers = {w["id"] for w in (await http.get(plane.url + "/workers")).json()}
    return worker not in workers and not calls & set(await in_progress(http, plane))


async def _record(http: httpx.AsyncClient, plane: Plane, call_id: str) -> dict | None:
    response = await http.get(plane.url + f"/tenants/{TENANT}/call-records/{call_id}")
    return response.json() if response.status_code == 200 else None
