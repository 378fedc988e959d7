"""Editing a line through the API as an admin does: voices checked at save, versions, comments kept."""

import struct
import time
import wave
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from plexline.embedded import create_embedded_app
from tests.telephony.control import test_admin_api as admin
from tests.telephony.control.test_admin_api import ACME, OPERATOR, bearer, make_control_plane

personas_dir = admin.personas_dir  # the same tenants, acme and globex

SUPPORT = "/tenants/acme/lines/support"


@pytest.fixture
def client(personas_dir: Path):
    plane = make_control_plane(personas_dir)
    with TestClient(create_embedded_app(plane, plane.local_worker)) as client:
        yield client


def a_wav(path: Path, frames: int = 2400) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(24000)
        f.writeframes(struct.pack(f"<{frames}h", *([1000, -1000] * (frames // 2))))
    return path


def with_voice(client: TestClient, voice: str) -> dict:
    persona = client.get(SUPPORT + "/persona", headers=bearer(ACME)).json()
    return persona | {"voice": voice}


@pytest.mark.parametrize("voice, reason", [
    ("does-not-exist.wav", "no file does-not-exist.wav in the tenant's voices/ folder"),
    ("broken.wav", "broken.wav is not a PCM WAV file"),
    ("empty.wav", "empty.wav holds no audio"),
    ("fake.pt", "fake.pt is not a voice prompt (a .pt file saved by torch)"),
    ("nul\x00.wav", "must not contain control characters"),
])
def test_a_voice_that_cannot_be_used_is_refused_at_save_naming_the_field(client, personas_dir, voice, reason):
    voices = personas_dir / "acme" / "voices"
    voices.mkdir()
    (voices / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot a wav")
    a_wav(voices / "empty.wav", frames=0)
    (voices / "fake.pt").write_text("not a zip")
    before = (personas_dir / "acme" / "support.yaml").read_bytes()

    answer = client.put(SUPPORT + "/persona", json=with_voice(client, voice), headers=bearer(ACME))

    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", "voice"]
    assert reason in problem["msg"]
    assert (personas_dir / "acme" / "support.yaml").read_bytes() == before


def test_a_voice_in_the_tenants_voices_folder_is_saved_and_a_line_names_its_field(client, personas_dir):
    a_wav(personas_dir / "acme" / "voices" / "maya.wav")
    line = client.get(SUPPORT, headers=bearer(ACME)).json()
    body = {k: v for k, v in line.items() if k not in ("id", "tenant")}

    saved = client.put(SUPPORT + "/persona", json=with_voice(client, "maya.wav"), headers=bearer(ACME))
    refused = client.put(SUPPORT, json=body | {"persona": body["persona"] | {"voice": "gone.wav"}},
                         headers=bearer(ACME))

    assert saved.status_code == 200 and saved.json()["voice"] == "maya.wav"
    assert refused.status_code == 422
    assert [p["loc"] for p in refused.json()["detail"]] == [["body", "persona", "voice"]]


def test_a_save_with_the_version_read_wins_and_a_stale_one_gets_412_and_the_current_version(client, personas_dir):
    first = client.get(SUPPORT + "/persona", headers=bearer(ACME))
    etag = first.headers["ETag"]

    mine = client.put(SUPPORT + "/persona", json=first.json() | {"voice": "NATM1"},
                      headers=bearer(ACME) | {"If-Match": etag})
    theirs = client.put(SUPPORT + "/persona", json=first.json() | {"voice": "VARF3"},
                        headers=bearer(ACME) | {"If-Match": etag})

    assert mine.status_code == 200 and mine.headers["ETag"] != etag
    assert theirs.status_code == 412
    assert theirs.json()["current"]["voice"] == "NATM1"
    assert theirs.headers["ETag"] == mine.headers["ETag"] == client.get(SUPPORT, headers=bearer(ACME)).headers["ETag"]
    assert "voice: NATM1" in (personas_dir / "acme" / "support.yaml").read_text()


def test_a_hand_edit_since_the_read_is_a_conflict_even_before_the_reload(client, personas_dir):
    read = client.get(SUPPORT, headers=bearer(ACME))
    path = personas_dir / "acme" / "support.yaml"
    path.write_text(path.read_text().replace("voice: NATF2", "voice: NATM3"))
    body = {k: v for k, v in read.json().items() if k not in ("id", "tenant")}

    answer = client.put(SUPPORT, json=body, headers=bearer(ACME) | {"If-Match": read.headers["ETag"]})

    assert answer.status_code == 412
    assert answer.json()["current"]["persona"]["voice"] == "NATM3"
    assert "voice: NATM3" in path.read_text()


def test_a_save_keeps_the_files_comments(client, personas_dir):
    path = personas_dir / "acme" / "support.yaml"
    comments = [line for line in path.read_text().splitlines() if line.lstrip().startswith("#")]
    persona = client.get(SUPPORT + "/persona", headers=bearer(ACME)).json()

    client.put(SUPPORT + "/persona", json=persona | {"role": persona["role"] + " Be brief."}, headers=bearer(ACME))

    text = path.read_text()
    assert [line for line in text.splitlines() if line.lstrip().startswith("#")] == comments
    assert "Be brief." in text and max(len(line) for line in text.splitlines()) <= 104
    assert client.get(SUPPORT + "/persona", headers=bearer(ACME)).json()["role"].endswith("specialist. Be brief.")


def test_a_line_file_with_a_duplicate_key_is_refused_and_the_tenant_says_why(client, personas_dir):
    path = personas_dir / "acme" / "support.yaml"
    path.write_text(path.read_text().replace("  voice: NATF2", "  voice: NATF2\n  voice: NATM1"))

    deadline = time.monotonic() + 5
    while not (problems := client.get("/tenants/acme", headers=bearer(ACME)).json()["problems"]):
        assert time.monotonic() < deadline, "the store never reported the file"
        time.sleep(0.05)

    assert "duplicate key 'voice' (first on line" in problems[0]
    assert "the last valid version stays in service" in problems[0]
    assert client.get(SUPPORT + "/persona", headers=bearer(ACME)).json()["voice"] == "NATF2"


def test_the_openapi_names_the_admin_token_apart_from_the_worker_secret(client):
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]

    assert set(schemes) == {"AdminToken", "WorkerSecret"}
    assert schemes["AdminToken"]["scheme"] == schemes["WorkerSecret"]["scheme"] == "bearer"
    assert "admin token" in schemes["AdminToken"]["description"]
    assert "worker secret" in schemes["WorkerSecret"]["description"]


def test_the_operator_edits_too(client):
    persona = client.get(SUPPORT + "/persona", headers=bearer(OPERATOR)).json()

    assert client.put(SUPPORT + "/persona", json=persona | {"voice": "VARM2"},
                      headers=bearer(OPERATOR)).json()["voice"] == "VARM2"


def test_a_line_sent_back_as_read_leaves_its_file_as_it_was(client, personas_dir):
    path = personas_dir / "acme" / "support.yaml"
    before = path.read_bytes()
    read = client.get(SUPPORT, headers=bearer(ACME))
    body = {k: v for k, v in read.json().items() if k not in ("id", "tenant")}  # every field, defaults too

    saved = client.put(SUPPORT, json=body, headers=bearer(ACME) | {"If-Match": read.headers["ETag"]})

    assert saved.status_code == 200 and saved.headers["ETag"] == read.headers["ETag"]
    assert path.read_bytes() == before


def test_a_new_line_holds_only_what_differs_from_the_defaults(client, personas_dir):
    line = {"id": "evening", "answers": ["+15555550101"], "greeting": "agent_first", "recording": False,
            "persona": {"role": "You work for Acme in the evening.", "voice": "NATF1",
                        "sampling": {"text": {"temperature": 0.7, "top_k": 25}}}}

    assert client.post("/tenants/acme/lines", json=line, headers=bearer(ACME)).status_code == 201
    assert (personas_dir / "acme" / "evening.yaml").read_text() == (
        "answers:\n  - '+15555550101'\npersona:\n  role: You work for Acme in the evening.\n  voice: NATF1\n")
