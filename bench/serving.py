"""`plexline serve` as an operator runs it, in a subprocess on a free loopback port (for benchmarks and tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import child

ROOT = Path(__file__).parents[1]
OPERATOR = "interop-operator-token"
WORKER_SECRET = "interop-worker-secret"
METRICS_TIMEOUT = 10.0  # seconds a GET /metrics may take: Prometheus's default scrape timeout


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    sip_port: int  # UDP and TCP

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {OPERATOR}"}

    @property
    def worker(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {WORKER_SECRET}"}

    def free_slots(self) -> int:
        return httpx.get(self.url + "/readyz").json()["free_slots"]

    def sessions(self) -> list[dict]:
        return httpx.get(self.url + "/worker/sessions", headers=self.worker).json()

    def call(self, tenant: str, call_id: str) -> dict:
        return httpx.get(f"{self.url}/tenants/{tenant}/calls/{call_id}", headers=self.operator).json()

    def rss_bytes(self) -> int:
        return self._status("VmRSS") * 1024

    def threads(self) -> int:
        return self._status("Threads")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def metrics(self) -> dict[str, float]:
        """Its /metrics, each sample by its name and labels as Prometheus writes them: `name{a="b"}`."""
        text = httpx.get(self.url + "/metrics", headers=self.operator, timeout=METRICS_TIMEOUT).text
        return {s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}" if s.labels else ""):
                s.value for family in text_string_to_metric_families(text) for s in family.samples}

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc/{self.process.pid}/status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(model: str, slots: int, folder: Path, personas: Path | None = None,
            stt: str | None = None, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> Iterator[Server]:
    """`env`: more PLEXLINE_* settings for the run; `prefix`: a command that runs it (and execs it)."""
    port = free_port()
    log = folder / "serve.log"
    env = os.environ | {"PYTHONPATH": str(ROOT), "PLEXLINE_OPERATOR_TOKEN": OPERATOR,
                        "PLEXLINE_WORKER_SECRET": WORKER_SECRET, "PLEXLINE_SHUTDOWN_GRACE": "0",
                        "PLEXLINE_REDIS_URL": "", "PLEXLINE_DATA_DIR": str(folder / "data"),
                        "OMP_NUM_THREADS": "1"  # tiny models: threads cost more than they give
                        } | (env or {})
    sip_port = free_port()
    args = ["serve", "--model", model, "--slots", str(slots), "--http-port", str(port), "--sip-port", str(sip_port)]
    if personas is not None:
        args += ["--personas", str(personas)]
    if stt is not None:
        args += ["--stt", stt]
    with child([*prefix, sys.executable, "-m", "plexline", "-v", *args], log, grace=15, cwd=ROOT,
               env=env) as process:
        server = Server(f"http://127.0.0.1:{port}", process, log, sip_port)
        _wait_until_up(server)
        yield server


def _wait_until_up(server: Server, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"plexline serve exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"plexline serve did not come up in {timeout} s:\n{server.log.read_text()}")
