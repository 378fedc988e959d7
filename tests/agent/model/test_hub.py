"""The model files, from a local folder and from a Hub endpoint served on loopback.

The fake Hub answers as huggingface.co does (X-Repo-Commit, ETag, X-Error-Code headers), so
the real huggingface_hub client and its real exceptions run end to end without the network.
"""

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

from agent.model.hub import (
    LM_FILE,
    REPO_ID,
    TOKENIZER_FILE,
    VOICES_FILE,
    ModelFiles,
    ModelFilesError,
    check_safetensors,
    fetch_model_files,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(data[:keep])


def test_local_folder_gives_the_four_files(release_folder):
    files = fetch_model_files(f"local:{release_folder}")

    assert files == ModelFiles.in_folder(release_folder)
    assert files.lm.name == "model.safetensors"
    assert files.mimi.name == "tokenizer-e351c8d8-checkpoint125.safetensors"
    assert files.tokenizer.name == "tokenizer_spm_32k_3.model"
    assert files.voices.name == "voices.tgz"


def test_local_folder_missing_a_file(release_folder):
    (release_folder / TOKENIZER_FILE).unlink()
    (release_folder / VOICES_FILE).unlink()

    with pytest.raises(ModelFilesError) as error:
        fetch_model_files(f"local:{release_folder}")

    assert str(error.value) == f"local:{release_folder}: missing {TOKENIZER_FILE}, {VOICES_FILE}"


def test_local_folder_that_does_not_exist(tmp_path):
    with pytest.raises(ModelFilesError, match="no such folder"):
        fetch_model_files(f"local:{tmp_path / 'nowhere'}")


@pytest.mark.parametrize("keep", [0, 5, 100, -1])
def test_truncated_safetensors_is_an_error(release_folder, keep):
    lm = release_folder / LM_FILE
    truncate(lm, keep if keep >= 0 else lm.stat().st_size - 1)

    with pytest.raises(ModelFilesError, match=f"{LM_FILE}: truncated"):
        fetch_model_files(f"local:{release_folder}")


def test_whole_safetensors_passes_the_check(reference_dir):
    check_safetensors(reference_dir / "lm8.safetensors")
    check_safetensors(reference_dir / "mimi_golden.safetensors")


def test_safetensors_with_a_garbage_header_is_an_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((4).to_bytes(8, "little") + b"nope")

    with pytest.raises(ModelFilesError, match="not a safetensors file"):
        check_safetensors(bad)


class FakeHub:
    """Files of one repository; `refusal` makes every request answer with that status and headers."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.refusal: tuple[int, dict[str, str]] | None = None
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization

    def answer(self, method: str, path: str, authorization: str | None):
        self.requests.append((method, path, authorization))
        if self.refusal is not None:
            return self.refusal[0], self.refusal[1], b""
        prefix = f"/{REPO_ID}/resolve/main/"
        name = path.removeprefix(prefix)
        if not path.startswith(prefix) or name not in self.files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, b""
        body = self.files[name]
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
            "Content-Length": str(len(body)),
        }
        return 200, headers, body


@pytest.fixture
def hub(release_folder: Path) -> Iterator[tuple[FakeHub, str]]:
    fake = FakeHub({path.name: path.read_bytes() for path in release_folder.iterdir()})

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self._reply(with_body=False)

        def do_GET(self):
            self._reply(with_body=True)

        def _reply(self, with_body: bool):
            status, headers, body = fake.answer(self.command, self.path, self.headers.get("Authorization"))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", "0")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def download(endpoint: str, cache: Path, token: str | None = "hf_test") -> ModelFiles:
    return fetch_model_files(REPO_ID, token=token, cache_dir=cache, endpoint=endpoint)


def test_download_gives_the_four_files_with_their_bytes(hub, release_folder, tmp_path):
    fake, endpoint = hub

    files = download(endpoint, tmp_path / "cache")

    for path in files.paths():
        assert path.read_bytes() == (release_folder / path.name).read_bytes()
    assert all(auth == "Bearer hf_test" for _, _, auth in fake.requests)


def test_token_comes_from_hf_token(hub, tmp_path, monkeypatch):
    fake, endpoint = hub
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")

    download(endpoint, tmp_path / "cache", token=None)

    assert {auth for _, _, auth in fake.requests} == {"Bearer hf_from_env"}


def test_without_token_cached_files_are_used(hub, tmp_path):
    fake, endpoint = hub
    first = download(endpoint, tmp_path / "cache")
    fake.requests.clear()

    again = download(endpoint, tmp_path / "cache", token=None)

    assert again == first
    assert fake.requests == []


def test_without_token_and_cache_the_error_says_set_hf_token(hub, tmp_path):
    _, endpoint = hub

    with pytest.raises(ModelFilesError, match="no token is set: set HF_TOKEN"):
        download(endpoint, tmp_path / "cache", token=None)


REFUSALS = {
    "gated": (403, {"X-Error-Code": "GatedRepo"}, "is gated and this token has no access"),
    "gated-401": (401, {"X-Error-Code": "GatedRepo"}, "is gated and this token has no access"),
    "repo-not-found": (401, {"X-Error-Code": "RepoNotFound"}, "repository not found or token rejected"),
    "bad-token": (
        401,
        {"X-Error-Message": "Invalid credentials in Authorization header"},
        r"refused model.safetensors \(HTTP 401\)",
    ),
    "forbidden": (403, {}, r"refused model.safetensors \(HTTP 403\)"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_hub_refusals_are_one_line_errors(hub, tmp_path, case):
    fake, endpoint = hub
    status, headers, message = REFUSALS[case]
    fake.refusal = (status, headers)

    with pytest.raises(ModelFilesError, match=message) as error:
        download(endpoint, tmp_path / "cache")

    assert "\n" not in str(error.value)
    assert "https://huggingface.co/nvidia/personaplex-7b-v1" in str(error.value)


def test_file_absent_from_the_repository(hub, tmp_path):
    fake, endpoint = hub
    del fake.files[VOICES_FILE]

    with pytest.raises(ModelFilesError) as error:
        download(endpoint, tmp_path / "cache")

    assert str(error.value) == f"{REPO_ID} has no file {VOICES_FILE}"


def test_offline_without_the_files_in_cache(tmp_path, release_folder, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(ModelFilesError, match="not in the Hugging Face cache and the Hub cannot be reached"):
        download("http://127.0.0.1:9", tmp_path / "cache")


def test_truncated_download_is_an_error(hub, tmp_path):
    fake, endpoint = hub
    lm = fake.files[LM_FILE]
    fake.files[LM_FILE] = lm[: len(lm) // 2]

    with pytest.raises(ModelFilesError, match=f"{LM_FILE}: truncated"):
        download(endpoint, tmp_path / "cache")
