"""A tenant's voices through the API: upload a WAV (checked), list with the lines using each, listen, delete."""

import io
import struct
import wave
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.telephony.control import test_admin_api as admin
from tests.telephony.control.test_admin_api import ACME, GLOBEX, bearer

personas_dir = admin.personas_dir
VOICES = "/tenants/acme/voices"


@pytest.fixture
def client(personas_dir: Path):
    with TestClient(admin.create_app(admin.make_control_plane(personas_dir))) as client:
        yield client


def wav(seconds: float = 2.0, rate: int = 24000, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(channels), f.setsampwidth(width), f.setframerate(rate)
        frames = int(seconds * rate)
        f.writeframes(struct.pack(f"<{frames * channels}h", *([800, -800] * (frames * channels // 2))) if width == 2
                      else bytes(frames * channels * width))
    return out.getvalue()


def upload(client: TestClient, name: str, content: bytes, token: str = ACME, kind: str = "audio/wav"):
    return client.put(f"{VOICES}/{name}", content=content, headers=bearer(token) | {"Content-Type": kind})


def test_an_uploaded_wav_is_listed_played_back_and_usable_by_a_line(client, personas_dir):
    content = wav()

    saved = upload(client, "maya.wav", content)
    persona = client.get("/tenants/acme/lines/support/persona", headers=bearer(ACME)).json()
    used = client.put("/tenants/acme/lines/support/persona", json=persona | {"voice": "maya.wav"}, headers=bearer(ACME))
    voices = {v["name"]: v for v in client.get(VOICES, headers=bearer(ACME)).json()}

    assert saved.status_code == 200 and saved.json()["seconds"] == 2.0
    assert used.status_code == 200
    assert (personas_dir / "acme" / "voices" / "maya.wav").read_bytes() == content
    assert voices["maya.wav"]["used_by"] == ["support"] and voices["NATF2"]["used_by"] == []
    assert voices["NATF2"]["kind"] == "released" and voices["NATF2"]["sample_url"] is None
    assert client.get(voices["maya.wav"]["sample_url"], headers=bearer(ACME)).content == content
    assert client.delete(f"{VOICES}/maya.wav", headers=bearer(ACME)).status_code == 409


@pytest.mark.parametrize("content, kind, status, says", [
    (b"RIFF....WAVEjunk", "audio/wav", 422, "not a PCM WAV file"),
    (wav(seconds=0.5), "audio/wav", 422, "must last 1 to 120 s"),
    (wav(rate=4000), "audio/wav", 422, "the sample rate must be 8000 to 48000 Hz"),
    (wav(channels=3), "audio/wav", 422, "mono or stereo"),
    (wav(), "application/octet-stream", 415, "send the voice as audio/wav"),
    (b"\0" * (16 * 1024 * 1024 + 1), "audio/wav", 413, "at most 16 MiB"),
])
def test_a_recording_that_is_not_a_usable_wav_is_refused(client, personas_dir, content, kind, status, says):
    answer = upload(client, "bad.wav", content, kind=kind)

    assert answer.status_code == status
    assert says in answer.json()["detail"]
    assert not (personas_dir / "acme" / "voices" / "bad.wav").exists()


def test_a_voice_name_must_be_a_plain_wav_file_name(client):
    assert upload(client, "..%2Fglobex%2Fx.wav", wav()).status_code in (404, 422)
    assert upload(client, "Maya.WAV", wav()).status_code == 422


def test_another_tenants_voices_are_out_of_reach(client, personas_dir):
    upload(client, "maya.wav", wav())

    assert client.get(VOICES, headers=bearer(GLOBEX)).status_code == 401
    assert client.get(f"{VOICES}/maya.wav", headers=bearer(GLOBEX)).status_code == 401
    assert upload(client, "maya.wav", wav(seconds=3), token=GLOBEX).status_code == 401
    assert [v["name"] for v in client.get("/tenants/globex/voices", headers=bearer(GLOBEX)).json()
            if v["kind"] == "uploaded"] == []
