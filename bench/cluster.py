"""A plexline cluster on loopback whose processes can be faulted: Redis with its append-only file,
control planes and workers, each a child process that can be killed (SIGKILL), stopped (SIGSTOP),
continued and started again on the same ports, folder and log (the campaign's fault rows).

Heartbeats are short (a worker silent for `HEARTBEAT_TTL` seconds is reaped) so that a fault
shows within seconds; everything else is as deployed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import yaml

from bench.serving import free_port

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_TTL = 2.0
T = TypeVar("T")


@dataclass
class Child:
    """A process started from `command`, again and again, appending to `log`."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> None:
        """Asked to stop (continued first, if stopped); `wait` for it."""
        if self.running:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()

    def wait(self, timeout: float = 10) -> None:
        """Until it exits; killed after `timeout` seconds."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self) -> None:
        self.terminate()
        self.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Service:
    """A control plane or a worker: its child and its HTTP address (and a control plane's SIP port)."""

    child: Child
    url: str
    sip_port: int | None = None


async def wait_for(check: Callable[[], Awaitable[T]], timeout: float, what: str, every: float = 0.2) -> T:
    """`check()`'s first true answer; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)
    return result


def redis_child(folder: Path, port: int) -> Child:
    """redis-server on loopback `port` with its append-only file in `folder` (fsync every second, as
    deployed): started again, it has what it acknowledged before a SIGKILL."""
    return Child("redis", [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
                           "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder)],
                 os.environ.copy(), folder / "redis.log")


async def start_redis(redis: Child, port: int) -> None:
    redis.start()
    await wait_for(lambda: asyncio.to_thread(redis_answers, port), 20, "redis-server")


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Cluster:
    folder: Path
    tenant: str
    number: str  # the line's number
    operator: str
    worker_secret: str
    redis: Child
    redis_port: int
    planes: list[Service] = field(default_factory=list)
    workers: dict[str, Service] = field(default_factory=dict)

    @property
    def operator_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator}"}

    @property
    def worker_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.worker_secret}"}

    def children(self) -> list[Child]:
        return [*(w.child for w in self.workers.values()), *(p.child for p in self.planes), self.redis]

    def stop(self) -> None:
        """Every process terminated at once (Redis last), each killed if it takes longer than 10 s."""
        services = self.children()[:-1]
        for child in services:
            child.terminate()
        for child in services:
            child.wait()
        self.redis.stop()

    # -- starting ---------------------------------------------------------------------------------

    async def start_redis(self) -> None:
        await start_redis(self.redis, self.redis_port)

    async def up(self, service: Service, timeout: float = 120) -> None:
        """Until `service` answers /healthz (and a worker is registered and alive)."""
        async with httpx.AsyncClient(timeout=2) as http:
            async def healthy() -> bool:
                if not service.child.running:
                    raise RuntimeError(f"{service.child.name} exited:\n{service.child.tail()}")
                try:
                    return (await http.get(service.url + "/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(healthy, timeout, f"{service.child.name} up")
        if service in self.workers.values():
            name = service.child.name
            await wait_for(lambda: self._alive(name), 30, f"{name} registered")

    async def _alive(self, worker: str) -> bool:
        try:
            return (await self.registered()).get(worker, {}).get("alive", False)
        except httpx.HTTPError:  # no control plane answers yet
            return False

    # -- reading it --------------------------------------------------------------------------------

    async def get(self, url: str, headers: dict[str, str] | None = None) -> list | dict:
        async with httpx.AsyncClient(timeout=30, headers=headers or self.operator_headers) as http:
            response = await http.get(url)
        response.raise_for_status()
        return response.json()

    async def registered(self) -> dict[str, dict]:
        """The workers in the registry, by id, as a control plane answers (the first one up)."""
        return {w["id"]: w for w in await self.get(await self.plane_url() + "/workers")}

    async def in_progress(self) -> dict[str, dict]:
        return {c["call_id"]: c for c in await self.get(await self.plane_url() + "/calls")}

    async def sessions(self, worker: str) -> dict[str, dict]:
        """What the worker itself holds: call id -> session (slot, frames stepped)."""
        url = self.workers[worker].url + "/worker/sessions"
        return {s["call_id"]: s for s in await self.get(url, self.worker_headers)}

    async def record(self, call_id: str) -> dict | None:
        async with httpx.AsyncClient(timeout=30, headers=self.operator_headers) as http:
            response = await http.get(await self.plane_url() + f"/tenants/{self.tenant}/call-records/{call_id}")
        return response.json() if response.status_code == 200 else None

    async def end(self, call_id: str, plane: int = 0) -> None:
        async with httpx.AsyncClient(timeout=30, headers=self.operator_headers) as http:
            response = await http.delete(self.planes[plane].url + f"/tenants/{self.tenant}/calls/{call_id}")
        if response.status_code not in (404, 409):  # gone, or ended meanwhile
            response.raise_for_status()

    async def plane_url(self) -> str:
        """A control plane that is running (one may be down for a fault)."""
        for plane in self.planes:
            if plane.child.running:
                return plane.url
        raise RuntimeError("no control plane is running")


def write_tenant(root: Path, tenant: str, number: str, webhook: dict | None) -> Path:
    (root / tenant).mkdir(parents=True)
    entry = {"name": tenant, "addresses": [number], "sip": {"allow": ["127.0.0.0/8"]},
             "limits": {"max_concurrent_calls": 1000, "max_call_seconds": 3600}}
    if webhook is not None:
        entry["webhook"] = webhook
    line = {"answers": [number], "persona": {"role": "You answer the phone for a test company.", "voice": "NATF2"},
            "max_call_seconds": 3600}
    (root / tenant / "tenant.yaml").write_text(yaml.safe_dump(entry))
    (root / tenant / "support.yaml").write_text(yaml.safe_dump(line))
    return root


def plexline(*args: str) -> list[str]:
    return [sys.executable, "-m", "plexline", *args]


def build_cluster(folder: Path, workers: list[str], planes: int, slots: int, webhook: dict | None = None,
                  tenant: str = "faults", number: str = "+15550000100") -> Cluster:
    """The cluster's processes, not started: Redis (append-only file, fsync every second, as deployed),
    `planes` control planes and echo workers of `slots` slots each, all logging into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    redis_port = free_port()
    redis = redis_child(folder, redis_port)
    operator, worker_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    personas = write_tenant(folder / "tenants", tenant, number, webhook)
    env = os.environ | {
        "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
        "PLEXLINE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PLEXLINE_OPERATOR_TOKEN": operator,
        "PLEXLINE_WORKER_SECRET": worker_secret, "PLEXLINE_PERSONAS_DIR": str(personas),
        "PLEXLINE_VOICES_DIR": str(personas), "PLEXLINE_DATA_DIR": str(folder / "data"),
        "PLEXLINE_RECORDINGS_DIR": str(folder / "recordings"), "PLEXLINE_SHUTDOWN_GRACE": "0",
        "PLEXLINE_HEARTBEAT_TTL": str(HEARTBEAT_TTL), "PLEXLINE_REAP_INTERVAL": "0.5",
        "PLEXLINE_WORKER_TIMEOUT": "30", "PLEXLINE_RTP_TIMEOUT": "120",
        "PLEXLINE_WEBHOOK_RETRY_FIRST": "0.2", "PLEXLINE_WEBHOOK_RETRY_CAP": "1"}
    cluster = Cluster(folder, tenant, number, operator, worker_secret, redis, redis_port)
    for i, name in enumerate(workers):
        port = free_port()
        rtp = {"PLEXLINE_RTP_PORT_MIN": str(30000 + 1000 * i), "PLEXLINE_RTP_PORT_MAX": str(30999 + 1000 * i)}
        child = Child(name, plexline("worker", "--http-port", str(port), "--worker-id", name, "--model", "echo",
                                     "--slots", str(slots)), env | rtp, folder / f"{name}.log")
        cluster.workers[name] = Service(child, f"http://127.0.0.1:{port}")
    for i in range(planes):
        port, sip_port = free_port(), free_port()
        child = Child(f"plane{i}", plexline("control-plane", "--http-port", str(port), "--sip-port", str(sip_port)),
                      env, folder / f"plane{i}.log")
        cluster.planes.append(Service(child, f"http://127.0.0.1:{port}", sip_port))
    return cluster


async def start_cluster(cluster: Cluster) -> None:
    await cluster.start_redis()
    for service in [*cluster.workers.values(), *cluster.planes]:
        service.child.start()
    await asyncio.gather(*(cluster.up(service) for service in [*cluster.planes, *cluster.workers.values()]))
