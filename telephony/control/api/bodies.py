"""Request bodies read with a limit: refused from Content-Length before a byte is read, else cut
off as soon as what arrived passes the limit (the server's own limit, `http_max_body_bytes`, is
larger; these are the routes that need far less)."""

from __future__ import annotations

from fastapi import HTTPException, Request, status


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The body, or 413 naming `what` (the offer, the form) when it is larger than `limit` bytes."""
    too_large = HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{what} is larger than {limit} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
