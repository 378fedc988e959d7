"""What the API takes and gives, apart from what is stored (tenant.yaml keeps secrets it never shows).

A line is written as the same document as its YAML file (`personas.tenant.Line`): what a client
PUTs is what the file holds.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from agent.contracts.events import CallEndedData, Outcome
from agent.contracts.workers import WorkerPublic
from personas.store import TenantEntry
from personas.tenant import Limits, Line, check_id
from telephony.control.registry import CallRecord, CallState, WorkerStatus
from telephony.events.outbox import DeadLetter, Delivered, Undelivered


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


def worker_public(status: WorkerStatus) -> WorkerPublic:
    i = status.info
    return WorkerPublic(id=i.id, address=i.address, model=i.model, version=i.version, slots=i.slots,
                        used=status.used, free=status.free, draining=status.draining, alive=status.alive)


class WorkerUpdate(BaseModel):
    draining: bool


class CallRecordSummary(BaseModel):
    """A finished call without its transcript (GET the call's record for that)."""

    call_id: str
    line: str
    from_: str = Field(alias="from")
    to: str
    answered_at: datetime
    ended_at: datetime
    duration_seconds: float
    outcome: Outcome
    reason: str
    recorded: bool

    model_config = {"populate_by_name": True}

    @classmethod
    def of(cls, record: CallEndedData) -> CallRecordSummary:
        return cls(call_id=record.call_id, line=record.line, from_=record.from_, to=record.to,
                   answered_at=record.answered_at, ended_at=record.ended_at,
                   duration_seconds=record.duration_seconds, outcome=record.outcome, reason=record.reason,
                   recorded=record.recording is not None)


class DeadLetterPublic(BaseModel):
    event_id: str
    type: str
    call_id: str
    attempts: int
    error: str  # how the last attempt failed
    created_at: datetime
    died_at: datetime
    payload: dict  # the event, as it would be sent

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterPublic:
        e = letter.event
        return cls(event_id=e.id, type=e.type, call_id=e.key, attempts=letter.attempts, error=letter.error,
                   created_at=datetime.fromtimestamp(letter.created_at, timezone.utc),
                   died_at=datetime.fromtimestamp(letter.died_at, timezone.utc), payload=json.loads(e.body))


class DeliveryPublic(BaseModel):
    """An event still being delivered: its failed attempts so far and the next one's time."""

    event_id: str
    type: str
    call_id: str
    attempts: int
    error: str  # how the last attempt failed ("" before the first)
    created_at: datetime
    retry_at: datetime | None  # null: not failed yet (being sent, or waiting behind an earlier event of its call)

    @classmethod
    def of(cls, pending: Undelivered) -> DeliveryPublic:
        e = pending.event
        retry = datetime.fromtimestamp(pending.retry_at, timezone.utc) if pending.retry_at is not None else None
        return cls(event_id=e.id, type=e.type, call_id=e.key, attempts=pending.attempts, error=pending.error,
                   created_at=datetime.fromtimestamp(pending.created_at, timezone.utc), retry_at=retry)


class DeliveredPublic(BaseModel):
    """An event its receiver took: how many attempts it needed and what the receiver answered."""

    event_id: str
    type: str
    call_id: str
    attempts: int  # all of them, the one taken included
    status: int  # the receiver's answer, a 2xx
    delivered_at: datetime

    @classmethod
    def of(cls, done: Delivered) -> DeliveredPublic:
        return cls(event_id=done.event_id, type=done.type, call_id=done.key, attempts=done.attempts,
                   status=done.status, delivered_at=datetime.fromtimestamp(done.delivered_at, timezone.utc))


class Replayed(BaseModel):
    event_id: str


class WebhookSecret(BaseModel):
    secret: str  # whsec_...: give it to the receiver, which verifies the signatures with it
