"""The released PersonaPlex files: downloaded from the Hugging Face Hub or found in a local folder.

`fetch_model_files("nvidia/personaplex-7b-v1")` downloads (or finds in the Hugging Face cache)
the four files the server needs; `fetch_model_files("local:/models/personaplex")` uses a folder
holding the same file names. Every failure becomes one `ModelFilesError` whose message is a
single line saying what to do.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import get_token, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

REPO_ID = "nvidia/personaplex-7b-v1"
LOCAL_PREFIX = "local:"

LM_FILE = "model.safetensors"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
VOICES_FILE = "voices.tgz"


class ModelFilesError(Exception):
    """The model files cannot be had: no token, no access, a file missing or damaged."""


@dataclass(frozen=True)
class ModelFiles:
    lm: Path  # LM weights (temporal and depth transformers)
    mimi: Path  # Mimi codec weights
    tokenizer: Path  # sentencepiece text tokenizer
    voices: Path  # voices.tgz: the released voice prompts

    @classmethod
    def in_folder(cls, folder: Path) -> ModelFiles:
        return cls(
            lm=folder / LM_FILE,
            mimi=folder / MIMI_FILE,
            tokenizer=folder / TOKENIZER_FILE,
            voices=folder / VOICES_FILE,
        )

    def paths(self) -> tuple[Path, Path, Path, Path]:
        return (self.lm, self.mimi, self.tokenizer, self.voices)


def fetch_model_files(
    source: str = REPO_ID,
    *,
    token: str | None = None,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
) -> ModelFiles:
    """Model files from `source`: a Hub repository id, or `local:DIR`.

    The Hub token is `token`, else HF_TOKEN, else the `hf auth login` token. Without any, files
    already in the Hugging Face cache are used and anything else is an error.
    """
    if source.startswith(LOCAL_PREFIX):
        files = local_model_files(Path(source.removeprefix(LOCAL_PREFIX)))
    else:
        files = download_model_files(source, token=token, cache_dir=cache_dir, endpoint=endpoint)
    check_safetensors(files.lm)
    check_safetensors(files.mimi)
    return files


def local_model_files(folder: Path) -> ModelFiles:
    if not folder.is_dir():
        raise ModelFilesError(f"{LOCAL_PREFIX}{folder}: no such folder")
    files = ModelFiles.in_folder(folder)
    missing = [path.name for path in files.paths() if not path.is_file()]
    if missing:
        raise ModelFilesError(f"{LOCAL_PREFIX}{folder}: missing {', '.join(missing)}")
    return files


def download_model_files(
    repo_id: str,
    *,
    token: str | None = None,
    cache_dir: Path | None = None,
    endpoint: str | None = None,
) -> ModelFiles:
    token = token or get_token()
    names = (LM_FILE, MIMI_FILE, TOKENIZER_FILE, VOICES_FILE)
    return ModelFiles(
        *(hub_file(repo_id, name, token=token, cache_dir=cache_dir, endpoint=endpoint,
                   local_files_only=token is None) for name in names)
    )


def hub_file(
    repo_id: str, filename: str, *, token: str | None, cache_dir: Path | None, endpoint: str | None,
    local_files_only: bool,
) -> Path:
    """One file of a Hub repository (from the cache if there), with huggingface_hub's progress bar;
    its failures become a `ModelFilesError`. `local_files_only`: only the cache is looked at."""
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            token=token,
            cache_dir=cache_dir,
            endpoint=endpoint,
            local_files_only=local_files_only,
        )
    except Exception as error:
        raise ModelFilesError(_explain(error, repo_id, filename, has_token=token is not None)) from error
    return Path(path)


def _explain(error: Exception, repo_id: str, filename: str, *, has_token: bool) -> str:
    """One line saying why huggingface_hub could not give `filename`, and what to do."""
    page = f"https://huggingface.co/{repo_id}"
    if isinstance(error, LocalEntryNotFoundError) and isinstance(error.__cause__, HfHubHTTPError):
        error = error.__cause__  # an HTTP refusal that huggingface_hub reported as "not cached"
    if isinstance(error, GatedRepoError):
        return (
            f"{repo_id} is gated and this token has no access: accept the license at {page} "
            "with the account that owns HF_TOKEN"
        )
    if isinstance(error, RepositoryNotFoundError):
        return f"{repo_id}: repository not found or token rejected (check HF_TOKEN and the license at {page})"
    if isinstance(error, LocalEntryNotFoundError):
        if not has_token:
            return (
                f"{filename} is not in the Hugging Face cache and no token is set: set HF_TOKEN "
                f"(and accept the license at {page})"
            )
        reason = _first_line(error.__cause__ or error)
        return f"{filename} is not in the Hugging Face cache and the Hub cannot be reached ({reason})"
    if isinstance(error, EntryNotFoundError):
        return f"{repo_id} has no file {filename}"
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        if status in (401, 403):
            return (
                f"{repo_id}: the Hub refused {filename} (HTTP {status}): "
                f"check HF_TOKEN and the license at {page}"
            )
        return f"{repo_id}: downloading {filename} failed (HTTP {status})"
    return f"{repo_id}: downloading {filename} failed: {type(error).__name__}: {_first_line(error)}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def check_safetensors(path: Path) -> None:
    """Raise if `path` is not a whole safetensors file, reading only its header.

    A safetensors file is an 8-byte little-endian header length, a JSON header giving each
    tensor's [begin, end) data offsets, then the data: the file must reach the largest end.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ModelFilesError(f"{path}: truncated ({size} bytes, not even a safetensors header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if 8 + header_len > size:
            raise ModelFilesError(f"{path}: truncated ({size} bytes, header says {8 + header_len})")
        try:
            header = json.loads(f.read(header_len))
            data_end = max(
                (entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"),
                default=0,
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise ModelFilesError(f"{path}: not a safetensors file ({error})") from error
    expected = 8 + header_len + data_end
    if size < expected:
        raise ModelFilesError(
            f"{path}: truncated ({size} of {expected} bytes): delete it and download it again"
        )
