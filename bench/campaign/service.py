"""`plexline serve` in this process, as the CLI composes it (control plane, SIP server, a worker with
its RTP legs, the call history in a data folder), so that a caller can read the legs' counters, the
registry and the outbox while it calls or attacks them: the campaign's rows, and the interop tests'
SIP service (tests/interop/sip_service.py, with tenants of its own).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import SecretStr

from agent.call_reporter import CallReporter
from agent.media.rtp_legs import RtpLegs
from agent.worker import Worker, WorkerModel, echo_model
from plexline.cli import _call_history, _control_plane
from plexline.embedded import LocalWorkerClient
from telephony.control.control_plane import ControlPlane
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.registry import Registry
from telephony.control.settings import Settings
from telephony.control.worker_client import HttpWorkerClient

LINE = "+15555550100"


def write_tenant(root: Path, webhook: dict | None = None, recording: bool = False) -> Path:
    """One tenant, acme, taking SIP from loopback; its line answers LINE with the echo persona."""
    (root / "acme").mkdir(parents=True)
    tenant = {"name": "Acme", "addresses": [LINE], "limits": {"max_concurrent_calls": 50},
              "sip": {"allow": ["127.0.0.0/8"]}}
    (root / "acme" / "tenant.yaml").write_text(yaml.safe_dump(tenant | ({"webhook": webhook} if webhook else {})))
    (root / "acme" / "support.yaml").write_text(yaml.safe_dump({
        "answers": [LINE], "recording": recording,
        "persona": {"role": "You answer the phone for Acme.", "voice": "NATF2"}}))
    return root


@dataclass
class Service:
    plane: ControlPlane
    worker: Worker
    legs: RtpLegs

    @property
    def registry(self) -> Registry:
        return self.plane.registry

    @property
    def sip_port(self) -> int:
        """UDP and TCP (TLS, where set, is on `plane.sip.transport.tls_port`)."""
        return self.plane.sip.port

    @property
    def sip(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """Whether, within `timeout` seconds, no call is left in the registry or on the worker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.worker.sessions and not await self.registry.calls():
                return True
            await asyncio.sleep(0.05)
        return False


@asynccontextmanager
async def serving(folder: Path, slots: int = 8, *, personas: Path | None = None, model: WorkerModel | None = None,
                  reporter: CallReporter | None = None, **settings: object) -> AsyncIterator[Service]:
    """The service on loopback, its SIP on a free port, its data under `folder`. `personas`: a
    tenants folder (default `write_tenant`'s); `model`: the worker's (default the echo engine with
    `slots` slots); `reporter`: where the worker sends the calls' events (default the call
    history); `settings` override the control plane's."""
    config = Settings(personas_dir=personas or write_tenant(folder / "tenants"), operator_token=SecretStr("o" * 32),
                      worker_secret=SecretStr("w" * 32), sip_port=0, shutdown_grace=0, data_dir=folder / "data",
                      **settings)
    registry = MemoryRegistry()
    history = _call_history(config)
    worker = Worker(model or echo_model(slots), worker_id="local", address="http://127.0.0.1:9", version="bench",
                    registry=registry, heartbeat_ttl=config.heartbeat_ttl, reporter=reporter or CallReporter(history),
                    recordings=config.recordings_folder, first_media_timeout=config.first_media_timeout)
    legs = RtpLegs("127.0.0.1", range(config.rtp_port_min, config.rtp_port_max + 1))
    workers = LocalWorkerClient(worker, HttpWorkerClient("w" * 32, 2.0), legs)
    plane = _control_plane(config, registry, workers, history, "127.0.0.1", local_worker=worker)
    await plane.start()
    try:
        yield Service(plane, worker, legs)
    finally:
        await plane.stop()
