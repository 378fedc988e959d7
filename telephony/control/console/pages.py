"""The console's pages under /console and its static files under /console/static."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from personas.schema import AudioSampling, Persona, TextSampling
from personas.tenant import ID_PATTERN, Line
from personas.voice_files import RELEASED_VOICES

HERE = Path(__file__).parent
PREFIX = "/console"

router = APIRouter(prefix=PREFIX, include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")  # escapes what it renders into HTML


def static_files() -> StaticFiles:
    return StaticFiles(directory=HERE / "static")


def _bounds(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The field's limits as HTML input attributes (min, max, maxlength)."""
    attributes: dict[str, Any] = {}
    for rule in model.model_fields[name].metadata:
        if isinstance(rule, Ge | Gt):
            attributes["min"] = rule.ge if isinstance(rule, Ge) else rule.gt
        elif isinstance(rule, Le | Lt):
            attributes["max"] = rule.le if isinstance(rule, Le) else rule.lt
        elif isinstance(rule, MaxLen):
            attributes["maxlength"] = rule.max_length
    return attributes


FORM = {
    "role": _bounds(Persona, "role"),
    "text_temperature": _bounds(TextSampling, "temperature"),
    "text_top_k": _bounds(TextSampling, "top_k"),
    "audio_temperature": _bounds(AudioSampling, "temperature"),
    "audio_top_k": _bounds(AudioSampling, "top_k"),
    "max_call_seconds": _bounds(Line, "max_call_seconds"),
}


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"prefix": PREFIX, "page": template.removesuffix(".html"),
                                                          **context})


@router.get("", response_class=HTMLResponse)
def sign_in(request: Request) -> HTMLResponse:
    return _page(request, "signin.html", id_pattern=ID_PATTERN.pattern)


@router.get("/tenants", response_class=HTMLResponse)
def tenants(request: Request) -> HTMLResponse:
    return _page(request, "tenants.html")


@router.get("/tenants/{tenant}/lines", response_class=HTMLResponse)
def lines(request: Request, tenant: str) -> HTMLResponse:
    return _page(request, "lines.html", tenant=tenant, id_pattern=ID_PATTERN.pattern)


@router.get("/tenants/{tenant}/lines/{line}", response_class=HTMLResponse)
def line(request: Request, tenant: str, line: str) -> HTMLResponse:
    return _page(request, "line.html", tenant=tenant, line=line, form=FORM, released=sorted(RELEASED_VOICES))


@router.get("/tenants/{tenant}/voices", response_class=HTMLResponse)
def voices(request: Request, tenant: str) -> HTMLResponse:
    return _page(request, "voices.html", tenant=tenant)


@router.get("/tenants/{tenant}/calls", response_class=HTMLResponse)
def calls(request: Request, tenant: str) -> HTMLResponse:
    return _page(request, "calls.html", tenant=tenant)


@router.get("/tenants/{tenant}/calls/{call_id}", response_class=HTMLResponse)
def call(request: Request, tenant: str, call_id: str) -> HTMLResponse:
    return _page(request, "call.html", tenant=tenant, call_id=call_id)


@router.get("/tenants/{tenant}/webhooks", response_class=HTMLResponse)
def webhooks(request: Request, tenant: str) -> HTMLResponse:
    return _page(request, "webhooks.html", tenant=tenant)
