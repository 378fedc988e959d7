"""The control plane's FastAPI app: admin API, call routing, health and metrics.

`create_app` takes the parts already built (see `plexline.cli` for the wiring of each command),
so tests and `plexline serve` can give it an in-memory registry and an in-process worker
(`plexline.embedded` adds that worker's own routes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from telephony.control import twiml
from telephony.control.api import (
    call_records,
    calls,
    dialer,
    docs,
    health,
    lines,
    recordings,
    tenants,
    voices,
    webhooks,
    whip,
    workers,
)
from telephony.control.api.errors import add_error_handlers
from telephony.control.api.openapi import document_common_answers
from telephony.control.console import pages as console
from telephony.control.control_plane import ControlPlane

DESCRIPTION = """\
Tenants administer the lines that answer their phone numbers and the persona on each; calls are
routed to GPU workers with a free slot. Authenticate with `Authorization: Bearer <token>`
(the AdminToken scheme): a tenant's admin token sees that tenant only (another tenant's paths answer
401, as a wrong token does); the operator token sees every tenant and the workers. A line's GET
answers an `ETag`; send it back as `If-Match` on PUT and a line changed meanwhile (through the API
or by hand) is refused with 412 and its current version.
"""


def create_app(control_plane: ControlPlane) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await control_plane.start()
        try:
            yield
        finally:
            await control_plane.stop()

    app = FastAPI(title="plexline control plane", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # served by `docs`, from the package's files
    app.state.control_plane = control_plane
    add_error_handlers(app, control_plane.settings.retry_after_seconds)
    document_common_answers(app)
    for module in (tenants, lines, voices, calls, call_records, recordings, webhooks, whip, dialer, twiml, workers,
                   health, docs, console):
        app.include_router(module.router)
    app.mount(docs.STATIC_URL, docs.static_files(), name="static")
    app.mount(console.PREFIX + "/static", console.static_files(), name="console-static")
    return app
