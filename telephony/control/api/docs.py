"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc`, from files installed with the package.

FastAPI's own pages load their scripts from a CDN and are blank without internet; these load the same
libraries from `static/vendor/` (swagger-ui-dist and redoc from the npm registry, the bundle, its
stylesheet and their licences; `static/vendor/README.md` says which versions and how to update them).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parents[1] / "static"
STATIC_URL = "/static"

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """What `STATIC_URL` serves (mounted by the app)."""
    return StaticFiles(directory=STATIC)


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title=f"{request.app.title}: API",
                               swagger_js_url=f"{STATIC_URL}/vendor/swagger-ui/swagger-ui-bundle.js",
                               swagger_css_url=f"{STATIC_URL}/vendor/swagger-ui/swagger-ui.css",
                               swagger_favicon_url=f"{STATIC_URL}/favicon.png",
                               swagger_ui_parameters={"persistAuthorization": True})


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=request.app.openapi_url, title=f"{request.app.title}: API",
                          redoc_js_url=f"{STATIC_URL}/vendor/redoc/redoc.standalone.js",
                          redoc_favicon_url=f"{STATIC_URL}/favicon.png", with_google_fonts=False)
