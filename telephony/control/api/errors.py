"""The errors of the domain, each mapped to one HTTP status in one place."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from agent.contracts.invalid_request import answer_invalid_requests_briefly
from personas.loader import PersonaError
from personas.store import InvalidLine, LineExists, UnknownLine, UnknownTenant, UnknownWebhook
from telephony.control.auth import TooManyFailures
from telephony.control.registry import (
    FairShareExceeded,
    NoCapacity,
    RegistryUnavailable,
    SourceLimitReached,
    TenantLimitReached,
)


class UnknownAddress(Exception):
    pass


class UnknownCall(Exception):
    pass


class CallFinished(Exception):
    pass


class UnknownEvent(Exception):
    pass


def add_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    def plain(code: int, headers: dict[str, str] | None = None, detail: str | None = None):
        async def handler(request: Request, error: Exception) -> JSONResponse:
            return JSONResponse({"detail": detail or str(error)}, status_code=code, headers=headers)
        return handler

    for error in (UnknownTenant, UnknownLine, UnknownAddress, UnknownCall, UnknownEvent):
        app.add_exception_handler(error, plain(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(LineExists, plain(status.HTTP_409_CONFLICT))
    app.add_exception_handler(UnknownWebhook, plain(status.HTTP_409_CONFLICT))
    app.add_exception_handler(PersonaError, plain(status.HTTP_409_CONFLICT))  # a file to fix by hand first
    app.add_exception_handler(CallFinished, plain(status.HTTP_409_CONFLICT))
    retry = {"Retry-After": str(retry_after_seconds)}
    app.add_exception_handler(NoCapacity, plain(status.HTTP_503_SERVICE_UNAVAILABLE, retry,
                                                 "no free slot on any worker: try again later"))
    app.add_exception_handler(TenantLimitReached, plain(status.HTTP_503_SERVICE_UNAVAILABLE, retry,
                                                        "the tenant's limit of concurrent calls is reached"))
    app.add_exception_handler(FairShareExceeded, plain(status.HTTP_503_SERVICE_UNAVAILABLE, retry,
                                                       "the cluster is nearly full and this tenant holds its "
                                                       "fair share of it: try again later"))
    app.add_exception_handler(RegistryUnavailable, plain(status.HTTP_503_SERVICE_UNAVAILABLE, retry))

    async def source_limited(request: Request, error: SourceLimitReached) -> JSONResponse:
        wait = error.retry_after or retry_after_seconds
        return JSONResponse({"detail": "too many calls from this address: try again later"}, status_code=429,
                            headers={"Retry-After": str(wait)})

    app.add_exception_handler(SourceLimitReached, source_limited)
    app.add_exception_handler(InvalidLine, _invalid_line)
    app.add_exception_handler(TooManyFailures, _too_many_failures)
    answer_invalid_requests_briefly(app)


async def _too_many_failures(request: Request, error: TooManyFailures) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=429, headers={"Retry-After": str(error.retry_after)})


async def _invalid_line(request: Request, error: InvalidLine) -> JSONResponse:
    """In the shape of FastAPI's own validation errors, so clients read both alike."""
    detail = [{"type": "value_error", "loc": ["body", *p.field], "msg": p.reason} for p in error.problems]
    return JSONResponse({"detail": detail}, status_code=422)
