"""A tenant's voices: the released ones and the WAV recordings its admins upload, and the lines using each.

An uploaded WAV is kept in the tenant's `voices/` folder, where a persona names it (`maya.wav`). Each
worker makes it into a voice prompt (Mimi and the LM) and keeps that under the hash of the file's
bytes, so it is made once per worker and model: asked at the upload, in the background (a worker down
then makes it when a call first uses it). A released voice has no audio
to listen to: it ships as a voice prompt (`voices.tgz`), not as a recording.
"""

from __future__ import annotations

import pathlib
import re
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel

from personas.store import TenantEntry, write_bytes_atomically
from personas.voice_files import RELEASED_VOICES, wav_info  # telephony reads voices through personas
from telephony.control.api.deps import ControlPlaneDep, TenantDep
from telephony.control.control_plane import ControlPlane

router = APIRouter(prefix="/tenants/{tenant}/voices", tags=["voices"])

WAV = "audio/wav"
MAX_VOICE_BYTES = 16 * 1024 * 1024
MIN_SECONDS, MAX_SECONDS = 1.0, 120.0
MIN_RATE, MAX_RATE = 8_000, 48_000
VOICE_FILE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\.wav$")
VoiceFile = Annotated[str, Path(pattern=VOICE_FILE.pattern, description="e.g. maya.wav")]


class VoicePublic(BaseModel):
    name: str  # what a persona's `voice` says
    kind: Literal["released", "uploaded"]
    used_by: list[str]  # the tenant's lines whose persona speaks with it
    sample_url: str | None  # a recording to listen to (uploaded voices only)
    seconds: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    size_bytes: int | None = None


def _users(entry: TenantEntry, voice: str) -> list[str]:
    return sorted(line_id for line_id, line in entry.lines.items() if line.persona.voice == voice)


@router.get("", response_model=list[VoicePublic])
def list_voices(entry: TenantDep, control_plane: ControlPlaneDep) -> list[VoicePublic]:
    """The released voices, then the tenant's uploaded WAV files, each with the lines that use it."""
    voices = [VoicePublic(name=name, kind="released", used_by=_users(entry, name), sample_url=None)
              for name in sorted(RELEASED_VOICES)]
    folder = control_plane.store.voices_folder(entry.id)
    for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        if not VOICE_FILE.match(path.name):
            continue
        content = path.read_bytes()
        try:
            info = wav_info(content)
        except ValueError:
            continue
        voices.append(VoicePublic(name=path.name, kind="uploaded", used_by=_users(entry, path.name),
                                  sample_url=f"/tenants/{entry.id}/voices/{path.name}", seconds=round(info.seconds, 2),
                                  sample_rate=info.sample_rate, channels=info.channels, size_bytes=len(content)))
    return voices


async def _body(request: Request) -> bytes:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in (WAV, "audio/x-wav", "audio/wave"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"send the voice as {WAV}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_VOICE_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                f"a voice recording may be at most {MAX_VOICE_BYTES // (1024 * 1024)} MiB")
    return bytes(body)


def _check(content: bytes) -> None:
    try:
        info = wav_info(content)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"the file is {error}") from None
    if not MIN_RATE <= info.sample_rate <= MAX_RATE:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{info.sample_rate} Hz: the sample rate must be {MIN_RATE} to {MAX_RATE} Hz")
    if info.channels > 2 or info.sample_bits not in (16, 24, 32):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{info.channels} channels of {info.sample_bits}-bit samples: mono or stereo, "
                            "16, 24 or 32 bits")
    if not MIN_SECONDS <= info.seconds <= MAX_SECONDS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{info.seconds:.1f} s: a voice recording must last {MIN_SECONDS:g} to {MAX_SECONDS:g} s "
                            "(about 10 s of clear speech works best)")


@router.put("/{name}", response_model=VoicePublic,
            responses={413: {"description": "too large"}, 415: {"description": "not audio/wav"},
                       422: {"description": "not a usable WAV recording"}})
async def upload_voice(name: VoiceFile, request: Request, entry: TenantDep,
                       control_plane: ControlPlaneDep) -> VoicePublic:
    """Upload (or replace) a voice recording: the body is the WAV file. Lines using it take it at their next call."""
    content = await _body(request)
    _check(content)
    folder = control_plane.store.voices_folder(entry.id)
    folder.mkdir(exist_ok=True)
    write_bytes_atomically(folder / name, content)
    control_plane.prepare_voice(entry.id, name)
    info = wav_info(content)
    return VoicePublic(name=name, kind="uploaded", used_by=_users(entry, name),
                       sample_url=f"/tenants/{entry.id}/voices/{name}", seconds=round(info.seconds, 2),
                       sample_rate=info.sample_rate, channels=info.channels, size_bytes=len(content))


def _file(control_plane: ControlPlane, entry: TenantEntry, name: str) -> pathlib.Path:
    path = control_plane.store.voices_folder(entry.id) / name
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no voice {name!r}")
    return path


@router.get("/{name}", response_class=FileResponse, responses={200: {"content": {WAV: {}}}})
def read_voice(name: VoiceFile, entry: TenantDep, control_plane: ControlPlaneDep) -> FileResponse:
    """The uploaded recording, to listen to."""
    return FileResponse(_file(control_plane, entry, name), media_type=WAV)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses={409: {"description": "a line uses it"}})
def delete_voice(name: VoiceFile, entry: TenantDep, control_plane: ControlPlaneDep) -> Response:
    path = _file(control_plane, entry, name)
    if users := _users(entry, name):
        raise HTTPException(status.HTTP_409_CONFLICT, f"{name} is the voice of {', '.join(users)}")
    path.unlink()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
