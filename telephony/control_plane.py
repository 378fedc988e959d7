"""The control plane's parts, and the background work it owns: reloading the tenant store, reaping
lost workers, refreshing the gauges, and (in `plexline serve`) running its own worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from personas.store import TenantStore
from telephony.auth import Authenticator
from telephony.metrics import Metrics
from telephony.registry import Registry
from telephony.routing import CallRouter
from telephony.settings import Settings
from telephony.worker_client import WorkerClient

if TYPE_CHECKING:
    from agent.worker import Worker
    from telephony.sip_server import SipServer

log = logging.getLogger(__name__)


class ControlPlane:
    def __init__(self, settings: Settings, store: TenantStore, registry: Registry, workers: WorkerClient,
                 local_worker: Worker | None = None):
        if settings.operator_token is None:
            raise ValueError("the control plane needs an operator token")
        self.settings = settings
        self.store = store
        self.registry = registry
        self.workers = workers
        self.local_worker = local_worker
        self.metrics = Metrics()
        self.auth = Authenticator(settings.operator_token.get_secret_value())
        self.router = CallRouter(registry, workers, self.metrics, settings.route_attempts)
        self._tasks: list[asyncio.Task[None]] = []
        self.sip: SipServer | None = None  # set by `plexline serve` and `control-plane` (see sip_server)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.local_worker is not None:
            await self.local_worker.start()
        if self.sip is not None:
            await self.sip.start()
        self._tasks = [loop.create_task(self.store.watch(self.settings.reload_interval), name="store-watch"),
                       loop.create_task(self._monitor_forever(), name="registry-monitor")]

    async def stop(self) -> None:
        if self.sip is not None:  # first: its calls are hung up while their workers still run
            await self.sip.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        if self.local_worker is not None:
            await self.local_worker.stop(grace=self.settings.shutdown_grace)
        await self.workers.close()
        await self.registry.close()

    async def monitor(self) -> None:
        """Reap lost workers (failing their calls) and refresh the gauges."""
        for call in await self.registry.reap():
            log.warning("call failed: its worker was lost", extra={"call": call.call_id, "tenant": call.tenant,
                                                                   "worker": call.worker, "reason": call.reason})
            self.metrics.calls_failed.labels(call.tenant).inc()
        self.metrics.observe(await self.registry.workers(), await self.registry.calls())

    async def _monitor_forever(self) -> None:
        while True:
            try:
                await self.monitor()
            except Exception as error:
                log.warning("registry monitor failed", extra={"error": repr(error)})
            await asyncio.sleep(self.settings.reap_interval)
