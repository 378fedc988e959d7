"""The answers every operation may give besides its own, written into the OpenAPI document.

FastAPI documents what a route declares; the answers that come from the layers around the routes
(the bearer check, the limit on failed authentications, a name in the path that names nothing,
the server's body limit) are added here
to every operation they apply to, so the document lists every status a client can see.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

AUTHENTICATED = {
    "401": "no bearer token, or one that does not administer this tenant (another tenant's is the same)",
    "429": "too many failed authentications from this address (see Retry-After): nothing was checked",
}
IN_PATH = {"404": "nothing of that name in the path (the operator's token; for another tenant, a tenant's "
                   "token gets 401)"}
WITH_BODY = {"413": "the request body is larger than the server accepts (http_max_body_bytes, or the "
                    "route's own limit)"}


def document_common_answers(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            for route, path in schema["paths"].items():
                for method, operation in path.items():
                    answers = operation.setdefault("responses", {})
                    common = dict(AUTHENTICATED) if operation.get("security") else {}
                    if "{" in route:
                        common |= IN_PATH
                    if method in ("post", "put", "patch"):
                        common |= WITH_BODY
                    for status, description in common.items():
                        answers.setdefault(status, {"description": description})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
