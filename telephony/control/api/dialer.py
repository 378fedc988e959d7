"""The dialer: a page to call a line from a browser (plain HTML and a little JavaScript, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

PAGE = Path(__file__).parents[1] / "static" / "dialer.html"

router = APIRouter(tags=["webrtc"])


@router.get("/dialer", response_class=FileResponse, include_in_schema=False)
async def dialer() -> FileResponse:
    """Pick a line, call it, talk, read the live transcript and the call's state, hang up."""
    return FileResponse(PAGE, media_type="text/html")


@router.get("/", include_in_schema=False)
async def home() -> RedirectResponse:
    """Someone who opens the address `plexline serve` printed lands on the dialer."""
    return RedirectResponse("/dialer")
