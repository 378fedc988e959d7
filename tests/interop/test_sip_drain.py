"""A rolling restart of the control planes: two of them on one Redis with one echo worker, each its
own process, and sipp callers on both.

The one told to stop (SIGTERM) drains: a new INVITE to it gets 503 with Retry-After, a new call to
the other is answered, and its own call goes on until the caller hangs up, after which it exits by
itself, before its drain timeout. Then a control plane is killed (SIGKILL) with a call up: the
caller's BYE, sent to the other control plane, ends the call on the worker. And a call whose control
plane was killed, ended through another one's API, gets its BYE from one of the two left.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from sip_service import SippRun, run_sipp, speech, write_rtp_pcap, write_tenants

ROOT = Path(__file__).parents[2]
ACME = "+15555550100"
DRAIN_TIMEOUT = 30.0  # seconds; the calls here last 8 s at most

pytestmark = pytest.mark.anyio


def _scale_out():
    spec = importlib.util.spec_from_file_location("scale_out", ROOT / "scripts" / "scale_out.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


scale_out = _scale_out()


class Cluster:
    def __init__(self, stack: ExitStack, folder: Path):
        self.stack, self.folder = stack, folder
        redis_url = scale_out.start_redis(stack, "redis-server", folder, folder / "redis.log")
        self.worker_secret = secrets.token_urlsafe(24)
        self.env = os.environ | {
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PLEXLINE_REDIS_URL": redis_url,
            "PLEXLINE_OPERATOR_TOKEN": secrets.token_urlsafe(24), "PLEXLINE_WORKER_SECRET": self.worker_secret,
            "PLEXLINE_PERSONAS_DIR": str(write_tenants(folder / "tenants")), "PLEXLINE_DATA_DIR": str(folder / "data"),
            "PLEXLINE_HEARTBEAT_TTL": "2", "PLEXLINE_REAP_INTERVAL": "0.5", "PLEXLINE_RTP_TIMEOUT": "60",
            "PLEXLINE_SIP_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT), "PLEXLINE_RETRY_AFTER_SECONDS": "7"}
        self.redis_url = redis_url
        self.operator = {"Authorization": f"Bearer {self.env['PLEXLINE_OPERATOR_TOKEN']}"}
        self.worker = self._start("worker", ["worker", "--model", "echo", "--slots", "8", "--worker-id", "w1"])
        self.planes: dict[str, tuple[scale_out.Started, int]] = {}

    def _start(self, name: str, args: list[str], sip_port: int | None = None):
        port = scale_out.free_port()
        extra = ["--sip-port", str(sip_port)] if sip_port else []
        child = self.stack.enter_context(scale_out.process(scale_out.plexline(
            sys.executable, [*args, "--http-port", str(port), *extra]), self.folder / f"{name}.log", self.env))
        return scale_out.Started(name, f"http://127.0.0.1:{port}", child, self.folder / f"{name}.log", time.monotonic())

    def start_plane(self, name: str) -> int:
        sip_port = scale_out.free_port()
        self.planes[name] = (self._start(name, ["-v", "control-plane"], sip_port), sip_port)
        return sip_port

    def wait_up(self, *planes: str) -> None:
        scale_out.wait_until_up([self.worker, *(self.planes[name][0] for name in planes)], timeout=120)

    def child(self, name: str) -> subprocess.Popen:
        return self.planes[name][0].child

    async def sessions(self) -> list[str]:
        async with httpx.AsyncClient() as http:
            response = await http.get(self.worker.url + "/worker/sessions",
                                      headers={"Authorization": f"Bearer {self.worker_secret}"})
        response.raise_for_status()
        return [s["call_id"] for s in response.json()]

    async def answered(self) -> int:
        """How many answered dialogs are remembered in Redis (each once its 200 OK is sent)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            return await client.zcard("plexline:sip-dialogs")
        finally:
            await client.aclose()


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return result


def checked(run: SippRun) -> SippRun:
    run.check()
    return run


