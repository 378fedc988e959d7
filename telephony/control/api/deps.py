"""Dependencies of the routes: the control plane, the caller's token, and what it may see.

A tenant token sees only its tenant: a request for another tenant is answered 401, exactly as for
a wrong token or a tenant that does not exist, so a token never learns whether another tenant
exists; within its tenant, a line that does not exist is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from personas.store import TenantEntry, UnknownTenant
from personas.tenant import ID_PATTERN
from telephony.control.control_plane import ControlPlane
from telephony.events.call_history import CallHistory

_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                     description="the operator token, or a tenant's admin token")


def get_control_plane(request: Request) -> ControlPlane:
    return request.app.state.control_plane


ControlPlaneDep = Annotated[ControlPlane, Depends(get_control_plane)]


def get_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    return credentials.credentials


TokenDep = Annotated[str, Depends(get_token)]


def require_operator(token: TokenDep, control_plane: ControlPlaneDep) -> None:
    if not control_plane.auth.is_operator(token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the operator token is required")


def source(request: Request) -> str:
    """The address failed authentications are counted against."""
    return request.client.host if request.client else ""


def call_source(request: Request, token: str, control_plane: ControlPlane) -> str:
    """The source a call placed over HTTP is limited by (`routing.Admission`): the client's address,
    or none for the operator."""
    return "" if control_plane.auth.is_operator(token) else source(request)


def get_tenant(tenant: Annotated[str, Path(pattern=ID_PATTERN.pattern)], token: TokenDep,
               control_plane: ControlPlaneDep, request: Request) -> TenantEntry:
    """The tenant named in the path, as of this request (sync: scrypt runs on a thread)."""
    entry = control_plane.store.catalog.tenants.get(tenant)
    if entry is None and control_plane.auth.is_operator(token):
        raise UnknownTenant(f"no tenant {tenant!r}")  # the operator may know which tenants exist
    if not control_plane.auth.may_administer(token, entry, source(request)):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"this token does not administer a tenant {tenant!r}",
                            headers={"WWW-Authenticate": "Bearer"})
    return entry


OperatorDep = Depends(require_operator)
TenantDep = Annotated[TenantEntry, Depends(get_tenant)]


def get_history(control_plane: ControlPlaneDep) -> CallHistory:
    if control_plane.history is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this control plane keeps no call history")
    return control_plane.history


HistoryDep = Annotated[CallHistory, Depends(get_history)]
