"""Placing a call: reserve a slot on the least loaded worker, have it start the session, retry on refusal.

A call that cannot be placed (no free slot, the tenant's limit, its fair share of a nearly full
cluster, its source's limits, the registry unreachable) is refused here, whatever its transport
(SIP, WHIP, a carrier's media stream, the admin API): the router counts it and records it once,
with its reason, through `refusals` (the call history), then raises for the transport to answer
(SIP 503 or 486, HTTP 503, or 429 for a source over its limits).

`Admission` says what is limited beyond each tenant's `max_concurrent_calls` (see `NewCall`):
the fair share, and per source the calls in progress and the attempts a minute. Only callers open
to strangers have a source (`Caller.source`: a WHIP offer's or POST /calls' client address). SIP
INVITEs and the carrier's signed media-stream webhook have none: each passed its tenant's trunk
check (source networks, digest, TLS client certificate, signature) and a trunk carries many callers
from one address; the tenant's limit and fair share bound them. Nor has the operator's token.
Attempts beyond the limit of any minute (a sliding window: no 60 s hold more) are refused without
a reservation, with Retry-After the seconds until the window's oldest attempt leaves it, and only
the first of them is recorded, so a flood cannot fill the call history.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from agent.contracts.calls import CallDetails
from agent.contracts.errors import describe
from personas.schema import Persona
from personas.store import Route, TenantStore
from telephony.control.metrics import Metrics
from telephony.control.registry import (
    CallRecord,
    FairShareExceeded,
    NewCall,
    NoCapacity,
    Registry,
    RegistryError,
    RegistryUnavailable,
    SourceLimitReached,
    TenantLimitReached,
)
from telephony.control.settings import Settings
from telephony.control.worker_client import WorkerClient, WorkerRefused

log = logging.getLogger(__name__)


ATTEMPT_WINDOW = 60.0  # seconds of a source's sliding window of call attempts
REFUSED = (NoCapacity, TenantLimitReached, FairShareExceeded, SourceLimitReached, RegistryUnavailable)


@dataclass(frozen=True)
class Caller:
    caller: str  # who calls (a number or SIP URI), as the transport gave it
    callee: str  # the address they called
    source: str = ""  # the client address of a caller open to strangers, limited per source


@dataclass(frozen=True)
class Admission:
    """The limits beyond each tenant's own (the module's docstring says which calls they bind)."""

    fair_share_reserve: int  # percent of the cluster's slots
    source_max_calls: int
    source_calls_per_minute: int
    tenants: Callable[[], int]  # how many tenants share the cluster

    @classmethod
    def of(cls, settings: Settings, store: TenantStore) -> Admission:
        return cls(settings.fair_share_reserve, settings.source_max_calls, settings.source_calls_per_minute,
                   lambda: max(len(store.catalog.tenants), 1))


class RefusedCalls(Protocol):
    """Where refused calls are recorded (`telephony.events.call_history.CallHistory`)."""

    async def publish_refused(self, call: NewCall, persona: Persona | None, reason: str) -> None: ...


class CallRouter:
    def __init__(self, registry: Registry, workers: WorkerClient, metrics: Metrics, attempts: int = 3,
                 refusals: RefusedCalls | None = None, admission: Admission | None = None):
        """Without `admission`, only the tenants' own limits hold (tests, benchmarks)."""
        self.registry = registry
        self.workers = workers
        self.metrics = metrics
        self.attempts = attempts
        self.refusals = refusals
        self.admission = admission

    async def place(self, route: Route, caller: Caller) -> CallRecord:
        """The active call's record; raises one of REFUSED (the caller is refused, and the refusal
        recorded)."""
        tenant = route.tenant
        new = self._new_call(route, caller)
        details = CallDetails(call_id=new.call_id, tenant=tenant.id, line=route.line_id, caller=caller.caller,
                              callee=caller.callee, persona=route.line.persona, greeting=route.line.greeting,
                              recording=route.line.recording, caller_transcript=route.line.caller_transcript,
                              max_call_seconds=route.max_call_seconds,
                              partial_transcript_seconds=route.line.partial_transcript_seconds,
                              transfer_phrases=tuple(route.line.transfer.phrases if route.line.transfer else ()),
                              hang_up_phrases=tuple(route.line.hang_up_phrases))
        start = time.perf_counter()
        try:
            await self._count_attempt(new)
            record = await self._place(new, details)
        except REFUSED as error:
            await self._refused(new, route, error)
            raise
        self.metrics.routing_seconds.observe(time.perf_counter() - start)
        self.metrics.calls_admitted.labels(tenant.id).inc()
        return record

    def _new_call(self, route: Route, caller: Caller) -> NewCall:
        tenant, limits = route.tenant, self.admission
        new = NewCall(uuid.uuid4().hex, tenant.id, route.line_id, caller.caller, caller.callee,
                      tenant.tenant.limits.max_concurrent_calls)
        if limits is None:
            return new
        return replace(new, tenants=limits.tenants(), reserve_percent=limits.fair_share_reserve,
                       source=caller.source, source_limit=limits.source_max_calls)

    async def _count_attempt(self, call: NewCall) -> None:
        """SourceLimitReached when the call's source made as many attempts in the last minute as it may."""
        if not call.source or self.admission is None:
            return
        allowed = self.admission.source_calls_per_minute
        attempt = await self.registry.admit_attempt(call.source, ATTEMPT_WINDOW, allowed)
        if not attempt.admitted:
            raise SourceLimitReached(f"{call.source} made more than {allowed} call attempts in a minute",
                                     retry_after=max(1, math.ceil(attempt.retry_after)),
                                     repeat=not attempt.first_refusal)

    async def _refused(self, call: NewCall, route: Route, error: RegistryError) -> None:
        if isinstance(error, TenantLimitReached):
            kind, reason = "tenant_limit", f"the tenant's limit of {call.tenant_limit} concurrent calls is reached"
        elif isinstance(error, NoCapacity):
            kind, reason = "no_capacity", f"no free slot: {error}"
        elif isinstance(error, FairShareExceeded):
            kind, reason = "fair_share", str(error)
        elif isinstance(error, SourceLimitReached):
            kind, reason = "source_limit", str(error)
        else:
            kind, reason = "registry_unavailable", f"the registry is unavailable: {error}"
        self.metrics.calls_refused.labels(call.tenant, kind).inc()
        if isinstance(error, SourceLimitReached) and error.repeat:
            return  # a flood: counted, neither logged nor recorded again
        log.info("call refused", extra={"call": call.call_id, "tenant": call.tenant, "line": call.line,
                                        "reason": reason})
        if self.refusals is None:
            return
        try:
            await self.refusals.publish_refused(call, route.line.persona, reason)
        except Exception as error:  # the caller is refused all the same
            log.error("a refused call was not recorded", extra={"call": call.call_id, "error": describe(error)})

    async def _place(self, new: NewCall, details: CallDetails) -> CallRecord:
        refused: list[str] = []
        for _ in range(self.attempts):
            worker = await self.registry.reserve(new, exclude=refused)
            try:
                await self.workers.create_session(worker, details)
            except WorkerRefused as error:
                log.warning("worker refused a call", extra={"call": new.call_id, "reason": str(error)})
                await self.registry.cancel(new.call_id)
                refused.append(worker.id)
                continue
            except BaseException:
                await self.registry.cancel(new.call_id)
                raise
            if await self.registry.activate(new.call_id):
                record = await self.registry.call(new.call_id)
                assert record is not None
                return record
            # The worker was reaped between the reservation and now, and the call failed with it.
            await self._end_on_worker(worker.id, new.call_id, "the worker was lost while the call started")
            raise NoCapacity(f"worker {worker.id} was lost while the call started")
        raise NoCapacity(f"{len(refused)} workers refused the call")

    async def end(self, record: CallRecord, reason: str) -> CallRecord:
        """End a call in progress: on its worker (if it can be reached), then in the registry."""
        await self._end_on_worker(record.worker, record.call_id, reason)
        await self.registry.release(record.call_id, "ended", reason)
        return await self.registry.call(record.call_id) or record

    async def _end_on_worker(self, worker_id: str, call_id: str, reason: str) -> None:
        worker = next((w.info for w in await self.registry.workers() if w.info.id == worker_id), None)
        if worker is None:
            return
        try:
            await self.workers.end_session(worker, call_id, reason)
        except WorkerRefused as error:  # its heartbeat will learn the call is gone and end it
            log.warning("could not end a call on its worker", extra={"call": call_id, "reason": str(error)})
