"""A tenant's finished calls: each one's record, with its transcript, as its `call.ended` event had it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from agent.contracts.events import CallEndedData, Outcome
from telephony.control.api.deps import HistoryDep, TenantDep
from telephony.control.api.errors import UnknownCall
from telephony.control.api.models import CallRecordSummary
from telephony.events.call_records import CallQuery

router = APIRouter(prefix="/tenants/{tenant}/call-records", tags=["call records"])


@router.get("", response_model=list[CallRecordSummary])
async def list_call_records(entry: TenantDep, history: HistoryDep,
                            since: Annotated[datetime | None, Query(description="answered at or after")] = None,
                            until: Annotated[datetime | None, Query(description="answered before")] = None,
                            line: str | None = None, outcome: Outcome | None = None,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[CallRecordSummary]:
    """The tenant's finished calls, the most recently answered first (transcripts left out)."""
    records = await history.records.find(entry.id, CallQuery(since, until, line, outcome, limit))
    return [CallRecordSummary.of(r) for r in records]


@router.get("/{call_id}", response_model=CallEndedData, response_model_by_alias=True)
async def read_call_record(call_id: str, entry: TenantDep, history: HistoryDep) -> CallEndedData:
    """One finished call: who called, how it ended, its transcript, its recording's address."""
    record = await history.records.get(entry.id, call_id)
    if record is None:
        raise UnknownCall(f"no finished call {call_id!r}")
    return record
