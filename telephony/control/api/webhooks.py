"""Webhooks: the events' JSON schema, a tenant's deliveries (waiting, taken, and dead letters to replay),
and its secret."""

from __future__ import annotations

import base64
import secrets

from typing import Annotated

from fastapi import APIRouter, Query, status
from starlette.concurrency import run_in_threadpool

from agent.contracts.events import event_schema
from telephony.control.api.deps import ControlPlaneDep, HistoryDep, TenantDep
from telephony.control.api.errors import UnknownEvent
from telephony.control.api.models import (
    DeadLetterPublic,
    DeliveredPublic,
    DeliveryPublic,
    Replayed,
    WebhookSecret,
)

router = APIRouter(tags=["webhooks"])


@router.get("/webhooks/schema")
async def read_event_schema() -> dict:
    """The JSON schema of every event sent to tenants' webhooks (no token needed)."""
    return event_schema()


@router.get("/tenants/{tenant}/webhooks/deliveries", response_model=list[DeliveryPublic])
async def list_deliveries(entry: TenantDep, history: HistoryDep,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeliveryPublic]:
    """Events not delivered yet, oldest first, with their failed attempts (until they are dead letters)."""
    return [DeliveryPublic.of(u) for u in await history.outbox.undelivered(entry.id, limit)]


@router.get("/tenants/{tenant}/webhooks/delivered", response_model=list[DeliveredPublic])
async def list_delivered(entry: TenantDep, history: HistoryDep) -> list[DeliveredPublic]:
    """The last events the receiver took (up to 100, of the past hour), newest first."""
    return [DeliveredPublic.of(d) for d in await history.outbox.recently_delivered(entry.id)]


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


@router.post("/tenants/{tenant}/webhooks/secret", response_model=WebhookSecret,
             responses={409: {"description": "the tenant has no webhook"}})
async def rotate_webhook_secret(entry: TenantDep, control_plane: ControlPlaneDep) -> WebhookSecret:
    """A new signing secret, written to tenant.yaml and used from the next delivery on; shown only here.
    Events already signed with the old one (retries included) are signed anew when sent again."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    await run_in_threadpool(control_plane.store.rotate_webhook_secret, entry.id, secret)
    return WebhookSecret(secret=secret)
