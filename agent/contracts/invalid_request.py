"""The 422 that both HTTP apps (the control plane's and the worker's) answer to a request that fails
validation: FastAPI's problems, without the `input` it echoes (a request of a megabyte would get
one back), at most MAX_PROBLEMS of them with messages cut to MAX_MESSAGE characters."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_PROBLEMS = 20  # problems listed in one 422
MAX_MESSAGE = 200  # characters of each problem's message


def answer_invalid_requests_briefly(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"][:MAX_MESSAGE]} for e in error.errors()]
    return JSONResponse({"detail": detail[:MAX_PROBLEMS]}, status_code=422)