async def test_a_stopping_control_plane_drains_and_a_killed_ones_call_ends_by_bye_through_the_other(tmp_path):
    pcap = write_rtp_pcap(tmp_path / "speech.pcap", speech(2.0))
    talk = {"PCAP_FILE": pcap}
    with ExitStack() as stack:
        cluster = Cluster(stack, tmp_path)
        a, b = cluster.start_plane("a"), cluster.start_plane("b")
        cluster.wait_up("a", "b")

        # Calls on both; then A is told to stop while its call is up.
        on_a = asyncio.ensure_future(run_sipp(a, "uac_pcap.xml", tmp_path / "on-a", ACME,
                                              substitutions=talk | {"TALK_MS": 8000}))
        on_b = asyncio.ensure_future(run_sipp(b, "uac_pcap.xml", tmp_path / "on-b", ACME,
                                              substitutions=talk | {"TALK_MS": 8000}))
        await until(lambda: _two(cluster), 15, "a call on each control plane")
        stopped_at = time.monotonic()
        cluster.child("a").send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)

        refused = await run_sipp(a, "refused.xml", tmp_path / "new-on-a", ACME, substitutions={"STATUS": 503})
        checked(refused)  # the trunk is told to fail over
        checked(await run_sipp(b, "uac_pcap.xml", tmp_path / "new-on-b", ACME, substitutions=talk | {"TALK_MS": 1000}))
        assert cluster.child("a").poll() is None  # still holding its call
        checked(await on_a)  # neither dropped nor hung up: the caller ended it, through the draining plane
        checked(await on_b)
        returncode = await asyncio.to_thread(cluster.child("a").wait, DRAIN_TIMEOUT + 10)
        log = cluster.planes["a"][0].log.read_text()
        assert time.monotonic() - stopped_at < DRAIN_TIMEOUT, log[-3000:]  # it left once its call ended
        assert returncode in (0, -signal.SIGTERM) and "SIP draining" in log, log[-3000:]  # uvicorn re-raises it
        assert 'msg="hung up"' not in log, log[-3000:]  # it hung up nothing: the caller did
        await until(lambda: _none(cluster), 5, "the worker to end the calls")  # the BYEs are answered first

        # A replaced; B killed with a call up; its caller hangs up through A.
        a = cluster.start_plane("a2")
        cluster.wait_up("a2")
        orphan = asyncio.ensure_future(run_sipp(b, "bye_elsewhere.xml", tmp_path / "orphan", ACME,
                                                substitutions=talk | {"TALK_MS": 4000, "OTHER_PORT": a}))
        await until(cluster.answered, 15, "the call on B answered")
        cluster.child("b").send_signal(signal.SIGKILL)
        checked(await orphan)  # A answered its BYE with 200
        await until(lambda: _none(cluster), 5, "the worker to end the call")


async def test_a_killed_control_planes_call_ended_through_another_gets_its_bye_from_one_of_the_others(tmp_path):
    with ExitStack() as stack:
        cluster = Cluster(stack, tmp_path)
        a, b, _ = cluster.start_plane("a"), cluster.start_plane("b"), cluster.start_plane("c")
        cluster.wait_up("a", "b", "c")
        caller = asyncio.ensure_future(run_sipp(a, "wait_bye_elsewhere.xml", tmp_path / "caller", ACME,
                                                substitutions={"BYE_WAIT_MS": 30_000, "OTHER_PORT": b}))
        await until(cluster.answered, 15, "the call on A answered")
        [call_id] = await cluster.sessions()
        cluster.child("a").kill()
        await asyncio.to_thread(cluster.child("a").wait, 10)

        async with httpx.AsyncClient(headers=cluster.operator) as http:
            ended = await http.delete(f"{cluster.planes['b'][0].url}/tenants/acme/calls/{call_id}")
        ended_at = time.monotonic()
        assert ended.status_code == 204, ended.text
        checked(await caller)  # the BYE came, and its scenario ended
        print(f"BYE {time.monotonic() - ended_at:.1f} s after the call was ended through B")
        await until(lambda: _none(cluster), 5, "the worker to end the call")
        logs = [cluster.planes[name][0].log.read_text() for name in ("b", "c")]
        sent = [log.count('msg="hanging up a call another control plane answered"') for log in logs]
        assert sorted(sent) == [0, 1], logs  # one of them sent it


async def _two(cluster: Cluster) -> list[str] | None:
    sessions = await cluster.sessions()
    return sessions if len(sessions) == 2 else None


async def _none(cluster: Cluster) -> bool:
    return not await cluster.sessions()
