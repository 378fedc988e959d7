"""What a worker tells the registry about itself, and what it needs from the registry.

The registry itself (Redis or in memory) lives in `telephony.control.registry`; a worker only heartbeats,
drains, releases the calls it ends and deregisters, through the `Registration` protocol.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent.contracts.calls import CallOutcome
from personas.tenant import ID_PATTERN


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    address: str  # base URL of the worker's internal API, e.g. http://10.0.0.5:8081
    slots: int
    model: str
    version: str


@dataclass(frozen=True)
class HeartbeatReply:
    draining: bool  # the operator may drain a worker through the control plane
    orphans: tuple[str, ...]  # sessions the worker holds that the registry no longer does: end them


class Registration(Protocol):
    async def heartbeat(self, worker: WorkerInfo, ttl: float, sessions: Collection[str]) -> HeartbeatReply:
        """Register or refresh `worker` for `ttl` seconds; `sessions` are the call ids it holds.

        Reservations made for this worker that it does not hold after a short grace are failed
        (the control plane that made them is gone); sessions the registry does not know come back
        as orphans.
        """

    async def set_draining(self, worker_id: str, draining: bool) -> bool:
        """False if no such worker is registered."""

    async def release(self, call_id: str, outcome: CallOutcome, reason: str = "") -> bool:
        """Free the call's slot and record how it finished; False if it was not in progress."""

    async def deregister(self, worker_id: str, reason: str) -> None:
        """Remove the worker; calls it still had are failed with `reason`."""


class VoiceToPrepare(BaseModel):
    """A tenant's voice (what a persona's `voice` says, e.g. maya.wav) for a worker to make ready
    before a call needs it: the control plane asks when an admin uploads a recording."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(pattern=ID_PATTERN.pattern)  # a folder name: nothing outside the tenants' folder
    voice: str = Field(min_length=1, max_length=255)  # the catalog keeps it inside the tenant's voices


class ClockPublic(BaseModel):
    steps: int  # engine steps since the worker started
    overruns: int  # steps that ran past their 80 ms budget
    step_seconds: list[float]  # the latest steps' durations (whole frame), oldest first, up to 1000


class WorkerPublic(BaseModel):
    """A worker as the APIs show it: the worker's own `GET /worker` (with its clock) and the control
    plane's `GET /workers` (with whether its heartbeat is alive)."""

    id: str
    address: str
    model: str
    version: str
    slots: int
    used: int
    free: int
    draining: bool
    alive: bool = True
    clock: ClockPublic | None = None  # only from the worker itself
