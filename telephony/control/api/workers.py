from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from agent.contracts.workers import WorkerPublic
from telephony.control.api.deps import ControlPlaneDep, OperatorDep
from telephony.control.api.models import WorkerUpdate, worker_public

router = APIRouter(prefix="/workers", tags=["workers"], dependencies=[OperatorDep])


@router.get("", response_model=list[WorkerPublic])
async def list_workers(control_plane: ControlPlaneDep) -> list[WorkerPublic]:
    return [worker_public(w) for w in await control_plane.registry.workers()]


@router.patch("/{worker_id}", response_model=WorkerPublic)
async def update_worker(worker_id: str, body: WorkerUpdate, control_plane: ControlPlaneDep) -> WorkerPublic:
    """Drain a worker (no new calls; its calls finish) or put it back in service."""
    if not await control_plane.registry.set_draining(worker_id, body.draining):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no worker {worker_id!r}")
    updated = next((w for w in await control_plane.registry.workers() if w.info.id == worker_id), None)
    if updated is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no worker {worker_id!r}")
    return worker_public(updated)
