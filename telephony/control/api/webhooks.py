"""Webhooks: the events' JSON schema, and a tenant's dead letters (events given up on) to replay."""

from __future__ import annotations

from fastapi import APIRouter, status

from agent.contracts.events import event_schema
from telephony.control.api.deps import HistoryDep, TenantDep
from telephony.control.api.errors import UnknownEvent
from telephony.control.api.models import DeadLetterPublic, Replayed

router = APIRouter(tags=["webhooks"])


@router.get("/webhooks/schema")
async def read_event_schema() -> dict:
    """The JSON schema of every event sent to tenants' webhooks (no token needed)."""
    return event_schema()


@router.get("/tenants/{tenant}/webhooks/dead-letters", response_model=list[DeadLetterPublic])
async def list_dead_letters(entry: TenantDep, history: HistoryDep) -> list[DeadLetterPublic]:
    """Events whose delivery failed for the whole retry period (or was answered 410 Gone)."""
    return [DeadLetterPublic.of(d) for d in await history.outbox.dead_letters(entry.id)]


@router.post("/tenants/{tenant}/webhooks/dead-letters/{event_id}/replay", status_code=status.HTTP_202_ACCEPTED,
             response_model=Replayed)
async def replay_dead_letter(event_id: str, entry: TenantDep, history: HistoryDep) -> Replayed:
    """Deliver a dead letter again, with a fresh retry period; its id is unchanged."""
    if not await history.outbox.replay(entry.id, event_id):
        raise UnknownEvent(f"no dead letter {event_id!r}")
    return Replayed(event_id=event_id)
