"""The control plane's parts, and the background work it owns: reloading the tenant store, reaping
lost workers, refreshing the gauges, delivering webhooks, asking the workers to make an uploaded
voice ready, and starting and stopping what it was given
(its SIP server; in `plexline serve`, its own worker). The commands in `plexline.cli` build the parts
and pass them in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from agent.contracts.errors import describe
from agent.contracts.tasks import cancel_and_wait
from agent.contracts.workers import VoiceToPrepare
from personas.store import TenantStore
from personas.tenant import Webhook
from telephony.control.auth import Authenticator
from telephony.control.metrics import Metrics
from telephony.control.registry import CallRecord, Registry, RegistryUnavailable
from telephony.control.routing import Admission, CallRouter
from telephony.control.settings import Settings
from telephony.control.worker_client import WorkerClient
from telephony.events.call_history import CallHistory
from telephony.events.dispatcher import WebhookDispatcher, WebhookMetrics
from telephony.events.outbox import RetryPolicy
from telephony.events.webhook_client import WebhookClient
from telephony.sip.rate_limit import SourceLimiter

log = logging.getLogger(__name__)


class LocalWorker(Protocol):
    """`plexline serve`'s own worker (an `agent.worker.Worker`), started first and stopped last."""

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


class Service(Protocol):
    """A part with a life of its own (the SIP server): started after the worker, stopped first."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ControlPlane:
    def __init__(self, settings: Settings, store: TenantStore, registry: Registry, workers: WorkerClient, *,
                 router: CallRouter | None = None, history: CallHistory | None = None, sip: Service | None = None,
                 local_worker: LocalWorker | None = None):
        """`router` defaults to one over `registry` and `workers` (a SIP server given as `sip` must share
        the router it was built with); `history` holds call records, recordings and the webhook outbox."""
        if settings.operator_token is None:
            raise ValueError("the control plane needs an operator token")
        self.settings = settings
        self.store = store
        self.registry = registry
        self.workers = workers
        self.router = router or CallRouter(registry, workers, Metrics(), settings.route_attempts, refusals=history,
                                           admission=Admission.of(settings, store))
        self.metrics = self.router.metrics
        self.history = history
        self.sip = sip
        self.local_worker = local_worker
        self.auth = Authenticator(settings.operator_token.get_secret_value(),
                                  failures=SourceLimiter(settings.auth_failure_rate, settings.auth_failure_burst))
        self._tasks: list[asyncio.Task[None]] = []
        self._voice_tasks: set[asyncio.Task[None]] = set()  # workers being asked to make a voice ready
        self.webhooks: WebhookDispatcher | None = None  # delivers the outbox while the control plane runs
        self._reachable_since: float | None = None  # loop time since which the registry answers the monitor
        self._unreported: deque[CallRecord] = deque()  # lost calls whose call.ended is not in the outbox yet

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.history is not None:
            await self.history.recover()  # calls a crash cut off (embedded mode) get their call.ended first
        if self.local_worker is not None:
            await self.local_worker.start()
        if self.sip is not None:
            await self.sip.start()
        self._tasks = [loop.create_task(self.store.watch(self.settings.reload_interval), name="store-watch"),
                       loop.create_task(self._monitor_forever(), name="registry-monitor")]
        if self.history is not None:
            self.webhooks = self._dispatcher(self.history)
            self.webhooks.start()
            self._tasks.append(loop.create_task(self._sweep_forever(self.history), name="history-sweep"))

    async def stop(self) -> None:
        if self.sip is not None:  # first: its calls are hung up while their workers still run
            await self.sip.stop()
        await cancel_and_wait(*self._tasks, *self._voice_tasks)
        self._tasks = []
        if self.local_worker is not None:
            await self.local_worker.stop(grace=self.settings.shutdown_grace)
        if self.webhooks is not None:
            await self.webhooks.stop()
            await self.webhooks.client.close()
        if self.history is not None:
            await self.history.close()
        await self.workers.close()
        await self.registry.close()

    def prepare_voice(self, tenant_id: str, voice: str) -> None:
        """Ask every live worker, in the background, to make a tenant's voice ready (a recording just
        uploaded), so the first call with it does not wait while it is made. Best effort: a worker down,
        busy or draining is logged or skipped, and makes the voice at its first call instead."""
        task = asyncio.get_running_loop().create_task(self._prepare_voice(VoiceToPrepare(tenant=tenant_id, voice=voice)),
                                                      name=f"prepare-{voice}")
        self._voice_tasks.add(task)
        task.add_done_callback(self._voice_tasks.discard)

    async def _prepare_voice(self, voice: VoiceToPrepare) -> None:
        try:
            workers = [w.info for w in await self.registry.workers() if w.alive and not w.draining]
        except RegistryUnavailable as error:
            log.warning("no worker asked to prepare a voice", extra={"voice": voice.voice, "error": describe(error)})
            return
        asked = await asyncio.gather(*(self.workers.prepare_voice(w, voice) for w in workers), return_exceptions=True)
        for worker, error in zip(workers, asked):
            if isinstance(error, Exception):
                log.warning("a worker was not asked to prepare a voice", extra={
                    "worker": worker.id, "tenant": voice.tenant, "voice": voice.voice, "error": describe(error)})

    def _dispatcher(self, history: CallHistory) -> WebhookDispatcher:
        s = self.settings
        client = WebhookClient(s.webhook_timeout, s.webhook_max_response_bytes, s.webhook_per_endpoint)
        policy = RetryPolicy(s.webhook_retry_first, s.webhook_retry_cap, s.webhook_max_age)
        return WebhookDispatcher(history.outbox, self.webhook_of, client, policy, s.webhook_concurrency,
                                 WebhookMetrics(self.metrics.registry))

    def webhook_of(self, tenant_id: str) -> Webhook | None:
        entry = self.store.catalog.tenants.get(tenant_id)
        return entry.tenant.webhook if entry is not None else None

    async def monitor(self) -> None:
        """Reap lost workers (failing their calls), report the lost calls not reported yet, and
        refresh the gauges.

        No worker is reaped until a heartbeat's life after the registry could be reached (again, or
        first, when this control plane started): heartbeats missed while Redis was down or being
        restarted say nothing of the workers, and they beat again within that time.
        """
        now = asyncio.get_running_loop().time()
        self._reachable_since = self._reachable_since if self._reachable_since is not None else now
        if now - self._reachable_since >= self.settings.heartbeat_ttl:
            for call in await self.registry.reap():
                log.warning("call failed: its worker was lost", extra={"call": call.call_id, "tenant": call.tenant,
                                                                       "worker": call.worker, "reason": call.reason})
                self.metrics.calls_failed.labels(call.tenant).inc()
                self._unreported.append(call)
        await self._report_lost()
        self.metrics.observe(await self.registry.workers(), await self.registry.calls())

    async def _report_lost(self) -> None:
        """`call.ended` for each lost call, in the order they were reaped; one that cannot be reported
        now (the call history is unreachable) is tried again on the next pass."""
        if self.history is None:
            self._unreported.clear()
            return
        while self._unreported:
            call = self._unreported[0]
            entry = self.store.catalog.tenants.get(call.tenant)
            line = entry.lines.get(call.line) if entry is not None else None
            try:
                await self.history.publish_lost(call, line.persona if line is not None else None)
            except Exception as error:
                log.error("a lost call's end not reported yet", extra={"call": call.call_id, "error": describe(error)})
                return
            self._unreported.popleft()

    async def _sweep_forever(self, history: CallHistory) -> None:
        while True:
            try:
                await history.sweep()
            except Exception as error:
                log.warning("call history sweep failed", extra={"error": describe(error)})
            await asyncio.sleep(self.settings.retention_sweep_interval)

    async def _monitor_forever(self) -> None:
        while True:
            try:
                await self.monitor()
            except Exception as error:
                if isinstance(error, RegistryUnavailable):
                    self._reachable_since = None
                log.warning("registry monitor failed", extra={"error": describe(error)})
            await asyncio.sleep(self.settings.reap_interval)
