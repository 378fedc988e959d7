from __future__ import annotations

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST

from telephony.control.api.deps import ControlPlaneDep, OperatorDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the registry cannot be reached"}})
async def readyz(response: Response, control_plane: ControlPlaneDep) -> dict[str, object]:
    """Calls can be routed: the registry answers. Reports the live workers and their free slots."""
    try:
        await control_plane.registry.ping()
        workers = [w for w in await control_plane.registry.workers() if w.alive]
    except Exception as error:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"ready": False, "reason": f"registry unreachable: {error!r}"}
    return {"ready": True, "workers": len(workers), "free_slots": sum(w.free for w in workers if not w.draining)}


@router.get("/metrics", dependencies=[OperatorDep], response_class=Response)
async def metrics(control_plane: ControlPlaneDep) -> Response:
    """Prometheus metrics (operator token: tenant names are labels)."""
    return Response(control_plane.metrics.render(), media_type=CONTENT_TYPE_LATEST)
