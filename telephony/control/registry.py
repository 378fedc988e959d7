"""The registry of workers and calls that every control plane and worker shares.

Workers heartbeat with a time to live; a control plane reserves a slot for each call atomically
on the least loaded live worker that is not draining (fewest used slots for its size, then most
free slots, then the lowest id), within the limits of `NewCall` (the tenant's, its fair share when
the cluster is nearly full, the caller's source's). A worker whose heartbeat stops is reaped: it is
removed and its calls are failed with the reason.

Two implementations behave the same: `telephony.control.redis_registry.RedisRegistry` (any number of
control planes and workers, sharing nothing but Redis) and `telephony.control.memory_registry.MemoryRegistry`
(one process: `plexline serve` without Redis).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol

from agent.contracts.workers import Registration, WorkerInfo

CallState = Literal["reserved", "active", "ended", "failed"]
IN_PROGRESS: tuple[CallState, ...] = ("reserved", "active")
FINISHED_CALL_TTL = 3600.0  # seconds a finished call stays readable
RESERVATION_GRACE = 10.0  # seconds a worker has to take a reserved call before it counts as lost


class RegistryError(Exception):
    pass


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached: no call can be routed until it is back."""


class NoCapacity(RegistryError):
    """No live, undrained worker has a free slot (or every one left was excluded)."""


class TenantLimitReached(RegistryError):
    pass


class FairShareExceeded(RegistryError):
    """The cluster is nearly full and the caller's tenant holds its fair share or more (see `NewCall`)."""


class SourceLimitReached(RegistryError):
    """One source holds its limit of calls in progress, or has made its limit of attempts in the last minute.

    `repeat`: not the first refusal of this source's attempts in a minute (counted, not recorded, so
    that a flood cannot fill the call history)."""

    def __init__(self, message: str, retry_after: int | None = None, repeat: bool = False):
        super().__init__(message)
        self.retry_after = retry_after  # seconds until the source may try again, where known
        self.repeat = repeat


class DuplicateCall(RegistryError):
    pass


@dataclass(frozen=True)
class NewCall:
    """A call to reserve a slot for, and the limits it is admitted under, checked in one atomic step:

    - the tenant holds fewer than `tenant_limit` calls;
    - fair share: when no more than `reserve_percent` of the cluster's slots (rounded up) are free,
      the call is admitted only while its tenant holds fewer than its fair share, the cluster's slots
      divided by `tenants` (the tenants in the store). The cluster's slots are those of the serving
      workers and those still taken on draining ones (a tenant's calls there hold slots too). So one
      tenant's burst leaves the last slots to the others, while a tenant alone (`tenants` 1) may take
      every slot;
    - `source` (the address of a caller open to strangers, "" for one authenticated per call) holds
      fewer than `source_limit` calls.
    """

    call_id: str
    tenant: str
    line: str
    caller: str
    callee: str
    tenant_limit: int  # the tenant's maximum of concurrent calls
    tenants: int = 1
    reserve_percent: int = 0
    source: str = ""
    source_limit: int = 0

    def over_fair_share(self, held: int, slots: int, free: int) -> bool:
        """Whether the tenant, holding `held` calls, is refused when `free` of the cluster's `slots` are free."""
        reserve = -(-slots * self.reserve_percent // 100)
        return self.tenants > 1 and free <= reserve and held * self.tenants >= slots

    def fair_share_refusal(self, held: int, slots: int, free: int) -> FairShareExceeded:
        return FairShareExceeded(f"the cluster is nearly full ({free} of {slots} slots free) and tenant "
                                 f"{self.tenant} holds its fair share or more ({held} calls, {self.tenants} tenants)")

    def source_refusal(self) -> SourceLimitReached:
        return SourceLimitReached(f"{self.source} holds {self.source_limit} calls, the most one source may hold")


@dataclass(frozen=True)
class Attempt:
    """A call attempt from one source, admitted or refused by its sliding window (`Registry.admit_attempt`)."""

    admitted: bool
    retry_after: float = 0.0  # refused: seconds until the window's oldest attempt leaves it
    first_refusal: bool = False  # refused, and the source's first refusal in a window


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    tenant: str
    line: str
    worker: str
    state: CallState
    caller: str
    callee: str
    created_at: float  # seconds since the epoch
    ended_at: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class StoredDialog:
    """An answered SIP dialog as the registry keeps it: `dialog` names it (its Call-ID and our tag),
    `state` is what a BYE needs (`telephony.sip.dialog.Dialog.dumps`; the registry does not read it)."""

    dialog: str
    call_id: str
    state: str


@dataclass(frozen=True)
class WorkerStatus:
    info: WorkerInfo
    used: int
    draining: bool
    alive: bool

    @property
    def free(self) -> int:
        return max(self.info.slots - self.used, 0)


class Registry(Registration, Protocol):
    async def reserve(self, call: NewCall, exclude: Collection[str] = ()) -> WorkerInfo:
        """Hold a slot for `call` on the least loaded eligible worker not in `exclude`.

        Raises NoCapacity, TenantLimitReached, FairShareExceeded, SourceLimitReached or DuplicateCall.
        """

    async def admit_attempt(self, source: str, window: float, limit: int) -> Attempt:
        """Admit a call attempt from `source` if it made fewer than `limit` in the last `window` seconds,
        and count it there (a sliding window: each admitted attempt counts for `window` seconds, so
        no `window` seconds hold more than `limit`, whatever their start); a refused attempt is not
        counted (a flood does not keep its source out longer, nor grow what is kept of it)."""

    async def activate(self, call_id: str) -> bool:
        """The worker took the call; False if it is no longer reserved (reaped meanwhile)."""

    async def cancel(self, call_id: str) -> None:
        """Drop a reservation the worker refused, as if it had never been made."""

    async def call(self, call_id: str) -> CallRecord | None: ...

    async def calls(self, tenant: str | None = None) -> list[CallRecord]:
        """The calls in progress (reserved or active), of one tenant or of all."""

    async def workers(self) -> list[WorkerStatus]: ...

    async def reap(self) -> list[CallRecord]:
        """Remove the workers whose heartbeat expired; returns the calls failed with them."""

    async def put_dialog(self, dialog: StoredDialog, ttl: float) -> None:
        """Remember an answered SIP dialog for `ttl` s: another control plane can then end its call
        on the caller's BYE, and send the BYE itself, if the one that answered is gone."""

    async def update_dialog(self, dialog: str, state: str) -> bool:
        """A remembered dialog's new state (its time to live kept); False if it is no longer there."""

    async def take_dialog(self, dialog: str) -> StoredDialog | None:
        """Forget a remembered dialog and return it, atomically: of control planes taking the same
        one at once, exactly one gets it (that one hangs up)."""

    async def ended_dialogs(self) -> list[str]:
        """The remembered dialogs whose calls are no longer in progress (nobody has hung them up)."""

    async def ping(self) -> None:
        """Raises if the registry cannot be reached."""

    async def close(self) -> None: ...


def worker_lost_reason(worker_id: str) -> str:
    return f"worker {worker_id} lost: its heartbeat stopped"
