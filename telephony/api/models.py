"""What the API takes and gives, apart from what is stored (tenant.yaml keeps secrets it never shows).

A line is written as the same document as its YAML file (`personas.tenant.Line`): what a client
PUTs is what the file holds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from personas.store import TenantEntry
from personas.tenant import Limits, Line, check_id
from telephony.registry import CallRecord, CallState, WorkerStatus


class TenantPublic(BaseModel):
    id: str
    name: str
    addresses: list[str]
    limits: Limits
    webhook_url: str | None
    lines: list[str]
    problems: list[str]  # files of this tenant that failed to load, and why

    @classmethod
    def of(cls, entry: TenantEntry, problems: tuple[str, ...]) -> TenantPublic:
        t = entry.tenant
        return cls(id=entry.id, name=t.name, addresses=list(t.addresses), limits=t.limits,
                   webhook_url=str(t.webhook.url) if t.webhook else None, lines=sorted(entry.lines),
                   problems=list(problems))


class LinePublic(Line):
    id: str
    tenant: str

    @classmethod
    def of(cls, tenant_id: str, line_id: str, line: Line) -> LinePublic:
        return cls(id=line_id, tenant=tenant_id, **dict(line))


def _line_id(value: str) -> str:
    return check_id(value, "line id")


class LineCreate(Line):
    id: Annotated[str, AfterValidator(_line_id)]


class LineValidation(BaseModel):
    valid: bool = True
    line: LinePublic


class CallRequest(BaseModel):
    to: str = Field(description="the address called: a line's number or SIP user")
    from_: str = Field("", alias="from", description="the caller")


class CallPublic(BaseModel):
    call_id: str
    tenant: str
    line: str
    worker: str
    state: CallState
    caller: str
    callee: str
    created_at: float
    ended_at: float | None
    reason: str

    @classmethod
    def of(cls, record: CallRecord) -> CallPublic:
        return cls(**vars(record))


class WorkerPublic(BaseModel):
    id: str
    address: str
    model: str
    version: str
    slots: int
    used: int
    free: int
    draining: bool
    alive: bool

    @classmethod
    def of(cls, status: WorkerStatus) -> WorkerPublic:
        i = status.info
        return cls(id=i.id, address=i.address, model=i.model, version=i.version, slots=i.slots,
                   used=status.used, free=status.free, draining=status.draining, alive=status.alive)


class WorkerUpdate(BaseModel):
    draining: bool
