"""`plexline serve` in the campaign's own process, as the CLI composes it (control plane, SIP server,
an echo worker with its RTP legs, the call history in a data folder), so a row can read the legs'
counters and the outbox while it attacks them.
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
from agent.worker import Worker, echo_model
from plexline.cli import _call_history, _control_plane
from plexline.embedded import LocalWorkerClient
from telephony.control.control_plane import ControlPlane
from telephony.control.memory_registry import MemoryRegistry
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
    def sip(self) -> tuple[str, int]:
        return ("127.0.0.1", self.plane.sip.port)

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.worker.sessions and not await self.plane.registry.calls():
                return True
            await asyncio.sleep(0.05)
        return False


@asynccontextmanager
async def serving(folder: Path, slots: int = 8, webhook: dict | None = None, recording: bool = False,
                  **settings: object) -> AsyncIterator[Service]:
    """The service on loopback, its SIP on a free port; `settings` override the control plane's."""
    config = Settings(personas_dir=write_tenant(folder / "tenants", webhook, recording),
                      operator_token=SecretStr("o" * 32), worker_secret=SecretStr("w" * 32), sip_port=0,
                      shutdown_grace=0, data_dir=folder / "data", **settings)
    registry = MemoryRegistry()
    history = _call_history(config)
    worker = Worker(echo_model(slots), worker_id="campaign", address="http://127.0.0.1:9", version="campaign",
                    registry=registry, reporter=CallReporter(history), recordings=config.recordings_folder,
                    first_media_timeout=config.first_media_timeout)
    legs = RtpLegs("127.0.0.1", range(config.rtp_port_min, config.rtp_port_max + 1))
    workers = LocalWorkerClient(worker, HttpWorkerClient("w" * 32, 2.0), legs)
    plane = _control_plane(config, registry, workers, history, "127.0.0.1", local_worker=worker)
    await plane.start()
    try:
        yield Service(plane, worker, legs)
    finally:
        await plane.stop()
