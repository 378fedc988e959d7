from __future__ import annotations

from fastapi import APIRouter

from telephony.control.api.deps import ControlPlaneDep, OperatorDep, TenantDep
from telephony.control.api.models import TenantPublic

router = APIRouter(tags=["tenants"])


@router.get("/tenants", response_model=list[TenantPublic], dependencies=[OperatorDep])
def list_tenants(control_plane: ControlPlaneDep) -> list[TenantPublic]:
    """Every tenant (operator only)."""
    catalog = control_plane.store.catalog
    return [TenantPublic.of(e, catalog.problems.get(e.id, ())) for e in catalog.tenants.values()]


@router.get("/tenants/{tenant}", response_model=TenantPublic)
def read_tenant(entry: TenantDep, control_plane: ControlPlaneDep) -> TenantPublic:
    """The tenant, its lines, and the problems of its files (those that failed to load, and why)."""
    return TenantPublic.of(entry, control_plane.store.catalog.problems.get(entry.id, ()))


@router.get("/problems", response_model=list[str], dependencies=[OperatorDep])
def list_problems(control_plane: ControlPlaneDep) -> list[str]:
    """Every file of the tenant folder that failed to load, and why (operator only)."""
    problems = control_plane.store.catalog.problems
    return [p for key in sorted(problems) for p in problems[key]]
