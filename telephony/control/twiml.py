"""The carrier's voice webhook for media-stream calls: a call to a line is answered with TwiML.

    POST /twilio/voice    (form: CallSid, From, To, ...; signed with X-Twilio-Signature)

The line is the one that answers `To`, of a tenant with `media_streams` set; the request must be
signed with that tenant's carrier token (HMAC-SHA1 of the URL and the sorted form fields, as
Twilio signs). The call is placed on a worker as any other, and the answer tells the carrier to
connect its media stream to that worker: `<Connect><Stream url="wss://worker/worker/streams/ID">`
with the stream's token as a parameter (see `agent.media.media_stream`). A call that cannot be
taken is rejected in TwiML (`<Reject reason="busy"/>`), as carriers expect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl
from xml.sax.saxutils import quoteattr

from fastapi import APIRouter, HTTPException, Request, Response, status

from agent.contracts.media import stream_token
from telephony.control.api.bodies import read_body
from telephony.control.api.deps import ControlPlaneDep
from telephony.control.routing import REFUSED, Caller

MAX_FORM_BYTES = 16 * 1024
TWIML = "application/xml"

router = APIRouter(tags=["media streams"])


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    payload = url + "".join(key + params[key] for key in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def stream_url(worker_address: str, call_id: str) -> str:
    base = worker_address.rstrip("/")
    base = "wss://" + base.removeprefix("https://") if base.startswith("https://") else "ws://" + base.removeprefix("http://")
    return f"{base}/worker/streams/{call_id}"


def _twiml(body: str) -> Response:
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>', media_type=TWIML)


@router.post("/twilio/voice", response_class=Response, responses={403: {"description": "bad or missing signature"}})
async def voice(request: Request, control_plane: ControlPlaneDep) -> Response:
    body = await read_body(request, MAX_FORM_BYTES, "the form")
    params = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    route = control_plane.store.catalog.route(params.get("To", ""))
    account = route.tenant.tenant.media_streams if route else None
    signature = request.headers.get("X-Twilio-Signature", "")
    expected = twilio_signature(account.auth_token, str(request.url), params) if account else ""
    if account is None or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the request is not signed for a line that takes media streams")
    try:
        record = await control_plane.router.place(route, Caller(params.get("From", ""), params.get("To", "")))
    except REFUSED:
        return _twiml('<Reject reason="busy"/>')
    worker = next((w.info for w in await control_plane.registry.workers() if w.info.id == record.worker), None)
    if worker is None:
        await control_plane.router.end(record, "its worker was lost before the stream connected")
        return _twiml('<Reject reason="busy"/>')
    secret = control_plane.settings.worker_secret.get_secret_value()
    url, token = stream_url(worker.address, record.call_id), stream_token(secret, record.call_id)
    return _twiml(f"<Connect><Stream url={quoteattr(url)}><Parameter name=\"token\" value={quoteattr(token)}/>"
                  f"</Stream></Connect>")
