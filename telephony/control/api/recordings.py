"""A finished call's recording (lines with `recording: true`): a stereo WAV, caller left, agent right."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from personas.store import TenantEntry
from telephony.control.api.deps import HistoryDep, TenantDep
from telephony.control.api.errors import UnknownCall
from telephony.events.call_history import CallHistory

router = APIRouter(prefix="/tenants/{tenant}/call-records/{call_id}/recording", tags=["recordings"])


async def _recording(history: CallHistory, entry: TenantEntry, call_id: str) -> Path:
    record = await history.records.get(entry.id, call_id)
    path = None
    if record is not None and record.recording is not None:
        path = await run_in_threadpool(history.recordings.find, entry.id, call_id)
    if path is None:
        raise UnknownCall(f"no recording of a finished call {call_id!r}")
    return path


@router.get("", response_class=FileResponse, responses={200: {"content": {"audio/wav": {}}}})
async def read_recording(call_id: str, entry: TenantDep, history: HistoryDep) -> FileResponse:
    path = await _recording(history, entry, call_id)
    return FileResponse(path, media_type="audio/wav", filename=f"{call_id}.wav")


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def delete_recording(call_id: str, entry: TenantDep, history: HistoryDep) -> Response:
    """Delete the recording now (it is deleted anyway at the end of its retention period)."""
    await _recording(history, entry, call_id)
    await run_in_threadpool(history.recordings.delete, entry.id, call_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
